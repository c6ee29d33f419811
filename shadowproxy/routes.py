"""Map a request path to a route label: a configured route, or an automatic template.

The route is the unit of every metric, sample and verdict, so its label set must stay
bounded: past `max_routes` distinct labels everything new folds into `other`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import unquote

from shadowproxy import config

OTHER = "other"
_MAX_AUTO_SEGMENTS = 8

_ID_SEGMENT = re.compile(
    r"""^(?:
        \d+                                                   # numeric
      | [0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}   # UUID
      | [0-9a-fA-F]{16,}                                      # long hex (hashes, object ids)
      | [A-Za-z0-9_\-]{20,}={0,2}                             # base64-ish tokens, slugs with ids
    )$""",
    re.VERBOSE,
)
_HAS_DIGIT = re.compile(r"\d")


@dataclass(frozen=True, slots=True)
class _Pattern:
    name: str
    parts: tuple[str, ...]  # literal segment, "{...}" for one segment
    rest: bool  # ends with /** : matches any (even empty) remainder
    methods: frozenset[str] | None


def _compile(route: config.Route) -> _Pattern:
    parts = [p for p in route.match.split("/") if p != ""]
    rest = bool(parts) and parts[-1] == "**"
    if rest:
        parts = parts[:-1]
    methods = frozenset(m.upper() for m in route.methods) if route.methods else None
    return _Pattern(route.name, tuple(parts), rest, methods)


def auto_template(path: str) -> str:
    """`/api/users/42/pitches/9f1c…` -> `/api/users/{id}/pitches/{id}`."""
    segments = [s for s in unquote(path).split("/") if s != ""][:_MAX_AUTO_SEGMENTS]
    out = []
    for s in segments:
        if _ID_SEGMENT.match(s) and (s.isdigit() or _HAS_DIGIT.search(s)):
            out.append("{id}")
        else:
            out.append(s)
    return "/" + "/".join(out)


class Router:
    """First configured route whose pattern fits wins; otherwise an automatic template."""

    def __init__(self, routes: Sequence[config.Route], routing: config.Routing | None = None) -> None:
        routing = routing or config.Routing()
        self._patterns = tuple(_compile(r) for r in routes)
        self._configured = {r.name for r in routes}
        self._auto = routing.auto_templates
        self._max = routing.max_routes
        self._seen: set[str] = set(self._configured)
        self._by_method = any(p.methods is not None for p in self._patterns)
        # Hot path: the same raw paths recur; the cache is bounded like everything else.
        self._cache: dict[str, str] = {}

    def resolve(self, raw_path: str, method: str = "GET") -> str:
        key = f"{method} {raw_path}" if self._by_method else raw_path
        hit = self._cache.get(key)
        if hit is not None:
            return hit
        name = self._resolve(raw_path, method)
        if len(self._cache) >= 10_000:
            self._cache.clear()
        self._cache[key] = name
        return name

    def _resolve(self, raw_path: str, method: str) -> str:
        segments = [s for s in raw_path.split("?", 1)[0].split("/") if s != ""]
        for p in self._patterns:
            if (p.methods is None or method in p.methods) and _fits(p, segments):
                return p.name
        if not self._auto:
            return OTHER
        name = auto_template(raw_path)
        if name in self._seen:
            return name
        if len(self._seen) >= self._max:
            return OTHER
        self._seen.add(name)
        return name

    @property
    def configured(self) -> frozenset[str]:
        return frozenset(self._configured)


def _fits(p: _Pattern, segments: list[str]) -> bool:
    n = len(p.parts)
    if len(segments) < n or (not p.rest and len(segments) != n):
        return False
    for want, got in zip(p.parts, segments, strict=False):
        if want.startswith("{") and want.endswith("}"):
            continue
        if want != got:
            return False
    return True
