"""Evidence from Prometheus: PromQL sent to, and answers parsed from, a real HTTP server on
loopback that answers /api/v1/query the way Prometheus does (canned vectors)."""

from __future__ import annotations

import asyncio
import base64
import socket
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web

from shadowproxy import config, gate
from shadowproxy.evidence import LATENCY_BUCKETS
from shadowproxy.promsource import PrometheusError, evidence_from_prometheus, queries


def vec(*points: tuple[dict[str, str], float | str]) -> list[dict[str, Any]]:
    return [{"metric": labels, "value": [1764324000.0, str(v)]} for labels, v in points]


def buckets(route: str, backend: str, per_bound: dict[float, float], total: float) -> list[dict[str, Any]]:
    """Cumulative buckets from {bound: increase}; bounds not given repeat the last value."""
    out, running = [], 0.0
    for b in LATENCY_BUCKETS:
        running = per_bound.get(b, running)
        out.append(({"route": route, "backend": backend, "le": f"{b:g}"}, running))
    out.append(({"route": route, "backend": backend, "le": "+Inf"}, total))
    return vec(*out)


# What a Prometheus scraping two sidecars would answer; increase() extrapolates, so not integers.
CANNED: dict[str, list[dict[str, Any]]] = {
    "shadowproxy_requests_total": vec(({"route": "user"}, 4001.6), ({"route": "/api/uploads/{id}"}, 12.2)),
    "shadowproxy_upstream_requests_total": vec(
        ({"route": "user", "code": "200"}, 3890.4),
        ({"route": "user", "code": "404"}, 100.0),
        ({"route": "user", "code": "503"}, 6.3),
        ({"route": "user", "code": "timeout"}, 2.0),
        ({"route": "user", "code": "error"}, 1.0),
    ),
    "shadowproxy_comparisons_total": vec(
        ({"route": "user", "result": "match"}, 3950.7),
        ({"route": "user", "result": "mismatch"}, 40.4),
    ),
    "shadowproxy_mismatches_total": vec(
        ({"route": "user", "part": "body"}, 38.0),
        ({"route": "user", "part": "headers"}, 4.1),
        ({"route": "user", "part": "status"}, 0.2),
    ),
    "shadowproxy_field_mismatches_total": vec(
        ({"route": "user", "field": "$.title"}, 30.2),
        ({"route": "user", "field": "$.updated_at"}, 9.9),
        ({"route": "user", "field": "other"}, 0.3),
    ),
    "shadowproxy_shadow_skipped_total": vec(
        ({"route": "user", "reason": "sampled_out"}, 1.0),
        ({"route": "/api/uploads/{id}", "reason": "unsafe_method"}, 12.2),
    ),
    "shadowproxy_hashed_only_total": vec(({"route": "user"}, "NaN")),
    "shadowproxy_upstream_duration_seconds_bucket": [
        *buckets("user", "primary", {0.01: 100.0, 0.02: 2000.4, 0.03: 3999.6}, 4000.2),
        # Rounding makes the 0.05 bucket dip under the 0.03 one; the parser must not let it.
        *buckets("user", "shadow", {0.02: 1000.0, 0.03: 3500.6, 0.05: 3500.4, 0.5: 3990.0}, 4000.0),
    ],
    "shadowproxy_upstream_duration_seconds_sum": vec(
        ({"route": "user", "backend": "primary"}, 90.5),
        ({"route": "user", "backend": "shadow"}, 120.25),
    ),
}


@dataclass
class FakePrometheus:
    url: str = ""
    seen: list[str] = field(default_factory=list)
    auth: list[str | None] = field(default_factory=list)
    fail_with: str | None = None


@pytest.fixture
async def prometheus() -> AsyncIterator[FakePrometheus]:
    fake = FakePrometheus()

    async def query(request: web.Request) -> web.Response:
        promql = request.query.get("query", "")
        fake.seen.append(promql)
        fake.auth.append(request.headers.get("Authorization"))
        if fake.fail_with is not None:
            body = {"status": "error", "errorType": "bad_data", "error": fake.fail_with}
            return web.json_response(body, status=400)
        result = next((v for name, v in CANNED.items() if f"({name}" in promql), [])
        return web.json_response({"status": "success", "data": {"resultType": "vector", "result": result}})

    app = web.Application()
    app.router.add_get("/api/v1/query", query)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    fake.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    yield fake
    await runner.cleanup()


