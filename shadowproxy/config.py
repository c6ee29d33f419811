"""Load the YAML config, expand ${VAR}, validate, and return frozen typed objects.

The schema *is* the dataclasses below: `_build` walks their type hints, so a key that is
not a field is unknown, a value of the wrong type is named with its key path, and every
error in the file is collected before we give up (a user fixing a config wants them all
at once, not one per run).
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import yaml

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
        return self.compare.merged(_as_rules(r.compare))

    def gate_for(self, route: str) -> Gate:
        r = self.route(route)
        if r is None:
            return self.gate
        g = r.gate.over(self.gate)
        return dataclasses.replace(g, critical=g.critical or r.critical)


_LOADER_FIELDS = {"source", "digest"}


# --------------------------------------------------------------------------- loading

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-(.*?))?\}")


def load(path: str | os.PathLike[str], env: typing.Mapping[str, str] | None = None) -> Config:
    """Read, expand and validate a config file; raise ConfigError listing every problem."""
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(source, [f"cannot read file: {e.strerror or e}"]) from None
    return loads(text, source=source, env=os.environ if env is None else env)


def loads(text: str, source: str = "<string>", env: typing.Mapping[str, str] | None = None) -> Config:
    env = os.environ if env is None else env
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise ConfigError(source, [f"{where}not valid YAML ({getattr(e, 'problem', e)})"]) from None
    if not isinstance(raw, dict):
        raise ConfigError(source, ["the top level must be a mapping of keys (listen, primary, shadow, ...)"])
    errors: list[str] = []
    expanded = _expand(raw, "", env, errors)
    cfg = _build(Config, expanded, "", errors)
    if isinstance(cfg, Config):
        try:
            _check(cfg, errors)
        except (AttributeError, TypeError, ValueError):
            # A value of the wrong shape, already reported above, tripped a semantic check.
            if not errors:
                raise
    if errors or not isinstance(cfg, Config):
        raise ConfigError(source, errors)
    digest = hashlib.sha256(text.encode()).hexdigest()[:12]
    return dataclasses.replace(cfg, source=source, digest=digest)


def _expand(value: Any, path: str, env: typing.Mapping[str, str], errors: list[str]) -> Any:
    if isinstance(value, str):

        def sub(m: re.Match[str]) -> str:
            name, default = m.group(1), m.group(2)
            if name in env:
                return env[name]
            if default is not None:
                return default
            errors.append(
                f"{path or '<top>'}: environment variable {name} is not set (use ${{{name}:-default}})"
            )
            return ""

        return _VAR.sub(sub, value)
    if isinstance(value, dict):
        return {k: _expand(v, _join(path, k), env, errors) for k, v in value.items()}
    if isinstance(value, list):
        return [_expand(v, f"{path}[{i}]", env, errors) for i, v in enumerate(value)]
    return value


def _join(path: str, key: object) -> str:
    return f"{path}.{key}" if path else str(key)


_MISSING = object()


def _build(tp: Any, value: Any, path: str, errors: list[str]) -> Any:
    """Turn parsed YAML into the type `tp`, appending each problem to `errors`."""
    origin = typing.get_origin(tp)
    where = path or "<top>"
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _build(inner[0], value, path, errors)
    if origin is Literal:
        allowed = typing.get_args(tp)
        if value not in allowed:
            errors.append(f"{where}: must be one of {', '.join(map(str, allowed))}, not {value!r}")
        return value
    if origin is tuple:
        item_tp = typing.get_args(tp)[0]
        if isinstance(value, str | dict) or not isinstance(value, list | tuple):
            errors.append(f"{where}: must be a list, not {_kind(value)}")
            return ()
        return tuple(_build(item_tp, v, f"{path}[{i}]", errors) for i, v in enumerate(value))
    if origin is dict:
        if not isinstance(value, dict):
            errors.append(f"{where}: must be a mapping, not {_kind(value)}")
            return {}
        return {str(k): _build(str, v, _join(path, k), errors) for k, v in value.items()}
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        return _build_dataclass(tp, value, path, errors)
    if tp is bool:
        if not isinstance(value, bool):
            errors.append(f"{where}: must be true or false, not {_kind(value)}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            errors.append(f"{where}: must be a whole number, not {_kind(value)}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            errors.append(f"{where}: must be a number, not {_kind(value)}")
            return value
        return float(value)
    if tp is str:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return str(value)
        if not isinstance(value, str):
            errors.append(f"{where}: must be a string, not {_kind(value)}")
        return value
    raise TypeError(f"config schema has an unsupported type at {where}: {tp!r}")  # pragma: no cover


def _build_dataclass(tp: type, value: Any, path: str, errors: list[str]) -> Any:
    where = path or "<top>"
    if not isinstance(value, dict):
        errors.append(f"{where}: must be a mapping, not {_kind(value)}")
        return None
    hints = typing.get_type_hints(tp)
    known = {f.name: f for f in dataclasses.fields(tp) if f.name not in _LOADER_FIELDS}
    for key in value:
        if key not in known:
            hint = _closest(str(key), known)
            errors.append(f"{_join(path, key)}: unknown key{hint}")
    kwargs: dict[str, Any] = {}
    for name, f in known.items():
        if name in value:
            built = _build(hints[name], value[name], _join(path, name), errors)
            if built is not None or value[name] is None:
                kwargs[name] = built
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            errors.append(f"{_join(path, name)}: required key is missing")
    try:
        return tp(**kwargs)
    except TypeError:
        return None


def _closest(key: str, known: typing.Iterable[str]) -> str:
    import difflib

    best = difflib.get_close_matches(key, list(known), n=1)
    return f" (did you mean {best[0]!r}?)" if best else f" (known keys: {', '.join(sorted(known))})"


def _kind(value: Any) -> str:
    if value is None:
        return "empty (null)"
    return {dict: "a mapping", list: "a list", str: f"the string {value!r}", bool: f"{value}"}.get(
        type(value), f"{type(value).__name__} {value!r}"
    )


def _union(a: tuple[Any, ...], b: tuple[Any, ...]) -> tuple[Any, ...]:
    return a + tuple(x for x in b if x not in a)


def _as_rules(rc: RouteCompare) -> CompareRules:
    return CompareRules(
        headers=rc.headers,
        ignore_headers=rc.ignore_headers,
        ignore=rc.ignore,
        unordered=rc.unordered,
        tolerance=rc.tolerance,
        normalize=rc.normalize,
        max_diff_bytes=rc.max_diff_bytes,
    )


# --------------------------------------------------------------------------- semantic checks


def _check(cfg: Config, errors: list[str]) -> None:
    for key, backend in (("primary", cfg.primary), ("shadow", cfg.shadow)):
        _check_url(f"{key}.url", backend.url, errors)
        _positive(f"{key}.timeout_s", backend.timeout_s, errors)
        _positive(f"{key}.connect_timeout_s", backend.connect_timeout_s, errors)
        _positive(f"{key}.max_connections", backend.max_connections, errors)
    if cfg.secondary is not None:
        if cfg.secondary.url is not None:
            _check_url("secondary.url", cfg.secondary.url, errors)
        elif not cfg.secondary.repeat_primary:
            errors.append("secondary: give a url, or repeat_primary: true")
    for key, port in (("listen.port", cfg.listen.port), ("admin.port", cfg.admin.port)):
        if isinstance(port, int) and not 0 <= port <= 65535:
            errors.append(f"{key}: must be a port number from 0 to 65535, not {port}")
    _positive("workers", cfg.workers, errors)
    s = cfg.shadowing
    _rate("shadowing.sample_rate", s.sample_rate, errors)
    _positive("shadowing.max_in_flight", s.max_in_flight, errors)
    _check_methods("shadowing.methods", s.methods, errors)
    if s.sticky is not None and (s.sticky.header is None) == (s.sticky.cookie is None):
        errors.append("shadowing.sticky: give exactly one of header or cookie")
    names: set[str] = set()
    for i, r in enumerate(cfg.routes):
        p = f"routes[{i}]"
        if not isinstance(r, Route):
            continue  # its shape is already reported
        if r.name in names:
            errors.append(f"{p}.name: route name {r.name!r} is used twice")
        names.add(r.name)
        if not r.name or r.name == "other" or not re.fullmatch(r"[A-Za-z0-9_.:/{}\-]+", r.name):
            errors.append(
                f"{p}.name: {r.name!r} is not usable as a route label (letters, digits, _ . : / - only)"
            )
        if not r.match.startswith("/"):
            errors.append(f"{p}.match: must start with '/', not {r.match!r}")
        elif "**" in r.match and not r.match.endswith("/**"):
            errors.append(f"{p}.match: '**' may only end the pattern (like /api/pitches/**)")
        if r.methods is not None:
            _check_methods(f"{p}.methods", r.methods, errors)
        if r.shadow.methods is not None:
            _check_methods(f"{p}.shadow.methods", r.shadow.methods, errors)
        if r.shadow.sample_rate is not None:
            _rate(f"{p}.shadow.sample_rate", r.shadow.sample_rate, errors)
        if r.compare is not None:
            _check_rules(f"{p}.compare", _as_rules(r.compare), errors)
        _check_gate(f"{p}.gate", r.gate.over(Gate()), errors)
    _check_rules("compare", cfg.compare, errors)
    _check_gate("gate", cfg.gate, errors)
    _positive("routing.max_routes", cfg.routing.max_routes, errors)
    _positive("store.samples_per_route", cfg.store.samples_per_route, errors)


def _check_url(key: str, url: str, errors: list[str]) -> None:
    if not url:
        if not any(e.startswith(f"{key}: environment variable") for e in errors):
            errors.append(f"{key}: is empty")
        return
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        errors.append(f"{key}: {url!r} is not an http:// or https:// URL with a host")
        return
    try:
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError:
        errors.append(f"{key}: {url!r} has an invalid port")
    if parts.query or parts.fragment:
        errors.append(f"{key}: {url!r} must not carry a query or fragment")


def _positive(key: str, value: float, errors: list[str]) -> None:
    if isinstance(value, int | float) and value <= 0:
        errors.append(f"{key}: must be greater than 0, not {value}")


def _rate(key: str, value: float, errors: list[str]) -> None:
    if isinstance(value, int | float) and not 0.0 <= value <= 1.0:
        errors.append(f"{key}: must be between 0 and 1, not {value}")


def _check_methods(key: str, methods: tuple[str, ...], errors: list[str]) -> None:
    for m in methods:
        if isinstance(m, str) and m.upper() not in STANDARD_METHODS:
            errors.append(f"{key}: {m!r} is not an HTTP method ({', '.join(STANDARD_METHODS)})")


def _check_rules(key: str, rules: CompareRules, errors: list[str]) -> None:
    # jsonpath owns the path grammar; imported here to keep the import graph one-way.
    from shadowproxy.jsonpath import parse

    def path_ok(where: str, path: str) -> None:
        try:
            parse(path)
        except ValueError as e:
            errors.append(f"{where}: {e}")

    for i, p in enumerate(rules.ignore):
        path_ok(f"{key}.ignore[{i}]", p)
    for i, u in enumerate(rules.unordered):
        path_ok(f"{key}.unordered[{i}].path", u.path)
    for i, t in enumerate(rules.tolerance):
        path_ok(f"{key}.tolerance[{i}].path", t.path)
        if t.abs < 0 or t.rel < 0:
            errors.append(f"{key}.tolerance[{i}]: abs and rel must not be negative")
    for i, n in enumerate(rules.normalize):
        path_ok(f"{key}.normalize[{i}].path", n.path)
        if (n.builtin is None) == (n.regex is None):
            errors.append(f"{key}.normalize[{i}]: give exactly one of builtin or regex")
        if n.regex is not None:
            try:
                re.compile(n.regex)
            except re.error as e:
                errors.append(f"{key}.normalize[{i}].regex: not a valid regular expression ({e})")


def _check_gate(key: str, g: Gate, errors: list[str]) -> None:
    _positive(f"{key}.min_samples", g.min_samples, errors)
    _rate(f"{key}.max_mismatch_rate", g.max_mismatch_rate, errors)
    _rate(f"{key}.max_shadow_error_rate", g.max_shadow_error_rate, errors)
    _positive(f"{key}.latency_slo_s", g.latency_slo_s, errors)
    _positive(f"{key}.max_latency_ratio", g.max_latency_ratio, errors)
    for name, v in (("latency_quantile", g.latency_quantile), ("confidence", g.confidence)):
        if isinstance(v, int | float) and not 0.0 < v < 1.0:
            errors.append(f"{key}.{name}: must be strictly between 0 and 1, not {v}")


def summary(cfg: Config) -> str:
    return (
        f"OK {cfg.source}: listen {cfg.listen.host}:{cfg.listen.port}, "
        f"admin {cfg.admin.host}:{cfg.admin.port}, "
        f"primary {cfg.primary.name or 'primary'} {cfg.primary.url}, shadow {cfg.shadow.name or 'shadow'} "
        f"{cfg.shadow.url}, {len(cfg.routes)} routes, shadowing "
        f"{'on' if cfg.shadowing.enabled else 'off'} ({', '.join(cfg.shadowing.methods)})"
    )
