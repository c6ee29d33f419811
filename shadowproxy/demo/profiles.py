"""How the simulated Deno server and the Workers port differ: every planted difference, in one place.

The Workers port differs the way a real port does:
- noise the demo config's rules absorb: its own `meta.request_id` / `meta.generated_at` /
  `meta.served_by` (as Deno's, just different values), Cloudflare headers, gzip or br bodies;
- notifications in another order (by id instead of newest first), the same set;
- one real regression: `budget` on the pitch detail is a string ("2500000.00");
- `/api/users/{id}` slow at p95: 15% of answers take 550-700 ms;
- `/api/notifications` answers 503 to 4% of requests (a Durable Object shedding load).
Everything else answers the same, and faster than Deno, as the migration plan hopes.

Latencies follow the plan's table at half scale (Deno simple ~20 ms, complex ~60 ms;
Workers ~5 ms and ~25 ms): Workers must be clearly faster than Deno, by more than the
few milliseconds of scheduling jitter a busy proxy adds to both, or the gate's pairwise
latency-ratio check cannot tell the routes that should pass.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Literal

Flavor = Literal["deno", "workers"]
# Joins, filters and pages: the plan's "complex query".
COMPLEX_ROUTES = frozenset({"pitch_list", "pitch_detail"})


@dataclass(frozen=True, slots=True)
class Profile:
    flavor: Flavor
    served_by: str
    server_header: str
    latency_s: tuple[float, float]  # a simple query's answer time
    complex_latency_s: tuple[float, float]
    slow_route: str | None = None
    slow_share: float = 0.0
    slow_latency_s: tuple[float, float] = (0.0, 0.0)
    flaky_route: str | None = None
    flaky_share: float = 0.0
    notifications_newest_first: bool = True
    budget_as_string: bool = False
    compress: bool = False
    cloudflare_headers: bool = False


DENO = Profile(
    flavor="deno",
    served_by="deno/working-server.ts",
    server_header="deno",
    latency_s=(0.010, 0.030),
    complex_latency_s=(0.040, 0.080),
)
WORKERS = Profile(
    flavor="workers",
    served_by="workers/AMS",
    server_header="cloudflare",
    latency_s=(0.003, 0.007),
    complex_latency_s=(0.015, 0.035),
    slow_route="user",
    slow_share=0.15,
    slow_latency_s=(0.550, 0.700),
    flaky_route="notifications",
    flaky_share=0.04,
    notifications_newest_first=False,
    budget_as_string=True,
    compress=True,
    cloudflare_headers=True,
)
PROFILES: dict[Flavor, Profile] = {"deno": DENO, "workers": WORKERS}


class Behaviour:
    """Per-request draws (delay, failure), from seeded generators.

    Delay and failure use separate generators, so how many requests fail among the first N
    to a route does not depend on how concurrent requests interleave their delay draws.
    """

    def __init__(self, profile: Profile, seed: int, latency_scale: float) -> None:
        if latency_scale < 0:
            raise ValueError(f"latency_scale must be >= 0, not {latency_scale}")
        self.profile = profile
        self._scale = latency_scale
        self._delays = random.Random(f"{profile.flavor}:delay:{seed}")
        self._faults = random.Random(f"{profile.flavor}:fault:{seed}")

    def delay_s(self, route: str) -> float:
        p = self.profile
        lo, hi = p.complex_latency_s if route in COMPLEX_ROUTES else p.latency_s
        if route == p.slow_route and self._delays.random() < p.slow_share:
            lo, hi = p.slow_latency_s
        return self._delays.uniform(lo, hi) * self._scale

    def fails(self, route: str) -> bool:
        p = self.profile
        return route == p.flaky_route and self._faults.random() < p.flaky_share
