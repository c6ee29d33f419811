"""Read a config file: expand ${VAR}, validate, and build the frozen objects of config.py.

The schema *is* config.py's dataclasses: `_build` walks their type hints, so a key that is
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
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import yaml

from shadowproxy.config import (
    STANDARD_METHODS,
    CompareRules,
    Config,
    ConfigError,
    Gate,
    Route,
    route_rules,
)

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
    _positive("shadowing.breaker.failures", s.breaker.failures, errors)
    _positive("shadowing.breaker.cool_off_s", s.breaker.cool_off_s, errors)
    if s.breaker.max_cool_off_s < s.breaker.cool_off_s:
        errors.append("shadowing.breaker.max_cool_off_s: must not be less than cool_off_s")
    _check_methods("shadowing.methods", s.methods, errors)
    if s.compare_process_min_bytes < 0:
        errors.append(
            f"shadowing.compare_process_min_bytes: must not be negative, not {s.compare_process_min_bytes}"
        )
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
            _check_rules(f"{p}.compare", route_rules(r.compare), errors)
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
