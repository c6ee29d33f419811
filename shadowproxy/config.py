"""The config schema: frozen, typed dataclasses, one per block of the YAML file.

Loading and validation (config_load.py) walks these type hints, so adding a field here is
all it takes to add a key; its README row is checked by tests/test_docs.py.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

MiB = 1024 * 1024
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")
STANDARD_METHODS = ("GET", "HEAD", "OPTIONS", "POST", "PUT", "PATCH", "DELETE", "TRACE", "CONNECT")


class ConfigError(Exception):
    """Every problem found in one config file; `str()` lists them one per line."""

    def __init__(self, source: str, errors: list[str]) -> None:
        self.source = source
        self.errors = errors
        super().__init__("\n".join(f"{source}: {e}" for e in errors))


# --------------------------------------------------------------------------- schema


@dataclass(frozen=True, slots=True)
class Listen:
    host: str = "0.0.0.0"
    port: int = 8080


@dataclass(frozen=True, slots=True)
class Admin:
    host: str = "127.0.0.1"
    port: int = 9090


@dataclass(frozen=True, slots=True)
class Backend:
    url: str
    name: str = ""
    timeout_s: float = 30.0
    connect_timeout_s: float = 5.0
    # `preserve` sends the client's Host; `backend` sends the upstream URL's host, which
    # a Cloudflare Workers route needs to find the worker.
    host_header: Literal["preserve", "backend"] = "preserve"
    max_connections: int = 100
    # Extra headers for this backend only (a Workers access token, say), added upstream.
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Secondary:
    """A second copy of the old backend, for Diffy-style noise learning.

    `url: null` with `repeat_primary: true` asks the primary twice (safe methods only).
    """

    url: str | None = None
    repeat_primary: bool = False
    timeout_s: float = 10.0


@dataclass(frozen=True, slots=True)
class Sticky:
    header: str | None = None
    cookie: str | None = None


@dataclass(frozen=True, slots=True)
class Breaker:
    """Stop shadowing while the shadow keeps failing (see breaker.py)."""

    enabled: bool = True
    failures: int = 20  # transport errors or timeouts in a row that open it
    cool_off_s: float = 5.0  # before the first probe; doubles per failed probe
    max_cool_off_s: float = 60.0


@dataclass(frozen=True, slots=True)
class Shadowing:
    enabled: bool = True
    sample_rate: float = 1.0
    sticky: Sticky | None = None
    max_in_flight: int = 256
    # Request bodies over this are not captured, so not shadowed (counted as body_too_large).
    max_body_bytes: int = MiB
    # Response bytes captured per side for the comparison; a larger body compares by hash.
    max_response_bytes: int = 4 * MiB
    marker_header: str = "X-Shadow-Request"
    methods: tuple[str, ...] = SAFE_METHODS
    breaker: Breaker = Breaker()
    # Compare differing answers in a worker process (compare_process.py), not on the loop,
    # when their bodies hold at least compare_process_min_bytes together: below it the loop
    # compares faster than it could hand the pair over (a 1 KB pair: 40 us).
    compare_process: bool = True
    compare_process_min_bytes: int = 16 * 1024


@dataclass(frozen=True, slots=True)
class Unordered:
    path: str
    key: str | None = None


@dataclass(frozen=True, slots=True)
class Tolerance:
    path: str
    abs: float = 0.0
    rel: float = 0.0


@dataclass(frozen=True, slots=True)
class Normalize:
    """A built-in normaliser (`uuid`, `iso8601`, `epoch_millis`) or a user regex."""

    builtin: Literal["uuid", "iso8601", "epoch_millis"] | None = None
    regex: str | None = None
    replace: str = "<normalized>"
    path: str = "$..*"


DEFAULT_COMPARED_HEADERS = (
    "content-type",
    "cache-control",
    "location",
    "vary",
    "content-language",
    "www-authenticate",
)
DEFAULT_IGNORED_HEADERS = (
    "date",
    "server",
    "via",
    "cf-ray",
    "cf-cache-status",
    "x-request-id",
    "report-to",
    "nel",
    "content-length",
    "age",
    "etag",
    "x-powered-by",
    "alt-svc",
    "expect-ct",
    "x-served-by",
    "x-cache",
    "x-runtime",
    "set-cookie",
)


@dataclass(frozen=True, slots=True)
class CompareRules:
    headers: tuple[str, ...] = DEFAULT_COMPARED_HEADERS
    ignore_headers: tuple[str, ...] = DEFAULT_IGNORED_HEADERS
    ignore: tuple[str, ...] = ()
    unordered: tuple[Unordered, ...] = ()
    tolerance: tuple[Tolerance, ...] = ()
    normalize: tuple[Normalize, ...] = ()
    # Bodies larger than this (decoded) are compared by hash only.
    max_diff_bytes: int = MiB

    def merged(self, other: CompareRules | None) -> CompareRules:
        """A route's rules add to the global ones."""
        if other is None:
            return self
        return CompareRules(
            headers=_union(self.headers, other.headers),
            ignore_headers=_union(self.ignore_headers, other.ignore_headers),
            ignore=_union(self.ignore, other.ignore),
            unordered=_union(self.unordered, other.unordered),
            tolerance=_union(self.tolerance, other.tolerance),
            normalize=_union(self.normalize, other.normalize),
            max_diff_bytes=min(self.max_diff_bytes, other.max_diff_bytes),
        )


