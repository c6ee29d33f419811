"""The in-memory batch of counts the store adds up between two writes (store_schema
writes it). Every shadowed request adds to it, so it is compiled in the compiled build.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

from shadowproxy.buckets import bucket_index, finite
from shadowproxy.evidence import LATENCY_BUCKETS

# Distinct field paths counted per route; the rest are added up under OTHER_FIELD.
MAX_FIELD_PATHS = 1000
OTHER_FIELD = "other"
# Compiled, a Final of this module is a static load; the imported name, a dict lookup per use.
_LATENCY: Final = LATENCY_BUCKETS


@dataclass(slots=True)
class LatencyHist:
    counts: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_BUCKETS) + 1))
    sum_s: float = 0.0

    def observe(self, seconds: float) -> None:
        if not finite(seconds):
            return
        if seconds < 0.0:
            seconds = 0.0
        self.counts[bucket_index(_LATENCY, seconds)] += 1
        self.sum_s += seconds

    def add(self, other: LatencyHist) -> None:
        self.counts = [a + b for a, b in zip(self.counts, other.counts, strict=True)]
        self.sum_s += other.sum_s


@dataclass(slots=True)
class RouteDelta:
    # "requests", "shadowed", "skip:<reason>", "part:<part>", ...: see store.Store. A plain
    # dict through count(), not a Counter: compiled, a Counter's `+= 1` takes the generic
    # path of a dict subclass (about 1,000 instructions a key, four keys per request).
    counts: dict[str, int] = field(default_factory=dict)
    primary: LatencyHist = field(default_factory=LatencyHist)
    shadow: LatencyHist = field(default_factory=LatencyHist)
    # Reservoir slot -> latency, a dict per side. Not a (primary, shadow) tuple per slot:
    # a tuple is a container the cycle collector tracks until its first collection, and
    # a flush interval under `make bench` load held thousands, 80% of the young
    # generation, each counting towards the next collection. A dict of floats is not
    # tracked at all.
    pair_primary: dict[int, float] = field(default_factory=dict)
    pair_shadow: dict[int, float] = field(default_factory=dict)
    fields: dict[str, list[int]] = field(default_factory=dict)  # path -> [raw, noise]

    def count(self, name: str, n: int = 1) -> None:
        c = self.counts
        c[name] = c.get(name, 0) + n

    def count_field(self, path: str, index: int, n: int = 1) -> None:
        # The batch is bounded like the table: a flood of new paths folds into OTHER_FIELD.
        if path not in self.fields and len(self.fields) >= MAX_FIELD_PATHS:
            path = OTHER_FIELD
        self.fields.setdefault(path, [0, 0])[index] += n

    def add(self, newer: RouteDelta) -> None:
        for name, n in newer.counts.items():
            self.count(name, n)
        self.primary.add(newer.primary)
        self.shadow.add(newer.shadow)
        # The newer pair in a slot replaced the older one.
        self.pair_primary.update(newer.pair_primary)
        self.pair_shadow.update(newer.pair_shadow)
        for path, (raw, noise) in newer.fields.items():
            self.count_field(path, 0, raw)
            self.count_field(path, 1, noise)


@dataclass(slots=True)
class Delta:
    routes: dict[str, RouteDelta] = field(default_factory=dict)
    first_at: float | None = None

    def route(self, name: str) -> RouteDelta:
        d = self.routes.get(name)
        if d is None:
            d = self.routes[name] = RouteDelta()
        return d

    def add(self, newer: Delta) -> None:
        for name, d in newer.routes.items():
            self.route(name).add(d)
        if self.first_at is None:
            self.first_at = newer.first_at
