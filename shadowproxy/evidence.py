"""What the gate judges and the report shows: per-route counts, histograms and samples.

Produced by the store (one instance) or from Prometheus (every instance); consumed by
`gate` and `report`. Pure data, no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from shadowproxy.exchange import FieldDiff, Headers

# Shared by the Prometheus histogram and the store's histogram, so `--store` and
# `--prometheus` reports count the same thing. 0.5 s is the rollback trigger: it must be a
# bound so the share of requests over it is exact, not interpolated.
LATENCY_BUCKETS: tuple[float, ...] = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.02,
    0.03,
    0.05,
    0.075,
    0.1,
    0.2,
    0.3,
    0.5,
    0.75,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
)


@dataclass(frozen=True, slots=True)
class Histogram:
    """Cumulative bucket counts, Prometheus style: counts[i] = observations <= bounds[i]."""

    bounds: tuple[float, ...] = LATENCY_BUCKETS
    counts: tuple[int, ...] = (0,) * len(LATENCY_BUCKETS)
    total: int = 0
    sum_s: float = 0.0

    def over(self, threshold_s: float) -> tuple[int, bool]:
        """Observations above `threshold_s`, and whether that count is exact.

        Exact when the threshold is a bucket bound; otherwise the count above the nearest
        lower bound, an over-estimate, which errs toward NO-GO rather than GO.
        """
        below = 0
        exact = False
        for b, c in zip(self.bounds, self.counts, strict=True):
            if b <= threshold_s + 1e-12:
                below = c
                exact = abs(b - threshold_s) < 1e-12
        return self.total - below, exact

    def quantile_range(self, q: float) -> tuple[float, float] | None:
        """The bucket the q-quantile falls in, as (lower, upper) bounds; None when empty."""
        if self.total == 0:
            return None
        rank = q * self.total
        lower = 0.0
        for b, c in zip(self.bounds, self.counts, strict=True):
            if c >= rank:
                return (lower, b)
            lower = b
        return (lower, float("inf"))


@dataclass(frozen=True, slots=True)
class FieldCount:
    path: str
    raw: int  # requests where primary and shadow differed in this field
    noise: int = 0  # requests where primary and secondary differed in it


@dataclass(frozen=True, slots=True)
class RouteEvidence:
    route: str
    requests: int = 0  # client requests answered on this route
    shadowed: int = 0  # shadow calls made (answered or failed)
    compared: int = 0  # pairs where both answered and were compared
    mismatches: int = 0
    mismatches_by_part: dict[str, int] = field(default_factory=dict)
    shadow_errors: int = 0  # shadow 5xx, transport errors and timeouts
    shadow_timeouts: int = 0
    skipped: dict[str, int] = field(default_factory=dict)  # by SkipReason
    # Shadow calls made whose pair never got recorded, by drop reason (pair_expired,
    # pair_abandoned): with them a route's requests add up. Only the store counts them.
    lost: dict[str, int] = field(default_factory=dict)
    primary_latency: Histogram = Histogram()
    shadow_latency: Histogram = Histogram()
    # (primary_s, shadow_s) of the same requests: a bounded reservoir sample.
    latency_pairs: tuple[tuple[float, float], ...] = ()
    fields: tuple[FieldCount, ...] = ()  # most frequent first
    noise_total: int = 0  # requests that also went to a secondary
    hashed_only: int = 0


@dataclass(frozen=True, slots=True)
class Sample:
    """One stored mismatch, already redacted and truncated."""

    id: int
    route: str
    method: str
    path: str
    query: str
    request_id: str
    request_headers: Headers
    primary_status: int | None
    shadow_status: int | None
    primary_headers: Headers
    shadow_headers: Headers
    primary_body: str
    shadow_body: str
    fields: tuple[FieldDiff, ...]
    parts: tuple[str, ...]
    primary_latency_s: float
    shadow_latency_s: float
    at: float
    # A human-readable explanation (DeepDiff's), computed off the event loop.
    explanation: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "route": self.route,
            "method": self.method,
            "path": self.path,
            "query": self.query,
            "request_id": self.request_id,
            "request_headers": [list(h) for h in self.request_headers],
            "primary": {
                "status": self.primary_status,
                "headers": [list(h) for h in self.primary_headers],
                "body": self.primary_body,
                "latency_s": self.primary_latency_s,
            },
            "shadow": {
                "status": self.shadow_status,
                "headers": [list(h) for h in self.shadow_headers],
                "body": self.shadow_body,
                "latency_s": self.shadow_latency_s,
            },
            "parts": list(self.parts),
            "fields": [
                {"path": f.path, "kind": f.kind, "primary": f.primary, "shadow": f.shadow}
                for f in self.fields
            ],
            "explanation": self.explanation,
            "at": self.at,
        }


@dataclass(frozen=True, slots=True)
class SuggestedIgnore:
    """A field that differs between the two copies of the old backend as often as between
    old and new: noise. Shown to the user as a rule to add, never applied silently."""

    route: str
    path: str
    raw: int
    noise: int
    total: int
    why: str


@dataclass(frozen=True, slots=True)
class Evidence:
    """Everything one report is computed from."""

    routes: tuple[RouteEvidence, ...]
    source: str  # "store:<path>" or "prometheus:<url>"
    window: str  # human text: "since 2026-11-28 10:00 UTC" or "last 1h"
    samples: dict[str, tuple[Sample, ...]] = field(default_factory=dict)  # by route, newest first
    suggestions: tuple[SuggestedIgnore, ...] = ()