@dataclass(frozen=True, slots=True)
class RouteCompare:
    """A route's `compare:` block: same keys as the global one, all adding to it."""

    headers: tuple[str, ...] = ()
    ignore_headers: tuple[str, ...] = ()
    ignore: tuple[str, ...] = ()
    unordered: tuple[Unordered, ...] = ()
    tolerance: tuple[Tolerance, ...] = ()
    normalize: tuple[Normalize, ...] = ()
    max_diff_bytes: int = MiB * 1024


@dataclass(frozen=True, slots=True)
class Gate:
    min_samples: int = 300
    max_mismatch_rate: float = 0.001
    max_shadow_error_rate: float = 0.01
    latency_slo_s: float = 0.5
    latency_quantile: float = 0.95
    max_latency_ratio: float = 1.2
    confidence: float = 0.95
    critical: bool = False


@dataclass(frozen=True, slots=True)
class RouteGate:
    """Per-route overrides; a missing key falls back to the global `gate:`."""

    min_samples: int | None = None
    max_mismatch_rate: float | None = None
    max_shadow_error_rate: float | None = None
    latency_slo_s: float | None = None
    latency_quantile: float | None = None
    max_latency_ratio: float | None = None
    confidence: float | None = None
    critical: bool | None = None

    def over(self, base: Gate) -> Gate:
        changes = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        return dataclasses.replace(base, **{k: v for k, v in changes.items() if v is not None})


@dataclass(frozen=True, slots=True)
class Expected:
    """The migration plan's latency targets, shown beside the measurement (not gated)."""

    p50_s: float | None = None
    p95_s: float | None = None


@dataclass(frozen=True, slots=True)
class RouteShadow:
    enabled: bool = True
    methods: tuple[str, ...] | None = None
    sample_rate: float | None = None


@dataclass(frozen=True, slots=True)
class Route:
    name: str
    match: str
    # Only these methods match this route (e.g. POST /api/pitches as its own route); None: any.
    methods: tuple[str, ...] | None = None
    critical: bool = False
    shadow: RouteShadow = RouteShadow()
    compare: RouteCompare | None = None
    gate: RouteGate = RouteGate()
    expected: Expected | None = None


@dataclass(frozen=True, slots=True)
class Routing:
    # Distinct route labels; beyond the cap traffic folds into `other` (metric cardinality).
    max_routes: int = 500
    auto_templates: bool = True


