"""What is measured: the scenarios, the run plan, and the shadowproxy config of each.

Pure: no processes, no I/O. The plan is body-major then connections, so in one proxy process
the 1 KB rows are measured before the 50 KB ones can raise its memory peak.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

Via = Literal["direct", "nginx-mirror", "shadowproxy"]
ShadowKind = Literal["equal", "mismatch", "slow", "hanging"]

# The hanging shadow is given up on after this, as the issue asks.
HANGING_TIMEOUT_S = 1.0
# A benchmark stop should not wait out the default 15 s drain behind a hanging shadow.
DRAIN_TIMEOUT_S = 2.0


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    via: Via
    shadow: ShadowKind = "equal"
    shadowing: bool = True
    workers: int = 1
    bodies: tuple[str, ...] = ("1k",)
    # The workers: 2 variant answers a throughput question, asked at the highest load only.
    max_connections_only: bool = False
    # Also measured at fixed request rates (bench/paced.py), 1 KB, one connection.
    paced: bool = False
    # Routes declared beside the measured traffic's, each with a store full of evidence
    # (bench/seed.py), and the live verdict refreshed this often: what judging costs.
    seeded_routes: int = 0
    verdict_interval_s: float | None = None


SCENARIOS: tuple[Scenario, ...] = (
    Scenario("direct", "direct", bodies=("1k", "50k"), paced=True),
    Scenario("nginx-mirror", "nginx-mirror", bodies=("1k", "50k"), paced=True),
    Scenario("shadowproxy-off", "shadowproxy", shadowing=False, paced=True),
    Scenario("shadowproxy-equal", "shadowproxy", bodies=("1k", "50k"), paced=True),
    Scenario("shadowproxy-mismatch", "shadowproxy", shadow="mismatch", bodies=("1k", "50k")),
    Scenario("shadowproxy-slow-shadow", "shadowproxy", shadow="slow"),
    Scenario("shadowproxy-hanging-shadow", "shadowproxy", shadow="hanging"),
    Scenario("shadowproxy-equal-w2", "shadowproxy", workers=2, max_connections_only=True),
    # 60 routes of 20,000 stored pairs, judged every second (the default is 15 s): each
    # refresh reads and ranks 1.2 million pairs. Equal shadow, so compare with -equal.
    Scenario("shadowproxy-61-routes", "shadowproxy", seeded_routes=60, verdict_interval_s=1.0),
)
BY_NAME = {s.name: s for s in SCENARIOS}
SMOKE = ("direct", "shadowproxy-equal", "nginx-mirror")


# The paced rows' body and connections: the question they answer is the latency one request
# pays, and the smallest body on one connection asks it most plainly.
PACED_BODY, PACED_CONNECTIONS = "1k", 1


@dataclass(frozen=True, slots=True)
class Run:
    scenario: Scenario
    body: str
    connections: int
    rate: int | None = None  # requests per second (h2load); None: wrk's closed loop


def select(names: list[str]) -> tuple[Scenario, ...]:
    unknown = [n for n in names if n not in BY_NAME]
    if unknown:
        raise ValueError(f"unknown scenario(s) {', '.join(unknown)}; known: {', '.join(BY_NAME)}")
    return tuple(BY_NAME[n] for n in dict.fromkeys(names))


def plan(
    scenario: Scenario, bodies: tuple[str, ...], connections: tuple[int, ...], rates: tuple[int, ...] = ()
) -> list[Run]:
    """The runs of one scenario, for the bodies, connection counts and paced rates asked for:
    each body's closed-loop runs, then (1 KB) its paced ones."""
    conns = (max(connections),) if scenario.max_connections_only else connections
    runs = []
    for b in scenario.bodies:
        if b not in bodies:
            continue
        runs += [Run(scenario, b, c) for c in conns]
        if scenario.paced and b == PACED_BODY:
            runs += [Run(scenario, b, PACED_CONNECTIONS, rate) for rate in rates]
    return runs


def shadowproxy_config(
    scenario: Scenario,
    *,
    listen_port: int,
    admin_port: int,
    primary_url: str,
    shadow_url: str,
    store_path: str,
) -> dict[str, Any]:
    """The YAML document (as a mapping) that `shadowproxy run -c` gets for this scenario."""
    shadow: dict[str, Any] = {"url": shadow_url, "name": f"shadow-{scenario.shadow}"}
    if scenario.shadow == "hanging":
        shadow["timeout_s"] = HANGING_TIMEOUT_S
    doc: dict[str, Any] = {
        "listen": {"host": "127.0.0.1", "port": listen_port},
        "admin": {"host": "127.0.0.1", "port": admin_port},
        "primary": {"url": primary_url, "name": "primary-nginx"},
        "shadow": shadow,
        "workers": scenario.workers,
        "drain_timeout_s": DRAIN_TIMEOUT_S,
        "shadowing": {"enabled": scenario.shadowing},
        "store": {"path": store_path},
        "log": {"level": "warning"},
    }
    if scenario.seeded_routes:
        # The measured traffic (/api/pitches/...) gets a route of its own, declared last.
        doc["routes"] = [{"name": n, "match": f"/api/{n}/**"} for n in seeded_route_names(scenario)]
        doc["routes"].append({"name": "pitches", "match": "/api/pitches/**"})
    if scenario.verdict_interval_s is not None:
        doc["verdict_interval_s"] = scenario.verdict_interval_s
    return doc


def seeded_route_names(scenario: Scenario) -> list[str]:
    return [f"seeded-{i}" for i in range(scenario.seeded_routes)]
