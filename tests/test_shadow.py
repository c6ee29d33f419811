"""Shadow dispatch through a real proxy: whatever the shadow does, the client gets the
primary's answer byte for byte, and the shadow's outcome is recorded as data."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import random
import signal

import aiohttp
import orjson
import pytest
from aiohttp import web

from shadowproxy import config
from shadowproxy.shadow import ShadowPolicy
from tests.conftest import make_config

PRIMARY_BODY = b'{"id": 42, "name": "Ada", "tags": ["a", "b"]}'


async def json_primary(request: web.Request, up) -> web.Response:
    return web.Response(body=PRIMARY_BODY, content_type="application/json", headers={"X-Primary": "1"})


def answer_when(release: asyncio.Event):
    """An upstream handler that answers PRIMARY_BODY once `release` is set."""

    async def hold(request, up):
        await release.wait()
        return web.Response(body=PRIMARY_BODY, content_type="application/json")

    return hold


def value(r, name: str, **labels: str) -> float:
    r.sidecar.metrics.flush()
    return r.sidecar.metrics.registry.get_sample_value(name, labels) or 0.0


async def settle(r) -> None:
    """Wait until every shadow task has finished and the store has written it."""
    await r.sidecar.settle(10.0)
    await asyncio.to_thread(r.sidecar.store.flush)


async def get(url: str, **kw) -> tuple[int, bytes, dict[str, str]]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as s, s.get(url, **kw) as resp:
        return resp.status, await resp.read(), dict(resp.headers)


@pytest.fixture
async def primary(make_upstream):
    return await make_upstream(json_primary)


async def test_a_copy_goes_to_the_shadow_with_marker_and_same_request_id(
    primary, make_upstream, sidecar, tmp_path
):
    shadow = await make_upstream(json_primary)
    r = await sidecar(make_config(primary.url, shadow.url, tmp_path))
    status, body, _ = await get(r.proxy_url + "/api/users/42?x=1", headers={"X-Request-Id": "rid-1"})
    await settle(r)
    assert (status, body) == (200, PRIMARY_BODY)
    [copy] = shadow.seen
    assert copy.raw_path == "/api/users/42?x=1"
    assert copy.header("X-Shadow-Request") == "1"
    assert copy.header("X-Request-Id") == "rid-1"
    assert primary.seen[0].header("X-Shadow-Request") is None
    assert (
        value(r, "shadowproxy_comparisons_total", route="/api/users/{id}", method="GET", result="match") == 1
    )


async def test_the_client_gets_its_answer_while_the_shadow_still_hangs(
    primary, make_upstream, sidecar, tmp_path
):
    client_done = asyncio.Event()

    async def hang_until_client_done(request, up):
        # If the proxy waited for the shadow, the client would never be answered and the
        # client's own timeout would fail this test: causality, not a stopwatch.
        await client_done.wait()
        return web.Response(body=PRIMARY_BODY, content_type="application/json")

    shadow = await make_upstream(hang_until_client_done)
    cfg = make_config(primary.url, shadow.url, tmp_path)
    cfg = dataclasses.replace(cfg, shadow=dataclasses.replace(cfg.shadow, timeout_s=10.0))
    r = await sidecar(cfg)
    for _ in range(3):
        status, body, _ = await get(r.proxy_url + "/api/users/1")
        assert (status, body) == (200, PRIMARY_BODY)
    assert r.sidecar.dispatcher.in_flight == 3
    client_done.set()
    await settle(r)
    assert r.sidecar.dispatcher.in_flight == 0


@pytest.mark.parametrize("failure", ["refused", "reset", "timeout", "invalid_json", "huge_body", "http_500"])
async def test_every_shadow_failure_is_data_and_never_reaches_the_client(
    failure, primary, make_upstream, raw_upstream, sidecar, tmp_path, unused_tcp_port
):
    if failure == "refused":
        shadow_url = f"http://127.0.0.1:{unused_tcp_port}"
    elif failure == "reset":
        shadow_url = (
            await raw_upstream(b'HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n{"id": 4', close_after=True)
        ).url
    else:

        async def misbehave(request, up):
            if failure == "timeout":
                await asyncio.Event().wait()
            if failure == "invalid_json":
                return web.Response(body=b'{"id": 42, "name": ', content_type="application/json")
            if failure == "http_500":
                return web.Response(status=500, text="boom")
            return web.Response(
                body=b"[" + b"1," * (10 * 1024 * 1024) + b"1]", content_type="application/json"
            )

        shadow_url = (await make_upstream(misbehave)).url
    cfg = make_config(primary.url, shadow_url, tmp_path)
    cfg = dataclasses.replace(cfg, shadow=dataclasses.replace(cfg.shadow, timeout_s=0.5))
    r = await sidecar(cfg)
    status, body, headers = await get(r.proxy_url + "/api/users/7")
    assert (status, body, headers.get("X-Primary")) == (200, PRIMARY_BODY, "1")
    await settle(r)
    route = "/api/users/{id}"
    shadow_codes = {
        code: value(
            r, "shadowproxy_upstream_requests_total", backend="shadow", route=route, method="GET", code=code
        )
        for code in ("error", "timeout", "200", "500")
    }
    expected_code = {"refused": "error", "reset": "error", "timeout": "timeout", "http_500": "500"}.get(
        failure, "200"
    )
    assert shadow_codes[expected_code] == 1, shadow_codes
    mismatches = value(r, "shadowproxy_comparisons_total", route=route, method="GET", result="mismatch")
    assert mismatches == (1 if failure in ("invalid_json", "huge_body", "http_500") else 0)


def big_doc(n: int) -> bytes:
    """JSON over compare_process_min_bytes, so a differing pair goes to the worker."""
    return orjson.dumps({"items": [{"id": i, "n": n, "pad": "x" * 40} for i in range(400)]})


@pytest.mark.parametrize("offload_bytes", [0, 16 * 1024, 10**9])
async def test_large_differing_answers_are_compared_in_the_worker_and_counted_the_same(
    offload_bytes, make_upstream, sidecar, tmp_path
):
    async def answer(n):
        async def handler(request, up):
            return web.Response(body=big_doc(n), content_type="application/json")

        return await make_upstream(handler)

    primary, shadow = await answer(1), await answer(2)
    cfg = make_config(primary.url, shadow.url, tmp_path)
    cfg = dataclasses.replace(
        cfg, shadowing=dataclasses.replace(cfg.shadowing, compare_process_min_bytes=offload_bytes)
    )
    r = await sidecar(cfg)
    assert r.sidecar.comparer is not None and r.sidecar.comparer.pid is not None
    for _ in range(3):
        status, body, _ = await get(r.proxy_url + "/api/items")
        assert (status, body) == (200, big_doc(1))
    await settle(r)
    route = "/api/items"
    assert value(r, "shadowproxy_comparisons_total", route=route, method="GET", result="mismatch") == 3
    assert value(r, "shadowproxy_field_mismatches_total", route=route, field="$.items[*].n") == 3
    assert r.sidecar.comparer.answered == (3 if offload_bytes < 2 * len(big_doc(1)) else 0)


async def test_a_busy_worker_sheds_shadow_calls_before_their_answers_are_known(
    make_upstream, sidecar, tmp_path
):
    async def answer(n):
        async def handler(request, up):
            return web.Response(body=big_doc(n), content_type="application/json")

        return await make_upstream(handler)

    primary, shadow = await answer(1), await answer(2)
    r = await sidecar(make_config(primary.url, shadow.url, tmp_path))
    comparer = r.sidecar.comparer
    os.kill(comparer.pid, signal.SIGSTOP)  # a worker that has fallen behind
    try:
        for _ in range(40):  # more than half its queue of 64
            assert (await get(r.proxy_url + "/api/items"))[:2] == (200, big_doc(1))
        assert comparer.busy
        status, body, _ = await get(r.proxy_url + "/api/items")  # still served, not shadowed
        assert (status, body) == (200, big_doc(1))
    finally:
        os.kill(comparer.pid, signal.SIGCONT)
    await settle(r)
    route = "/api/items"
    assert value(r, "shadowproxy_shadow_skipped_total", route=route, reason="compare_busy") >= 1
    shadowed = value(
        r, "shadowproxy_upstream_requests_total", backend="shadow", route=route, method="GET", code="200"
    )
    # Every pair that was shadowed was compared, and found to differ: none dropped on the way.
    assert value(r, "shadowproxy_comparisons_total", route=route, method="GET", result="mismatch") == shadowed
    assert value(r, "shadowproxy_comparisons_total", route=route, method="GET", result="match") == 0


async def test_unsafe_methods_are_not_shadowed_by_default(primary, make_upstream, sidecar, tmp_path):
    shadow = await make_upstream(json_primary)
    r = await sidecar(make_config(primary.url, shadow.url, tmp_path))
    async with aiohttp.ClientSession() as s:
        for method in ("POST", "PUT", "PATCH", "DELETE"):
            async with s.request(method, r.proxy_url + "/api/pitches", data=b"{}") as resp:
                assert resp.status == 200
    await settle(r)
    assert shadow.seen == []
    assert len(primary.seen) == 4
    assert value(r, "shadowproxy_shadow_skipped_total", route="/api/pitches", reason="unsafe_method") == 4


async def test_a_route_can_opt_in_to_shadowing_writes(primary, make_upstream, sidecar, tmp_path):
    shadow = await make_upstream(json_primary)
    route = config.Route(
        name="branch_db", match="/api/drafts/**", shadow=config.RouteShadow(methods=("POST",))
    )
    r = await sidecar(make_config(primary.url, shadow.url, tmp_path, routes=(route,)))
    async with aiohttp.ClientSession() as s, s.post(r.proxy_url + "/api/drafts/1", data=b'{"a": 1}') as resp:
        assert resp.status == 200
    await settle(r)
    assert [(x.method, x.body) for x in shadow.seen] == [("POST", b'{"a": 1}')]


async def test_bodies_over_the_limit_are_forwarded_whole_but_not_shadowed(
    primary, make_upstream, sidecar, tmp_path
):
    shadow = await make_upstream(json_primary)
    route = config.Route(name="upload", match="/api/upload", shadow=config.RouteShadow(methods=("PUT",)))
    cfg = make_config(primary.url, shadow.url, tmp_path, routes=(route,))
    cfg = dataclasses.replace(cfg, shadowing=dataclasses.replace(cfg.shadowing, max_body_bytes=1000))
    r = await sidecar(cfg)
    payload = bytes(random.Random(1).randbytes(5000))
    async with aiohttp.ClientSession() as s, s.put(r.proxy_url + "/api/upload", data=payload) as resp:
        assert resp.status == 200
    await settle(r)
    assert primary.seen[-1].body == payload
    assert shadow.seen == []
    assert value(r, "shadowproxy_shadow_skipped_total", route="upload", reason="body_too_large") == 1


async def test_when_the_in_flight_cap_is_reached_requests_are_skipped_not_queued(
    primary, make_upstream, sidecar, tmp_path
):
    release = asyncio.Event()

    shadow = await make_upstream(answer_when(release))
    cfg = make_config(primary.url, shadow.url, tmp_path)
    cfg = dataclasses.replace(
        cfg,
        shadowing=dataclasses.replace(cfg.shadowing, max_in_flight=2),
        shadow=dataclasses.replace(cfg.shadow, timeout_s=10.0),
    )
    r = await sidecar(cfg)
    for _ in range(5):
        status, body, _ = await get(r.proxy_url + "/api/users/1")
        assert (status, body) == (200, PRIMARY_BODY)
    assert value(r, "shadowproxy_shadow_skipped_total", route="/api/users/{id}", reason="saturated") == 3
    assert value(r, "shadowproxy_shadow_in_flight") == 2
    release.set()
    await settle(r)
    assert value(r, "shadowproxy_shadow_in_flight") == 0


async def test_a_shadow_call_never_waits_for_a_connection(primary, make_upstream, sidecar, tmp_path):
    """With every shadow connection busy, a request is skipped, not queued: a queued call would
    be sent late and its wait would count in the shadow's latency."""
    release = asyncio.Event()

    shadow = await make_upstream(answer_when(release))
    cfg = make_config(primary.url, shadow.url, tmp_path)
    cfg = dataclasses.replace(cfg, shadow=dataclasses.replace(cfg.shadow, max_connections=2, timeout_s=10.0))
    assert cfg.shadowing.max_in_flight > 5
    r = await sidecar(cfg)
    for _ in range(5):
        status, body, _ = await get(r.proxy_url + "/api/users/1")
        assert (status, body) == (200, PRIMARY_BODY)
    assert value(r, "shadowproxy_shadow_skipped_total", route="/api/users/{id}", reason="saturated") == 3
    release.set()
    await settle(r)
    assert len(shadow.seen) == 2
    labels = {"backend": "shadow", "route": "/api/users/{id}", "method": "GET"}
    assert value(r, "shadowproxy_upstream_duration_seconds_count", **labels) == 2
    # Once the two are answered, their connections are free again.
    await get(r.proxy_url + "/api/users/1")
    await settle(r)
    assert len(shadow.seen) == 3


