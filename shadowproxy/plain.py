"""Exchanges as plain tuples of str, bytes and numbers, for the pipes to our child processes
(the store's writer, the comparison worker), and back.

Pickle reduces a Value through `__reduce__`, which reads every field by name: 50 mismatching
50 KB pairs with 100 field differences each took 28 ms to pickle, compiled, and all that time
the shipper thread held the GIL the event loop waits for. As plain tuples, encoding and
pickling them took 5 ms. Each `x_from` undoes its `x` exactly (tests/test_plain.py).
"""

from __future__ import annotations

from typing import Any

from shadowproxy.exchange import Comparison, Exchange, FieldDiff, RequestSnapshot, UpstreamResult

Plain = tuple[Any, ...]


def result(r: UpstreamResult) -> Plain:
    return (
        r.backend,
        r.status,
        r.headers,
        r.body,
        r.latency_s,
        r.body_size,
        r.truncated,
        r.error,
        r.error_detail,
    )


def result_from(t: Plain) -> UpstreamResult:
    return UpstreamResult(*t)


def comparison(c: Comparison) -> Plain:
    fields = tuple([(f.path, f.kind, f.primary, f.shadow) for f in c.fields])
    return (c.match, c.parts, fields, c.body_mode, c.hashed_only)


def comparison_from(t: Plain) -> Comparison:
    match, parts, fields, mode, hashed = t
    return Comparison(match, parts, tuple([FieldDiff(*f) for f in fields]), mode, hashed)


def exchange(e: Exchange) -> Plain:
    q = e.request
    return (
        (q.method, q.path, q.query, q.headers, q.body, q.request_id, q.route, q.received_at),
        result(e.primary),
        result(e.shadow),
        None if e.comparison is None else comparison(e.comparison),
        None if e.secondary is None else result(e.secondary),
        e.noise_paths,
        e.at,
    )


def exchange_from(t: Plain) -> Exchange:
    request, primary, shadow, cmp, secondary, noise, at = t
    return Exchange(
        RequestSnapshot(*request),
        result_from(primary),
        result_from(shadow),
        None if cmp is None else comparison_from(cmp),
        None if secondary is None else result_from(secondary),
        noise,
        at,
    )
