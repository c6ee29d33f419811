"""The shadow side on a warm connection: on the fast engine a shadow call that finds an idle
connection runs on callbacks, without a task (FastUpstream.begin_fetch). Each way such a
call can end must be recorded as the task path records it; the first request of every test
warms the connection, the ones after it take the callback path."""

from __future__ import annotations

import asyncio
import dataclasses

import aiohttp
import pytest
from aiohttp import web

from shadowproxy.store_read import RouteSummary
from tests.conftest import make_config
from tests.test_shadow import PRIMARY_BODY, get, json_primary, settle, value

ROUTE = "/api/users/{id}"


@pytest.fixture
async def primary(make_upstream):
    return await make_upstream(json_primary)


def shadow_codes(r) -> dict[str, float]:
    return {
        code: value(
            r, "shadowproxy_upstream_requests_total", backend="shadow", route=ROUTE, method="GET", code=code
        )
        for code in ("error", "timeout", "200", "500")
    }


def summary(r) -> RouteSummary:
    summaries: list[RouteSummary] = r.sidecar.store.route_summaries()
    return {s.route: s for s in summaries}[ROUTE]


def compared(r, result: str) -> float:
    return value(r, "shadowproxy_comparisons_total", route=ROUTE, method="GET", result=result)


async def test_a_warm_shadow_call_runs_without_a_task(primary, make_upstream, sidecar, tmp_path):
    release = asyncio.Event()
    calls = 0

    async def second_waits(request, up):
        nonlocal calls
        calls += 1
        if calls == 2:
            await release.wait()
        return web.Response(body=PRIMARY_BODY, content_type="application/json")

    shadow = await make_upstream(second_waits)
    r = await sidecar(make_config(primary.url, shadow.url, tmp_path))
    await get(r.proxy_url + "/api/users/1")
    await settle(r)
    status, body, _ = await get(r.proxy_url + "/api/users/2")
    assert (status, body) == (200, PRIMARY_BODY)
    assert r.sidecar.dispatcher.in_flight == 1
    # The aiohttp engine has no callback path: its shadow call is a task.
    assert len(r.sidecar.tracker) == (0 if r.sidecar.cfg.engine == "fast" else 1)
    release.set()
    await settle(r)
    assert compared(r, "match") == 2
    assert r.sidecar.dispatcher.in_flight == 0


@pytest.mark.parametrize("failure", ["timeout", "http_500", "invalid_json", "huge_body", "reset"])
async def test_every_failure_on_a_warm_connection_is_data(failure, primary, make_upstream, sidecar, tmp_path):
    calls = 0

    async def misbehave_second(request, up):
        nonlocal calls
        calls += 1
        if calls == 1:
            return web.Response(body=PRIMARY_BODY, content_type="application/json")
        if failure == "timeout":
            await asyncio.Event().wait()
        if failure == "http_500":
            return web.Response(status=500, text="boom")
        if failure == "invalid_json":
            return web.Response(body=b'{"id": 42, "name": ', content_type="application/json")
        if failure == "reset":
            resp = web.StreamResponse(headers={"Content-Length": "1000"})
            await resp.prepare(request)
            await resp.write(b'{"id": 4')
            assert request.transport is not None
            request.transport.abort()
            return resp
        # Far past max_response_bytes: the body stops at the capture, the pair still compares.
        return web.Response(body=b"[" + b"1," * (10 * 1024 * 1024) + b"1]", content_type="application/json")

    shadow = await make_upstream(misbehave_second)
    cfg = make_config(primary.url, shadow.url, tmp_path)
    cfg = dataclasses.replace(cfg, shadow=dataclasses.replace(cfg.shadow, timeout_s=0.5))
    r = await sidecar(cfg)
    await get(r.proxy_url + "/api/users/1")
    await settle(r)
    status, body, _ = await get(r.proxy_url + "/api/users/7")
    assert (status, body) == (200, PRIMARY_BODY)
    await settle(r)
    expected = {"timeout": "timeout", "http_500": "500", "reset": "error"}.get(failure, "200")
    codes = shadow_codes(r)
    assert codes[expected] == (2 if expected == "200" else 1), codes
    assert compared(r, "match") == 1
    assert compared(r, "mismatch") == (1 if failure in ("invalid_json", "huge_body", "http_500") else 0)
    assert r.sidecar.dispatcher.in_flight == 0