async def test_a_wait_for_a_primary_connection_is_not_the_primarys_latency(make_upstream, sidecar, tmp_path):
    """Two requests over one primary connection: the second waits for the first's answer in
    our pool. Its latency must not count that wait, or the primary looks slower than it is
    and the per-pair latency ratio goes easy on the shadow."""
    calls = 0

    async def first_slow(request, up):
        nonlocal calls
        calls += 1
        if calls == 1:
            await asyncio.sleep(0.4)  # the slow backend under test, not a synchronisation
        return web.Response(body=PRIMARY_BODY, content_type="application/json")

    primary = await make_upstream(first_slow)
    shadow = await make_upstream(json_primary)
    cfg = make_config(primary.url, shadow.url, tmp_path)
    cfg = dataclasses.replace(cfg, primary=dataclasses.replace(cfg.primary, max_connections=1))
    r = await sidecar(cfg)
    if r.sidecar.cfg.engine != "fast":
        pytest.skip("aiohttp's client gives no hook between its pool and the send")
    answers = await asyncio.gather(get(r.proxy_url + "/api/users/1"), get(r.proxy_url + "/api/users/1"))
    assert [(s, b) for s, b, _ in answers] == [(200, PRIMARY_BODY)] * 2
    await settle(r)
    labels = {"backend": "primary", "route": "/api/users/{id}", "method": "GET"}
    assert value(r, "shadowproxy_upstream_duration_seconds_count", **labels) == 2
    # 0.4 s for the slow one and next to nothing for the other, which waited 0.4 s.
    assert 0.4 <= value(r, "shadowproxy_upstream_duration_seconds_sum", **labels) < 0.7


