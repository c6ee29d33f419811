"""The primary path: the client must not be able to tell the proxy is there."""

from __future__ import annotations

import asyncio
import gzip
import tracemalloc

import aiohttp
import pytest
from aiohttp import web
from yarl import URL

from tests.conftest import make_config, raw_http, split_response

METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "PROPFIND"]


@pytest.fixture
async def pair(make_upstream, sidecar, tmp_path):
    """A primary that echoes, a shadow that echoes, and the proxy in front."""
    primary = await make_upstream()
    shadow = await make_upstream()
    r = await sidecar(make_config(primary.url, shadow.url, tmp_path))
    return primary, shadow, r


@pytest.mark.parametrize("method", METHODS)
async def test_every_method_reaches_the_primary_with_its_body(pair, method):
    primary, _, r = pair
    async with (
        aiohttp.ClientSession() as s,
        s.request(method, r.proxy_url + "/api/x", data=b"payload") as resp,
    ):
        assert resp.status == 200
    seen = primary.seen[-1]
    assert seen.method == method
    assert seen.body == b"payload"


async def test_path_and_query_bytes_reach_the_primary_unchanged(pair):
    primary, _, r = pair
    raw = "/api/a%2Fb/%E2%9C%93/caf%C3%A9?x=1&x=2&y=a+b&z=%20&empty=&%3D=%26"
    async with aiohttp.ClientSession() as s, s.get(URL(r.proxy_url + raw, encoded=True)) as resp:
        assert resp.status == 200
    assert primary.seen[-1].raw_path == raw


async def test_hop_by_hop_headers_are_stripped_towards_the_primary(pair):
    primary, _, r = pair
    request = (
        b"GET /h HTTP/1.1\r\nHost: front.example\r\nConnection: keep-alive, X-Drop-Me\r\n"
        b"X-Drop-Me: 1\r\nKeep-Alive: timeout=5\r\nTE: trailers\r\nTrailer: X-T\r\n"
        b"Proxy-Authorization: Basic Zm9vOmJhcg==\r\nProxy-Connection: keep-alive\r\n"
        b"X-Keep-Me: yes\r\n\r\n"
    )
    await raw_http(r.proxy_url, request.replace(b"keep-alive, X-Drop-Me", b"close, X-Drop-Me", 1))
    names = {k.lower() for k, _ in primary.seen[-1].raw_headers}
    for gone in ("x-drop-me", "keep-alive", "te", "trailer", "proxy-authorization", "proxy-connection"):
        assert gone not in names
    assert primary.seen[-1].header("X-Keep-Me") == "yes"