async def test_an_idle_connection_the_shadow_closed_is_retried_once_on_another(primary, sidecar, tmp_path):
    """The shadow drops a kept-alive connection as the next request arrives on it, before a
    byte of answer: a safe request is sent again, on a new connection."""
    received = 0
    answer = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%b" % (
        len(PRIMARY_BODY),
        PRIMARY_BODY,
    )

    async def one_answer_per_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal received
        try:
            for n in (1, 2):
                await reader.readuntil(b"\r\n\r\n")
                received += 1
                if n == 2:
                    return  # closes without answering
                writer.write(answer)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(one_answer_per_connection, "127.0.0.1", 0)
    try:
        shadow_url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
        r = await sidecar(make_config(primary.url, shadow_url, tmp_path))
        for i in range(3):
            assert (await get(r.proxy_url + f"/api/users/{i}"))[0] == 200
            await settle(r)
        codes = shadow_codes(r)
        assert (codes["200"], codes["error"], compared(r, "match")) == (3, 0, 3), codes
        assert received == 5  # the first request once, each later one twice
    finally:
        server.close()
        await server.wait_closed()


async def test_a_pair_whose_primary_never_finishes_is_dropped_after_its_timeout(
    make_upstream, sidecar, tmp_path
):
    """A primary that keeps trickling its body (each chunk within its idle timeout) never
    completes: the pair is dropped primary.timeout_s + shadow.timeout_s + 1 s after it began."""
    stop = asyncio.Event()

    async def trickle(request, up):
        resp = web.StreamResponse(headers={"Content-Type": "application/json"})
        await resp.prepare(request)
        await resp.write(b"[")
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), 0.1)
            except TimeoutError:
                await resp.write(b"1,")
        await resp.write(b"1]")
        return resp

    shadow_called = asyncio.Event()

    async def quick(request, up):
        shadow_called.set()
        return web.Response(body=b"[1]", content_type="application/json")

    slow_primary = await make_upstream(trickle)
    shadow = await make_upstream(quick)
    cfg = make_config(slow_primary.url, shadow.url, tmp_path)
    cfg = dataclasses.replace(
        cfg,
        primary=dataclasses.replace(cfg.primary, timeout_s=0.3),
        shadow=dataclasses.replace(cfg.shadow, timeout_s=0.5),
    )
    r = await sidecar(cfg)
    client = asyncio.create_task(get(r.proxy_url + "/api/users/1"))  # noqa: TID251 - the test's own client
    try:
        await shadow_called.wait()
        # Dropped while the client still reads: the pair was waiting on a deadline, not the body.
        assert await r.sidecar.settle(10.0) == 0
        assert not client.done()
        assert compared(r, "match") + compared(r, "mismatch") == 0
        assert shadow_codes(r)["200"] == 1
        assert value(r, "shadowproxy_shadow_dropped_total", reason="pair_expired") == 1
        await asyncio.to_thread(r.sidecar.store.flush)
        assert summary(r).lost == {"pair_expired": 1}
    finally:
        stop.set()
        await client


async def test_pairs_still_in_flight_at_shutdown_are_abandoned(primary, make_upstream, sidecar, tmp_path):
    calls = 0

    async def hang_after_the_first(request, up):
        nonlocal calls
        calls += 1
        if calls > 1:
            await asyncio.Event().wait()
        return web.Response(body=PRIMARY_BODY, content_type="application/json")

    shadow = await make_upstream(hang_after_the_first)
    cfg = make_config(primary.url, shadow.url, tmp_path)
    cfg = dataclasses.replace(cfg, shadow=dataclasses.replace(cfg.shadow, timeout_s=30.0))
    r = await sidecar(cfg)
    for i in range(3):  # the second on the warm connection, the third on a new one
        assert (await get(r.proxy_url + f"/api/users/{i}"))[0] == 200
        if i == 0:
            await settle(r)
    assert r.sidecar.dispatcher.in_flight == 2
    assert await r.sidecar.settle(0.2) == 2
    assert r.sidecar.dispatcher.in_flight == 0
    assert value(r, "shadowproxy_shadow_dropped_total", reason="pair_abandoned") == 2
    assert len(r.sidecar.tracker) == 0
    assert compared(r, "match") == 1
    # The store counts them too, so that the route's requests add up in the report.
    await asyncio.to_thread(r.sidecar.store.flush)
    s = summary(r)
    assert (s.requests, s.shadowed, s.lost) == (3, 1, {"pair_abandoned": 2})


async def test_warm_head_requests_end_at_their_head(primary, make_upstream, sidecar, tmp_path):
    """A HEAD answer has a Content-Length and no body: the call ends at the head, and the
    connection serves the next call."""
    shadow = await make_upstream(json_primary)
    r = await sidecar(make_config(primary.url, shadow.url, tmp_path))
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as s:
        for i in range(3):
            async with s.head(r.proxy_url + f"/api/users/{i}") as resp:
                assert resp.status == 200
            await settle(r)
        await get(r.proxy_url + "/api/users/9")
        await settle(r)
    heads = value(r, "shadowproxy_comparisons_total", route=ROUTE, method="HEAD", result="match")
    assert (heads, compared(r, "match"), shadow_codes(r)["error"]) == (3, 1, 0)
