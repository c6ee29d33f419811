"""The JSON documents the upstreams serve: a ~1 KB pitch and a ~50 KB page of pitches.

Deterministic (no clock, no randomness) so two runs measure the same bytes. The mismatch
variant changes a few fields, the way a real port gets a number, a flag and a date wrong.
"""

from __future__ import annotations

from typing import Any

import orjson

BODY_KINDS = ("1k", "50k")
PATHS = {"1k": "/api/pitches/1k.json", "50k": "/api/pitches/50k.json"}

_GENRES = ("drama", "comedy", "thriller", "sci-fi", "documentary", "animation")
_TITLES = ("Silent Harbor", "Last Frontier", "Hidden Signal", "Golden Orchard", "Midnight Relay")


def pitch(i: int) -> dict[str, Any]:
    """One pitch as the API returns it; about 1 KB of compact JSON."""
    return {
        "id": 1000 + i,
        "slug": f"pitch-{1000 + i}",
        "title": f"{_TITLES[i % len(_TITLES)]} {i}",
        "logline": "A lighthouse keeper decodes a signal that predicts storms, and the town that stops "
        "believing her pays for it.",
        "genre": _GENRES[i % len(_GENRES)],
        "format": "feature" if i % 3 else "series",
        "status": "published",
        "budget": {"currency": "USD", "min": 250_000 + 1000 * i, "max": 1_200_000 + 5000 * i},
        "creator": {
            "id": 17 + i % 40,
            "name": "Priya Okafor",
            "company": "Northlight Pictures",
            "verified": True,
            "avatar_url": f"https://cdn.example.com/avatars/{17 + i % 40}.webp",
        },
        "team": [
            {"role": "director", "name": "Mateo Silva", "id": 301 + i % 9},
            {"role": "producer", "name": "Aiko Larsen", "id": 412 + i % 5},
        ],
        "language": "en",
        "runtime_min": 90 + i % 30,
        "tags": ["coastal", "mystery", "ensemble", "period"],
        "stats": {"views": 1200 + 37 * i, "likes": 88 + i % 50, "nda_requests": 4 + i % 7, "rating": 4.6},
        "media": [
            {"kind": "poster", "url": f"https://cdn.example.com/pitches/{1000 + i}/poster.webp", "w": 800},
            {"kind": "trailer", "url": f"https://cdn.example.com/pitches/{1000 + i}/trailer.mp4", "secs": 94},
        ],
        "visibility": {"public": True, "nda_required": i % 4 == 0, "regions": ["US", "GB", "DE"]},
        "created_at": "2024-03-04T10:15:00Z",
        "updated_at": "2024-05-21T08:42:11Z",
    }


def mismatched(doc: dict[str, Any]) -> dict[str, Any]:
    """The same pitch with a few fields wrong: a count, a flag, a timestamp and a float."""
    out: dict[str, Any] = orjson.loads(orjson.dumps(doc))
    out["stats"]["views"] += 1
    out["stats"]["rating"] = 4.61
    out["visibility"]["nda_required"] = not out["visibility"]["nda_required"]
    out["updated_at"] = "2024-05-21T08:42:12Z"
    return out


def page(count: int = 50) -> dict[str, Any]:
    return {"data": [pitch(i) for i in range(count)], "page": 1, "per_page": count, "total": 1200}


def documents(shadow_mismatch: bool = False) -> dict[str, bytes]:
    """Body kind -> the exact bytes served."""
    one = pitch(0)
    many = page()
    if shadow_mismatch:
        one = mismatched(one)
        many = {**many, "data": [mismatched(p) for p in many["data"]]}
    return {"1k": orjson.dumps(one), "50k": orjson.dumps(many)}