async def test_with_the_secondary_pool_full_pairs_go_on_without_it(primary, make_upstream, sidecar, tmp_path):
    """The secondary's evidence is optional: a pair never waits for its connection."""
    release = asyncio.Event()

    shadow = await make_upstream(json_primary)
    secondary = await make_upstream(answer_when(release))
    cfg = make_config(primary.url, shadow.url, tmp_path, secondary=config.Secondary(url=secondary.url))
    # The secondary's pool takes the primary's limit.
    cfg = dataclasses.replace(cfg, primary=dataclasses.replace(cfg.primary, max_connections=1))
    r = await sidecar(cfg)
    for _ in range(3):
        status, body, _ = await get(r.proxy_url + "/api/users/1")
        assert (status, body) == (200, PRIMARY_BODY)
    release.set()
    await settle(r)
    # The first pair had its secondary; the other two were compared without one, instead
    # of queueing for its connection and asking it late.
    assert len(shadow.seen) == 3
    assert len(secondary.seen) == 1
    labels = {"route": "/api/users/{id}", "method": "GET", "result": "match"}
    assert value(r, "shadowproxy_comparisons_total", **labels) == 3


async def test_websocket_upgrades_are_never_shadowed(make_upstream, sidecar, tmp_path):
    async def ws(request, up):
        w = web.WebSocketResponse()
        await w.prepare(request)
        await w.close()
        return w

    primary = await make_upstream(ws, read_body=False)
    shadow = await make_upstream()
    r = await sidecar(make_config(primary.url, shadow.url, tmp_path))
    async with aiohttp.ClientSession() as s, s.ws_connect(r.proxy_url + "/ws") as w:
        await w.receive()
    await settle(r)
    assert shadow.seen == []
    assert value(r, "shadowproxy_shadow_skipped_total", route="/ws", reason="websocket") == 1


