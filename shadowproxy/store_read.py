"""Reading the sample store back: evidence for the gate, summaries and samples for admin.

Each call opens its own connection, so the admin API (in worker threads), the report and
the writer process never share one. Readers see what the writer has flushed.
"""

from __future__ import annotations

import importlib
import json
import logging
import sqlite3
from collections import Counter
from collections.abc import Sequence
from contextlib import closing
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from shadowproxy import config
from shadowproxy.evidence import (
    LATENCY_BUCKETS,
    Evidence,
    FieldCount,
    Histogram,
    RouteEvidence,
    Sample,
    SuggestedIgnore,
)
from shadowproxy.exchange import FieldDiff, Headers
from shadowproxy.store_pairs import read_pairs
from shadowproxy.store_schema import open_reader

log = logging.getLogger("shadowproxy.store")

MAX_SAMPLES_PER_CALL = 500
EVIDENCE_SAMPLES_PER_ROUTE = 3
TOP_FIELDS = 10

_SAMPLE_COLUMNS = (
    "id, route, method, path, query, request_id, request_headers, primary_status, shadow_status,"
    " primary_headers, shadow_headers, primary_body, shadow_body, fields, parts,"
    " primary_latency_s, shadow_latency_s, at, explanation"
)


@dataclass(frozen=True, slots=True)
class RouteSummary:
    route: str
    requests: int = 0
    shadowed: int = 0
    compared: int = 0
    matches: int = 0
    mismatches: int = 0
    mismatches_by_part: dict[str, int] = field(default_factory=dict)
    skipped: dict[str, int] = field(default_factory=dict)
    lost: dict[str, int] = field(default_factory=dict)  # shadow calls never recorded, by reason
    shadow_errors: int = 0
    shadow_timeouts: int = 0
    # Mismatch samples not stored because the writer's queue was full.
    samples_dropped: int = 0
    top_fields: tuple[tuple[str, int], ...] = ()  # (path, raw count), most frequent first

    def to_json(self) -> dict[str, Any]:
        return {
            "route": self.route,
            "requests": self.requests,
            "shadowed": self.shadowed,
            "compared": self.compared,
            "matches": self.matches,
            "mismatches": self.mismatches,
            "mismatches_by_part": dict(self.mismatches_by_part),
            "skipped": dict(self.skipped),
            "lost": dict(self.lost),
            "shadow_errors": self.shadow_errors,
            "shadow_timeouts": self.shadow_timeouts,
            "samples_dropped": self.samples_dropped,
            "top_fields": [{"path": p, "count": n} for p, n in self.top_fields],
        }


def read_evidence(
    path: str, routes: Sequence[str], noise: config.Noise | None, *, samples: bool = True
) -> Evidence:
    with closing(open_reader(path)) as conn:
        counters = _counters(conn)
        names = list(dict.fromkeys([*routes, *sorted(counters)]))
        hists = _histograms(conn)
        evidence = tuple(_route_evidence(conn, r, counters.get(r, Counter()), hists) for r in names)
        examples = {r: tuple(_samples(conn, r, EVIDENCE_SAMPLES_PER_ROUTE)) for r in names} if samples else {}
        row = conn.execute("SELECT value FROM meta WHERE key = 'first_at'").fetchone()
    window = "no traffic recorded yet"
    if row is not None:
        window = "since " + datetime.fromtimestamp(float(row[0]), UTC).strftime("%Y-%m-%d %H:%M UTC")
    return Evidence(
        routes=evidence,
        source=f"store:{path}",
        window=window,
        samples={r: s for r, s in examples.items() if s},
        suggestions=_suggestions(evidence, noise),
    )


def read_summaries(path: str) -> list[RouteSummary]:
    with closing(open_reader(path)) as conn:
        out = []
        for route, c in sorted(_counters(conn).items()):
            top = conn.execute(
                "SELECT path, raw FROM field_counts WHERE route = ? AND raw > 0"
                " ORDER BY raw DESC, path LIMIT ?",
                (route, TOP_FIELDS),
            ).fetchall()
            out.append(
                RouteSummary(
                    route=route,
                    requests=c["requests"],
                    shadowed=c["shadowed"],
                    compared=c["compared"],
                    matches=c["compared"] - c["mismatches"],
                    mismatches=c["mismatches"],
                    mismatches_by_part=_prefixed(c, "part:"),
                    skipped=_prefixed(c, "skip:"),
                    lost=_prefixed(c, "lost:"),
                    shadow_errors=c["shadow_errors"],
                    shadow_timeouts=c["shadow_timeouts"],
                    samples_dropped=c["samples_dropped"],
                    top_fields=tuple((p, n) for p, n in top),
                )
            )
        return out


def read_samples(path: str, route: str | None, limit: int) -> list[Sample]:
    with closing(open_reader(path)) as conn:
        return _samples(conn, route, limit)


