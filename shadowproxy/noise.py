"""Diffy-style noise learning: a field that also differs between two copies of the old
backend (primary and secondary) is noise, and is suggested as an ignore rule, with the
numbers that justify it. Pure functions; nothing is ever ignored without the user's say.
"""

from __future__ import annotations

from collections.abc import Sequence

from shadowproxy.config import Noise
from shadowproxy.evidence import FieldCount, SuggestedIgnore
from shadowproxy.jsonpath import generic_path


def is_real_difference(raw: int, noise: int, total: int, cfg: Noise) -> bool:
    """Diffy's rule: raw > noise, and |raw - noise| / (raw + noise) > min_relative_difference,
    and |raw - noise| / total > min_absolute_difference."""
    if raw <= noise:
        return False
    gap = raw - noise
    # A total below the counts it contains would be a bookkeeping slip; never divide by it.
    total = max(total, raw)
    return gap / (raw + noise) > cfg.min_relative_difference and gap / total > cfg.min_absolute_difference


def suggest(route: str, fields: Sequence[FieldCount], total: int, cfg: Noise) -> list[SuggestedIgnore]:
    """Fields whose primary-vs-shadow differences the secondary explains: ignore candidates.

    `total` is the number of requests that also went to a secondary. Counts on paths that
    generalise to the same rule (`$.a[0].t`, `$.a[1].t`) are added up, capped at `total`.
    Only JSON paths and headers are suggested: `status`, `body` and lines are no rules.
    """
    merged: dict[str, tuple[int, int]] = {}
    for f in fields:
        path = generic_path(f.path)
        if not (path.startswith("$") or path.startswith("header:")):
            continue
        raw, noise = merged.get(path, (0, 0))
        merged[path] = (raw + f.raw, noise + f.noise)
    out = []
    for path, (raw, noise) in merged.items():
        if total > 0:
            raw, noise = min(raw, total), min(noise, total)
        # A field that never differed between the two old copies is not noise, however rare.
        if raw == 0 or noise == 0 or is_real_difference(raw, noise, total, cfg):
            continue
        out.append(SuggestedIgnore(route, path, raw, noise, total, _why(raw, noise, total, cfg)))
    out.sort(key=lambda s: (-s.raw, s.path))
    return out


def _why(raw: int, noise: int, total: int, cfg: Noise) -> str:
    base = (
        f"differs old-vs-new in {raw} and old-vs-old in {noise} of {total} requests "
        f"that also went to the secondary"
    )
    if raw <= noise:
        return f"{base}: the old backend disagrees with itself at least as often, so this is noise"
    gap = raw - noise
    rel = gap / (raw + noise)
    if rel <= cfg.min_relative_difference:
        return (
            f"{base}: |raw-noise|/(raw+noise) = {rel:.1%}, not above the "
            f"{cfg.min_relative_difference:.1%} needed to call it a real difference"
        )
    absolute = gap / max(total, raw)
    return (
        f"{base}: |raw-noise|/total = {absolute:.3%}, not above the "
        f"{cfg.min_absolute_difference:.3%} needed to call it a real difference"
    )