# ---- the policy alone (pure)


def policy_for(**shadowing) -> ShadowPolicy:
    cfg = config.Config(
        primary=config.Backend(url="http://a"),
        shadow=config.Backend(url="http://b"),
        shadowing=config.Shadowing(**shadowing),
        routes=(
            config.Route(name="half", match="/half", shadow=config.RouteShadow(sample_rate=0.5)),
            config.Route(name="off", match="/off", shadow=config.RouteShadow(enabled=False)),
        ),
    )
    return ShadowPolicy(cfg, random.Random(3))


def no_headers(_name: str) -> str | None:
    return None


@pytest.mark.parametrize(
    ("route", "method", "websocket", "reason"),
    [
        ("x", "GET", False, None),
        ("x", "HEAD", False, None),
        ("x", "OPTIONS", False, None),
        ("x", "PATCH", False, "unsafe_method"),
        ("x", "POST", False, "unsafe_method"),
        ("x", "GET", True, "websocket"),
        ("off", "GET", False, "disabled"),
    ],
)
def test_policy_reasons(route, method, websocket, reason):
    assert policy_for().decide(route, method, no_headers, websocket) == reason


def test_sampling_rates_global_and_per_route():
    p = policy_for(sample_rate=0.1)
    draws = [p.decide("x", "GET", no_headers) for _ in range(4000)]
    assert 0.07 < draws.count(None) / 4000 < 0.13
    half = [p.decide("half", "GET", no_headers) for _ in range(4000)]
    assert 0.45 < half.count(None) / 4000 < 0.55
    assert set(draws) == {None, "sampled_out"}