CFG = config.loads(
    "primary: {url: 'http://a'}\nshadow: {url: 'http://b'}\n"
    "routes: [{name: user, match: '/api/users/{id}'}, {name: orders, match: '/api/orders/**'}]\n",
    env={},
)


async def fetch(fake: FakePrometheus, window: str = "2h") -> Any:
    call: Callable[[], Any] = lambda: evidence_from_prometheus(fake.url, window, CFG)  # noqa: E731
    # The source blocks (urllib, a CLI call); the server shares this loop, so run it aside.
    return await asyncio.to_thread(call)


async def test_promql_sent(prometheus: FakePrometheus) -> None:
    await fetch(prometheus, "1h30m")
    assert sorted(prometheus.seen) == sorted(queries("1h30m").values())
    assert "sum by (route, result) (increase(shadowproxy_comparisons_total[1h30m]))" in prometheus.seen
    assert (
        'sum by (route, code) (increase(shadowproxy_upstream_requests_total{backend="shadow"}[1h30m]))'
        in prometheus.seen
    )
    assert (
        "sum by (route, backend, le) (increase(shadowproxy_upstream_duration_seconds_bucket"
        '{backend=~"primary|shadow"}[1h30m]))' in prometheus.seen
    )


async def test_counts_are_rounded_and_consistent(prometheus: FakePrometheus) -> None:
    ev = await fetch(prometheus)
    assert ev.source == f"prometheus:{prometheus.url}"
    assert ev.window == "last 2h (increase() summed over every instance); no series for declared orders"
    by = {r.route: r for r in ev.routes}
    assert sorted(by) == ["/api/uploads/{id}", "user"]
    u = by["user"]
    assert (u.requests, u.shadowed, u.compared, u.mismatches) == (4002, 4000, 3991, 40)
    assert (u.shadow_errors, u.shadow_timeouts) == (9, 2)  # 6.3 + 2 + 1.0 rounded once; a 404 is no error
    assert u.mismatches_by_part == {"body": 38, "headers": 4}
    assert [(f.path, f.raw) for f in u.fields] == [("$.title", 30), ("$.updated_at", 10)]
    assert u.skipped == {"sampled_out": 1}
    assert u.hashed_only == 0  # NaN reads as nothing
    assert u.latency_pairs == ()
    p, s = u.primary_latency, u.shadow_latency
    assert p.counts[LATENCY_BUCKETS.index(0.02)] == 2000 and p.total == 4000
    assert p.sum_s == pytest.approx(90.5)
    assert list(s.counts) == sorted(s.counts), "cumulative buckets never decrease"
    assert s.over(0.5) == (10, True)
    assert p.quantile_range(0.95) == (0.02, 0.03)
    assert by["/api/uploads/{id}"].skipped == {"unsafe_method": 12}


async def test_prometheus_evidence_goes_through_the_gate(prometheus: FakePrometheus) -> None:
    ev = await fetch(prometheus)
    d = gate.evaluate(CFG, ev)
    user = d.routes[0]
    assert user.verdict == "NO-GO"  # 40 mismatches in 3991 against 0.1%
    ratio = user.check("latency_ratio")
    assert ratio is not None and ratio.p_value is None and "no paired samples" in ratio.reason


async def test_credentials_are_sent_but_never_shown(prometheus: FakePrometheus) -> None:
    with_auth = FakePrometheus(url=prometheus.url.replace("http://", "http://ops:s%3Acret@"))
    ev = await fetch(with_auth)
    assert set(prometheus.auth) == {"Basic " + base64.b64encode(b"ops:s:cret").decode()}
    assert ev.source == f"prometheus:{prometheus.url}"
    assert "cret" not in repr(ev)


async def test_errors_are_reported(prometheus: FakePrometheus) -> None:
    prometheus.fail_with = 'parse error: unexpected "}"'
    with pytest.raises(PrometheusError, match=r"HTTP 400 parse error: unexpected"):
        await fetch(prometheus)
    with pytest.raises(ValueError, match="not a Prometheus duration"):
        await fetch(prometheus, "1h]) or vector(1")
    with socket.socket() as s:  # a port that was just free: nothing listens there
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(PrometheusError, match="cannot reach Prometheus"):
        await fetch(FakePrometheus(url=f"http://127.0.0.1:{port}"))
