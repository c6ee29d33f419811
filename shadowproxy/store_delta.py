"""The in-memory batch of counts the store adds up between two writes (store_schema
writes it). Every shadowed request adds to it, so it is compiled in the compiled build.
"""

from __future__ import annotations

from array import array
from dataclasses import dataclass, field
from typing import Final

from shadowproxy.buckets import bucket_index, finite
from shadowproxy.evidence import LATENCY_BUCKETS

# Distinct field paths counted per route; the rest are added up under OTHER_FIELD.
MAX_FIELD_PATHS = 1000
OTHER_FIELD = "other"
# Reservoir writes a batch holds before repeated writes to a slot fold into the last (a
# batch grows while its writer is behind). A flush interval brings a few thousand.
MAX_PAIR_WRITES = 100_000
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
    # The reservoir writes since the last flush, in order: write i put the pair
    # (pair_latencies[2i], pair_latencies[2i + 1]) in slot pair_slots[i], and a later write
    # to a slot replaces an earlier one. Arrays of numbers, not boxed floats: the store's
    # shipper thread freed a flush interval's floats with the GIL held, cache-cold, and
    # pickled them one by one: 1-2.4 ms twice a second under `make bench` load (perf), a
    # stall of the event loop (down to 0.7 ms). An append costs the loop more than the dict
    # it replaces (about 1,500 instructions a pair, callgrind), but only while the reservoir
    # fills: once it is full, few requests write a slot.
    pair_slots: array[int] = field(default_factory=lambda: array("q"))
    pair_latencies: array[float] = field(default_factory=lambda: array("d"))
    fold_at: int = MAX_PAIR_WRITES  # more writes than this fold (a reservoir may be larger)
    fields: dict[str, list[int]] = field(default_factory=dict)  # path -> [raw, noise]

    def count(self, name: str, n: int = 1) -> None:
        c = self.counts
        c[name] = c.get(name, 0) + n

    def add_pair(self, slot: int, primary_s: float, shadow_s: float) -> None:
        self.pair_slots.append(slot)
        latencies = self.pair_latencies
        latencies.append(primary_s)
        latencies.append(shadow_s)
        if len(self.pair_slots) > self.fold_at:
            self._last_write_per_slot()

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
        self.pair_slots.extend(newer.pair_slots)
        self.pair_latencies.extend(newer.pair_latencies)
        if len(self.pair_slots) > self.fold_at:
            self._last_write_per_slot()
        for path, (raw, noise) in newer.fields.items():
            self.count_field(path, 0, raw)
            self.count_field(path, 1, noise)

    def _last_write_per_slot(self) -> None:
        """Bound a batch that keeps growing (the store's while its writer is behind, the
        writer's while its writes fail): of several writes to one slot, only the last lands."""
        last = {slot: i for i, slot in enumerate(self.pair_slots)}
        latencies = self.pair_latencies
        kept = sorted(last.values())
        self.pair_slots = array("q", [self.pair_slots[i] for i in kept])
        self.pair_latencies = array("d", [x for i in kept for x in (latencies[2 * i], latencies[2 * i + 1])])
        self.fold_at = max(MAX_PAIR_WRITES, 2 * len(kept))


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