def test_sticky_sampling_keeps_a_user_all_in_or_all_out():
    p = policy_for(sample_rate=0.5, sticky=config.Sticky(header="X-User-Id"))
    verdicts = {}
    for user in range(200):

        def header(name: str, u: int = user) -> str | None:
            return str(u) if name == "X-User-Id" else None

        seen = {p.decide("x", "GET", header) for _ in range(5)}
        assert len(seen) == 1
        verdicts[user] = seen.pop()
    assert 60 < list(verdicts.values()).count(None) < 140


def test_sticky_by_cookie():
    p = policy_for(sample_rate=0.5, sticky=config.Sticky(cookie="sid"))
    outcomes = {
        p.decide("x", "GET", lambda n: "theme=dark; sid=user-17" if n == "Cookie" else None)
        for _ in range(20)
    }
    assert len(outcomes) == 1


async def test_a_shadow_that_keeps_failing_opens_the_breaker(primary, make_upstream, sidecar, tmp_path):
    async def hang(request, up):
        await asyncio.Event().wait()

    shadow = await make_upstream(hang)
    cfg = make_config(primary.url, shadow.url, tmp_path)
    cfg = dataclasses.replace(
        cfg,
        shadow=dataclasses.replace(cfg.shadow, timeout_s=0.2),
        shadowing=dataclasses.replace(
            cfg.shadowing, breaker=config.Breaker(failures=3, cool_off_s=60.0, max_cool_off_s=60.0)
        ),
    )
    r = await sidecar(cfg)
    for _ in range(3):
        assert (await get(r.proxy_url + "/api/users/1"))[:2] == (200, PRIMARY_BODY)
    await settle(r)  # the three copies have timed out
    for _ in range(5):
        assert (await get(r.proxy_url + "/api/users/1"))[:2] == (200, PRIMARY_BODY)
    await settle(r)
    assert len(shadow.seen) == 3
    route = "/api/users/{id}"
    assert value(r, "shadowproxy_shadow_skipped_total", route=route, reason="circuit_open") == 5
    assert value(r, "shadowproxy_upstream_requests_total", backend="shadow", route=route, method="GET",
                 code="timeout") == 3  # fmt: skip