def read_sample(path: str, sample_id: int) -> Sample | None:
    with closing(open_reader(path)) as conn:
        row = conn.execute(f"SELECT {_SAMPLE_COLUMNS} FROM samples WHERE id = ?", (sample_id,)).fetchone()
    return None if row is None else _sample(row)


# --------------------------------------------------------------------------- pieces


def _counters(conn: sqlite3.Connection) -> dict[str, Counter[str]]:
    out: dict[str, Counter[str]] = {}
    for route, name, value in conn.execute("SELECT route, name, value FROM counters"):
        out.setdefault(route, Counter())[name] = value
    return out


def _prefixed(c: Counter[str], prefix: str) -> dict[str, int]:
    return {k[len(prefix) :]: v for k, v in sorted(c.items()) if k.startswith(prefix) and v}


def _histograms(conn: sqlite3.Connection) -> dict[tuple[str, str], Histogram]:
    raw: dict[tuple[str, str], list[tuple[float, int]]] = {}
    for route, side, le, n in conn.execute("SELECT route, side, le, count FROM latency"):
        raw.setdefault((route, side), []).append((le, n))
    sums = {(r, s): v for r, s, v in conn.execute("SELECT route, side, sum_s FROM latency_sum")}
    out = {}
    for key, buckets in raw.items():
        # Cumulative over the current bounds; the tolerance absorbs a REAL's round trip.
        counts = tuple(sum(n for le, n in buckets if le <= b + 1e-12) for b in LATENCY_BUCKETS)
        total = sum(n for _, n in buckets)
        out[key] = Histogram(LATENCY_BUCKETS, counts, total, sums.get(key, 0.0))
    return out


def _route_evidence(
    conn: sqlite3.Connection, route: str, c: Counter[str], hists: dict[tuple[str, str], Histogram]
) -> RouteEvidence:
    fields = conn.execute(
        "SELECT path, raw, noise FROM field_counts WHERE route = ? ORDER BY raw DESC, noise DESC, path",
        (route,),
    ).fetchall()
    return RouteEvidence(
        route=route,
        requests=c["requests"],
        shadowed=c["shadowed"],
        compared=c["compared"],
        mismatches=c["mismatches"],
        mismatches_by_part=_prefixed(c, "part:"),
        shadow_errors=c["shadow_errors"],
        shadow_timeouts=c["shadow_timeouts"],
        skipped=_prefixed(c, "skip:"),
        lost=_prefixed(c, "lost:"),
        primary_latency=hists.get((route, "primary"), Histogram()),
        shadow_latency=hists.get((route, "shadow"), Histogram()),
        latency_pairs=read_pairs(conn, route),
        fields=tuple(FieldCount(p, raw, noise) for p, raw, noise in fields),
        noise_total=c["noise_total"],
        hashed_only=c["hashed_only"],
    )


def _samples(conn: sqlite3.Connection, route: str | None, limit: int) -> list[Sample]:
    limit = max(0, min(limit, MAX_SAMPLES_PER_CALL))
    if route is None:
        rows = conn.execute(f"SELECT {_SAMPLE_COLUMNS} FROM samples ORDER BY id DESC LIMIT ?", (limit,))
    else:
        rows = conn.execute(
            f"SELECT {_SAMPLE_COLUMNS} FROM samples WHERE route = ? ORDER BY id DESC LIMIT ?", (route, limit)
        )
    return [_sample(r) for r in rows]


def _sample(row: sqlite3.Row) -> Sample:
    return Sample(
        id=row["id"],
        route=row["route"],
        method=row["method"],
        path=row["path"],
        query=row["query"],
        request_id=row["request_id"],
        request_headers=_headers(row["request_headers"]),
        primary_status=row["primary_status"],
        shadow_status=row["shadow_status"],
        primary_headers=_headers(row["primary_headers"]),
        shadow_headers=_headers(row["shadow_headers"]),
        primary_body=row["primary_body"],
        shadow_body=row["shadow_body"],
        fields=tuple(FieldDiff(p, kind, a, b) for p, kind, a, b in json.loads(row["fields"])),
        parts=tuple(json.loads(row["parts"])),
        primary_latency_s=row["primary_latency_s"],
        shadow_latency_s=row["shadow_latency_s"],
        at=row["at"],
        explanation=row["explanation"],
    )


def _headers(text: str) -> Headers:
    return tuple((k, v) for k, v in json.loads(text))


def _suggestions(routes: Sequence[RouteEvidence], noise: config.Noise | None) -> tuple[SuggestedIgnore, ...]:
    if noise is None or not any(r.noise_total for r in routes):
        return ()
    try:
        suggest = importlib.import_module("shadowproxy.noise").suggest
    except Exception:
        log.warning("store: shadowproxy.noise unavailable; no ignore rules suggested")
        return ()
    out: list[SuggestedIgnore] = []
    for r in routes:
        if r.fields and r.noise_total:
            out.extend(suggest(r.route, r.fields, r.noise_total, noise))
    return tuple(out)


__all__ = ["RouteSummary", "read_evidence", "read_sample", "read_samples", "read_summaries"]