async def test_hop_by_hop_headers_are_stripped_towards_the_client(
    raw_upstream, make_upstream, sidecar, tmp_path
):
    primary = await raw_upstream(
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: X-Secret-Hop\r\nX-Secret-Hop: 1\r\n"
        b"Keep-Alive: timeout=5\r\nProxy-Authenticate: Basic\r\nTrailer: X-T\r\nUpgrade: h2c\r\n"
        b"X-End-To-End: kept\r\n\r\nok"
    )
    shadow = await make_upstream()
    r = await sidecar(make_config(primary.url, shadow.url, tmp_path))
    status, headers, body = split_response(
        await raw_http(r.proxy_url, b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
    )
    names = {k.lower() for k, _ in headers}
    assert status == "HTTP/1.1 200 OK" and body == b"ok"
    for gone in ("x-secret-hop", "keep-alive", "proxy-authenticate", "trailer", "upgrade"):
        assert gone not in names
    assert ("X-End-To-End", "kept") in headers


async def test_the_proxy_adds_no_content_type_server_or_date(raw_upstream, make_upstream, sidecar, tmp_path):
    primary = await raw_upstream(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello")
    shadow = await make_upstream()
    r = await sidecar(make_config(primary.url, shadow.url, tmp_path))
    _, headers, body = split_response(
        await raw_http(r.proxy_url, b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
    )
    names = {k.lower() for k, _ in headers}
    assert body == b"hello"
    assert not names & {"content-type", "server", "date"}


async def test_repeated_set_cookie_headers_all_reach_the_client(make_upstream, sidecar, tmp_path):
    async def cookies(request, up):
        resp = web.Response(text="ok")
        resp.headers.add("Set-Cookie", "a=1; Path=/")
        resp.headers.add("Set-Cookie", "b=2; HttpOnly")
        resp.headers.add("Set-Cookie", "c=3")
        return resp

    primary = await make_upstream(cookies)
    shadow = await make_upstream()
    r = await sidecar(make_config(primary.url, shadow.url, tmp_path))
    async with aiohttp.ClientSession() as s, s.get(r.proxy_url + "/") as resp:
        assert resp.headers.getall("Set-Cookie") == ["a=1; Path=/", "b=2; HttpOnly", "c=3"]


async def test_content_encoding_bytes_pass_through_untouched(make_upstream, sidecar, tmp_path):
    payload = gzip.compress(b'{"hello": "world"}' * 100, mtime=0)

    async def gz(request, up):
        return web.Response(
            body=payload, headers={"Content-Encoding": "gzip", "Content-Type": "application/json"}
        )

    primary = await make_upstream(gz)
    shadow = await make_upstream()
    r = await sidecar(make_config(primary.url, shadow.url, tmp_path))
    async with (
        aiohttp.ClientSession(auto_decompress=False) as s,
        s.get(r.proxy_url + "/", headers={"Accept-Encoding": "gzip"}) as resp,
    ):
        assert resp.headers["Content-Encoding"] == "gzip"
        assert await resp.read() == payload


async def test_forwarded_headers_and_request_id(pair):
    primary, _, r = pair
    async with (
        aiohttp.ClientSession() as s,
        s.get(r.proxy_url + "/f", headers={"X-Forwarded-For": "203.0.113.9", "Host": "api.example"}) as resp,
    ):
        generated = resp.headers["X-Request-Id"]
    seen = primary.seen[-1]
    assert seen.header("X-Forwarded-For") == "203.0.113.9, 127.0.0.1"
    assert seen.header("X-Forwarded-Proto") == "http"
    assert seen.header("X-Forwarded-Host") == "api.example"
    assert seen.header("X-Request-Id") == generated and len(generated) == 32

    async with (
        aiohttp.ClientSession() as s,
        s.get(r.proxy_url + "/f", headers={"X-Request-Id": "abc-123"}) as resp,
    ):
        assert resp.headers["X-Request-Id"] == "abc-123"
    assert primary.seen[-1].header("X-Request-Id") == "abc-123"


@pytest.mark.parametrize("policy", ["preserve", "backend"])
async def test_host_header_policy(make_upstream, sidecar, tmp_path, policy):
    primary = await make_upstream()
    shadow = await make_upstream()
    cfg = make_config(primary.url, shadow.url, tmp_path)
    import dataclasses

    cfg = dataclasses.replace(cfg, primary=dataclasses.replace(cfg.primary, host_header=policy))
    r = await sidecar(cfg)
    async with aiohttp.ClientSession() as s, s.get(r.proxy_url + "/", headers={"Host": "front.example"}):
        pass
    expected = "front.example" if policy == "preserve" else primary.url.removeprefix("http://")
    assert primary.seen[-1].headers_named("Host") == [expected]


async def test_unreachable_primary_gives_502_naming_the_backend(
    make_upstream, sidecar, tmp_path, unused_tcp_port
):
    shadow = await make_upstream()
    r = await sidecar(make_config(f"http://127.0.0.1:{unused_tcp_port}", shadow.url, tmp_path))
    async with aiohttp.ClientSession() as s, s.get(r.proxy_url + "/x") as resp:
        assert resp.status == 502
        body = await resp.json()
    assert body["backend"] == "deno" and body["error"] == "bad_gateway"
    assert "connect" in body["reason"]


async def test_slow_primary_gives_504_at_the_configured_timeout(make_upstream, sidecar, tmp_path):
    release = asyncio.Event()

    async def hang(request, up):
        await release.wait()
        return web.Response(text="late")

    primary = await make_upstream(hang)
    shadow = await make_upstream()
    cfg = make_config(primary.url, shadow.url, tmp_path)
    import dataclasses

    cfg = dataclasses.replace(cfg, primary=dataclasses.replace(cfg.primary, timeout_s=0.3))
    r = await sidecar(cfg)
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as s,
            s.get(r.proxy_url + "/slow") as resp,
        ):
            assert resp.status == 504
            body = await resp.json()
        assert body == {**body, "backend": "deno", "error": "gateway_timeout"}
    finally:
        release.set()


async def test_redirects_are_not_followed_and_cookies_not_kept(make_upstream, sidecar, tmp_path):
    async def redirect(request, up):
        resp = web.Response(status=302, headers={"Location": "/elsewhere"})
        resp.set_cookie("session", "s1")
        return resp

    primary = await make_upstream(redirect)
    shadow = await make_upstream()
    r = await sidecar(make_config(primary.url, shadow.url, tmp_path))
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as s:
        for _ in range(2):
            async with s.get(r.proxy_url + "/start", allow_redirects=False) as resp:
                assert resp.status == 302
                assert resp.headers["Location"] == "/elsewhere"
    assert [x.raw_path for x in primary.seen] == ["/start", "/start"]
    assert primary.seen[1].header("Cookie") is None


async def test_no_headers_are_added_to_the_upstream_request(pair):
    primary, _, r = pair
    await raw_http(
        r.proxy_url, b"POST /p HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc"
    )
    names = {k.lower() for k, _ in primary.seen[-1].raw_headers}
    assert not names & {"user-agent", "accept", "accept-encoding", "content-type"}


async def test_content_length_with_transfer_encoding_is_rejected(pair):
    primary, _, r = pair
    raw = await raw_http(
        r.proxy_url,
        b"POST /smuggle HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"0\r\n\r\n",
    )
    assert raw.split(b" ", 2)[1] == b"400"
    assert primary.seen == []


async def test_a_large_download_streams_without_being_held_in_memory(make_upstream, sidecar, tmp_path):
    chunk = b"x" * (1024 * 1024)
    total_mb = 200

    async def big(request, up):
        resp = web.StreamResponse(headers={"Content-Length": str(total_mb * len(chunk))})
        await resp.prepare(request)
        for _ in range(total_mb):
            await resp.write(chunk)
        return resp

    primary = await make_upstream(big)
    shadow = await make_upstream()
    r = await sidecar(make_config(primary.url, shadow.url, tmp_path))
    received = 0
    tracemalloc.start()
    try:
        async with aiohttp.ClientSession() as s, s.post(r.proxy_url + "/download") as resp:
            async for part in resp.content.iter_any():
                received += len(part)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert received == total_mb * len(chunk)
    # Upstream, proxy and client share this process: all three together stay far below the 200 MB body.
    assert peak < 40 * 1024 * 1024, f"peak traced memory {peak / 1e6:.0f} MB"


async def test_a_chunked_upload_is_forwarded_as_it_arrives(make_upstream, sidecar, tmp_path):
    first_seen = asyncio.Event()
    parts: list[bytes] = []

    async def stream_in(request, up):
        async for data in request.content.iter_any():
            parts.append(data)
            first_seen.set()
        return web.Response(text=str(sum(map(len, parts))))

    primary = await make_upstream(stream_in, read_body=False)
    shadow = await make_upstream()
    r = await sidecar(make_config(primary.url, shadow.url, tmp_path))

    async def body():
        yield b"first-part"
        # The second part is only sent once the primary has the first: if the proxy buffered
        # the upload, this would never happen and the request would time out.
        async with asyncio.timeout(10):
            await first_seen.wait()
        yield b"second-part"

    async with aiohttp.ClientSession() as s, s.put(r.proxy_url + "/upload", data=body()) as resp:
        assert await resp.text() == str(len(b"first-part") + len(b"second-part"))
    assert b"".join(parts) == b"first-partsecond-part"


async def test_upstream_connections_are_reused_and_limited(make_upstream, sidecar, tmp_path):
    import dataclasses

    active = 0
    peak = 0
    gate = asyncio.Event()

    async def slow(request, up):
        nonlocal active, peak
        active += 1
        peak = max(peak, active)
        if len(up.seen) >= 2:
            gate.set()
        await gate.wait()
        active -= 1
        return web.Response(text="ok")

    primary = await make_upstream(slow)
    shadow = await make_upstream()
    cfg = make_config(primary.url, shadow.url, tmp_path)
    cfg = dataclasses.replace(cfg, primary=dataclasses.replace(cfg.primary, max_connections=2))
    r = await sidecar(cfg)
    async with aiohttp.ClientSession() as s:

        async def one() -> int:
            async with s.post(r.proxy_url + "/limited") as resp:
                return resp.status

        assert await asyncio.gather(*(one() for _ in range(6))) == [200] * 6
        for _ in range(5):
            async with s.post(r.proxy_url + "/again") as resp:
                assert resp.status == 200
    assert peak == 2
    assert len({x.peer for x in primary.seen}) <= 2


async def test_upstream_dying_mid_body_is_not_passed_off_as_complete(
    raw_upstream, make_upstream, sidecar, tmp_path
):
    # The raw upstream promises 1000 bytes, sends 10 and keeps the connection for the next
    # request; the fixture then closes it when the proxy's read times out or the test ends.
    primary = await raw_upstream(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n0123456789")
    shadow = await make_upstream()
    import dataclasses

    cfg = make_config(primary.url, shadow.url, tmp_path)
    cfg = dataclasses.replace(cfg, primary=dataclasses.replace(cfg.primary, timeout_s=0.5))
    r = await sidecar(cfg)
    async with aiohttp.ClientSession() as s:
        with pytest.raises(aiohttp.ClientPayloadError):
            async with s.post(r.proxy_url + "/cut") as resp:
                await resp.read()


async def test_websocket_passthrough_both_ways_with_subprotocol_and_close_codes(
    make_upstream, sidecar, tmp_path
):
    closed_with: list[int | None] = []
    both_closed = asyncio.Event()

    async def ws_echo(request, up):
        ws = web.WebSocketResponse(protocols=("v2.notify", "v1.notify"))
        await ws.prepare(request)
        async for msg in ws:
            if msg.type == aiohttp.WSMsgType.TEXT:
                if msg.data == "bye":
                    await ws.close(code=4001, message=b"server says bye")
                    break
                await ws.send_str("echo:" + msg.data)
            elif msg.type == aiohttp.WSMsgType.BINARY:
                await ws.send_bytes(msg.data[::-1])
        closed_with.append(ws.close_code)
        if len(closed_with) == 2:
            both_closed.set()
        return ws

    primary = await make_upstream(ws_echo, read_body=False)
    shadow = await make_upstream()
    r = await sidecar(make_config(primary.url, shadow.url, tmp_path))
    async with aiohttp.ClientSession() as s:
        async with s.ws_connect(r.proxy_url + "/ws?token=t", protocols=("v1.notify",)) as ws:
            assert ws.protocol == "v1.notify"
            await ws.send_str("hi")
            assert (await ws.receive()).data == "echo:hi"
            await ws.send_bytes(b"\x01\x02\x03")
            assert (await ws.receive()).data == b"\x03\x02\x01"
            await ws.send_str("bye")
            msg = await ws.receive()
            assert msg.type == aiohttp.WSMsgType.CLOSE
            assert ws.close_code == 4001 or msg.data == 4001
        async with s.ws_connect(r.proxy_url + "/ws") as ws:
            await ws.close(code=4002)
    async with asyncio.timeout(5):
        await both_closed.wait()
    assert closed_with[1] == 4002