@dataclass(frozen=True, slots=True)
class Noise:
    enabled: bool = False
    min_relative_difference: float = 0.2
    min_absolute_difference: float = 0.0003


@dataclass(frozen=True, slots=True)
class Store:
    path: str = "shadowproxy.db"
    samples_per_route: int = 50
    max_body_bytes: int = 64 * 1024
    latency_pairs_per_route: int = 20_000
    flush_interval_s: float = 0.5


DEFAULT_REDACT_HEADERS = (
    "authorization",
    "proxy-authorization",
    "cookie",
    "set-cookie",
    "x-api-key",
    "x-auth-token",
    "stripe-signature",
)
DEFAULT_REDACT_FIELDS = (
    "password",
    "passwd",
    "token",
    "secret",
    "api_key",
    "apikey",
    "card",
    "card_number",
    "cvc",
    "cvv",
    "ssn",
    "access_token",
    "refresh_token",
    "id_token",
    "client_secret",
    "private_key",
)


@dataclass(frozen=True, slots=True)
class Redact:
    headers: tuple[str, ...] = DEFAULT_REDACT_HEADERS
    fields: tuple[str, ...] = DEFAULT_REDACT_FIELDS


@dataclass(frozen=True, slots=True)
class Log:
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["text", "json"] = "text"


@dataclass(frozen=True, slots=True)
class Config:
    primary: Backend
    shadow: Backend
    listen: Listen = Listen()
    admin: Admin = Admin()
    workers: int = 1
    # `fast`: the httptools server and keep-alive pools (shadowproxy/fast); `aiohttp`: the
    # reference implementation on aiohttp's server and client. Same behaviour, tested on both.
    engine: Literal["fast", "aiohttp"] = "fast"
    drain_timeout_s: float = 15.0
    # How often the live verdict (gauge shadowproxy_verdict, GET /api/verdict) is recomputed.
    verdict_interval_s: float = 15.0
    secondary: Secondary | None = None
    shadowing: Shadowing = Shadowing()
    routes: tuple[Route, ...] = ()
    routing: Routing = Routing()
    compare: CompareRules = CompareRules()
    noise: Noise = Noise()
    store: Store = Store()
    redact: Redact = Redact()
    gate: Gate = Gate()
    log: Log = Log()
    # Filled by the loader, not by the user: where the config came from and its hash.
    source: str = ""
    digest: str = ""

    def route(self, name: str) -> Route | None:
        return next((r for r in self.routes if r.name == name), None)

    def rules_for(self, route: str) -> CompareRules:
        r = self.route(route)
        if r is None or r.compare is None:
            return self.compare
        return self.compare.merged(route_rules(r.compare))

    def rules_by_route(self) -> dict[str, CompareRules]:
        """Every configured route's merged rules, built once: rules_for builds a new object
        per call, and compare() caches its compiled form per rules object."""
        return {r.name: self.rules_for(r.name) for r in self.routes}

    def gate_for(self, route: str) -> Gate:
        r = self.route(route)
        if r is None:
            return self.gate
        g = r.gate.over(self.gate)
        return dataclasses.replace(g, critical=g.critical or r.critical)


def _union(a: tuple[Any, ...], b: tuple[Any, ...]) -> tuple[Any, ...]:
    return a + tuple(x for x in b if x not in a)


def route_rules(rc: RouteCompare) -> CompareRules:
    return CompareRules(
        headers=rc.headers,
        ignore_headers=rc.ignore_headers,
        ignore=rc.ignore,
        unordered=rc.unordered,
        tolerance=rc.tolerance,
        normalize=rc.normalize,
        max_diff_bytes=rc.max_diff_bytes,
    )


# The loader lives in its own module (one concern each); re-exported so callers say
# `config.load(...)`. Imported last: it needs the schema above.
from shadowproxy.config_load import load, loads, summary  # noqa: E402

__all__ = ["ConfigError", "load", "loads", "summary"]
