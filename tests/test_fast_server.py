"""The fast server on real sockets: keep-alive, pipelining, framing, malformed input, drain;
and the upgrade tunnel through a real sidecar."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web

from shadowproxy.fast.server import Connection, FastServer
from shadowproxy.fast.wire import Request
from tests.conftest import make_config, raw_http, split_response


async def echo(req: Request, conn: Connection) -> None:
    body = b""
    if req.body is not None:
        while chunk := await req.body.read():
            body += chunk
    text = f"{req.method} {req.target} {body.decode()}".encode()
    conn.respond(req, 200, "OK", [("X-Echo", "1")], text)


@contextlib.asynccontextmanager
async def serving(handler=echo, drain_s: float = 2.0) -> AsyncIterator[tuple[FastServer, str]]:
    server = FastServer(handler)
    await server.start("127.0.0.1", 0)
    try:
        yield server, server.url
    finally:
        await server.close(drain_s)


async def open_conn(url: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    host, port = url.removeprefix("http://").split(":")
    return await asyncio.open_connection(host, int(port))


async def read_response(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    length = next(
        int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")
    )
    return head, await reader.readexactly(length)


async def test_pipelined_requests_are_answered_in_order_on_one_connection():
    async with serving() as (_, url):
        reader, writer = await open_conn(url)
        writer.write(
            b"GET /1 HTTP/1.1\r\nHost: a\r\n\r\n"
            b"POST /2 HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\n\r\nbody"
            b"PUT /3 HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n"
        )
        bodies = [(await read_response(reader))[1] for _ in range(3)]
        assert bodies == [b"GET /1 ", b"POST /2 body", b"PUT /3 hi"]
        writer.close()


async def test_the_response_carries_only_the_handlers_headers_and_framing():
    async with serving() as (_, url):
        status, headers, body = split_response(
            await raw_http(url, b"GET /x HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        )
    assert status == "HTTP/1.1 200 OK" and body == b"GET /x "
    assert headers == [("X-Echo", "1"), ("Content-Length", "7"), ("Connection", "close")]


async def test_http_1_0_is_closed_after_the_answer_unless_keep_alive():
    async with serving() as (_, url):
        raw = await raw_http(url, b"GET /old HTTP/1.0\r\n\r\n")
        assert raw.startswith(b"HTTP/1.0 200 OK") and raw.endswith(b"GET /old ")
        reader, writer = await open_conn(url)
        for _ in range(2):
            writer.write(b"GET /ka HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
            head, _ = await read_response(reader)
            assert b"Connection: keep-alive" in head
        writer.close()


async def test_a_streamed_answer_without_length_is_chunked_for_1_1_and_close_delimited_for_1_0():
    async def stream(req: Request, conn: Connection) -> None:
        conn.start(req, 200, "OK", [])
        for part in (b"ab", b"cd"):
            conn.write(part)
            await conn.drain()
        conn.end()

    async with serving(stream) as (_, url):
        _, headers, body = split_response(await raw_http(url, b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n"))
        assert ("Transfer-Encoding", "chunked") in headers and body == b"2\r\nab\r\n2\r\ncd\r\n0\r\n\r\n"
        _, headers, body = split_response(await raw_http(url, b"GET / HTTP/1.0\r\n\r\n"))
        assert body == b"abcd" and not any(k.lower() == "transfer-encoding" for k, _ in headers)


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (b"GARBAGE\r\n\r\n", b"400"),
        (b"GET / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", b"400"),
        (b"GET / HTTP/1.1\r\nHost: a\r\nX-Big: " + b"x" * (70 * 1024) + b"\r\n\r\n", b"431"),
        (b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com\r\n\r\n", b"400"),
    ],
)
async def test_malformed_input_gets_an_error_and_the_connection_closes(request_bytes, status):
    seen: list[str] = []

    async def record(req: Request, conn: Connection) -> None:
        seen.append(req.target)
        await echo(req, conn)

    async with serving(record) as (_, url):
        raw = await raw_http(url, request_bytes)  # returns only once the server closed
    assert raw.split(b" ", 2)[1] == status
    assert seen == []


async def test_a_valid_request_before_garbage_is_still_answered():
    async with serving() as (_, url):
        raw = await raw_http(url, b"GET /ok HTTP/1.1\r\nHost: a\r\n\r\nNOT HTTP AT ALL\r\n\r\n")
    first, _, rest = raw.partition(b"GET /ok ")
    assert first.startswith(b"HTTP/1.1 200") and rest.startswith(b"HTTP/1.1 400")


async def test_expect_100_continue_is_answered_before_the_body_is_sent():
    async with serving() as (_, url):
        reader, writer = await open_conn(url)
        writer.write(b"PUT /e HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n")
        assert await reader.readuntil(b"\r\n\r\n") == b"HTTP/1.1 100 Continue\r\n\r\n"
        writer.write(b"abc")
        _, body = await read_response(reader)
        assert body == b"PUT /e abc"
        writer.close()


async def test_drain_closes_idle_connections_finishes_in_flight_and_stops_accepting():
    arrived, release = asyncio.Event(), asyncio.Event()

    async def slow(req: Request, conn: Connection) -> None:
        if req.target == "/slow":
            arrived.set()
            await release.wait()
        conn.respond(req, 200, "OK", [], b"done " + req.target.encode())

    server = FastServer(slow)
    await server.start("127.0.0.1", 0)
    url = server.url
    idle_reader, idle_writer = await open_conn(url)
    idle_writer.write(b"GET /first HTTP/1.1\r\nHost: a\r\n\r\n")
    await read_response(idle_reader)
    busy_reader, busy_writer = await open_conn(url)
    busy_writer.write(b"GET /slow HTTP/1.1\r\nHost: a\r\n\r\n")
    await arrived.wait()

    closing = asyncio.ensure_future(server.close(10.0))  # noqa: TID251
    assert await idle_reader.read() == b""  # the idle keep-alive connection is closed at once
    with pytest.raises(OSError):
        await open_conn(url)
    release.set()
    head, body = await read_response(busy_reader)
    assert body == b"done /slow" and b"Connection: close" in head
    await closing
    for w in (idle_writer, busy_writer):
        w.close()


async def test_drain_gives_up_on_a_request_that_outlives_the_deadline():
    started = asyncio.Event()

    async def never(req: Request, conn: Connection) -> None:
        started.set()
        await asyncio.Event().wait()

    server = FastServer(never)
    await server.start("127.0.0.1", 0)
    reader, writer = await open_conn(server.url)
    writer.write(b"GET /stuck HTTP/1.1\r\nHost: a\r\n\r\n")
    await writer.drain()
    await started.wait()
    await server.close(0.1)
    assert await reader.read() == b""
    writer.close()


# ---- the upgrade tunnel, through a real sidecar on the fast engine


async def fast_sidecar(sidecar, primary_url: str, shadow_url: str, tmp_path):
    r = await sidecar(make_config(primary_url, shadow_url, tmp_path))
    if r.sidecar.cfg.engine != "fast":
        pytest.skip("the tunnel is the fast engine's")
    return r


async def test_a_refused_upgrade_passes_the_primarys_answer_through(make_upstream, sidecar, tmp_path):
    async def refuse(request, up):
        return web.Response(status=403, text="no sockets for you")

    primary = await make_upstream(refuse)
    shadow = await make_upstream()
    r = await fast_sidecar(sidecar, primary.url, shadow.url, tmp_path)
    async with aiohttp.ClientSession() as s:
        with pytest.raises(aiohttp.WSServerHandshakeError) as e:
            await s.ws_connect(r.proxy_url + "/ws")
    assert e.value.status == 403
    assert primary.seen[-1].header("Upgrade") == "websocket"
    assert shadow.seen == []


async def test_an_upgrade_to_a_dead_primary_gets_a_502(make_upstream, sidecar, tmp_path, unused_tcp_port):
    shadow = await make_upstream()
    r = await fast_sidecar(sidecar, f"http://127.0.0.1:{unused_tcp_port}", shadow.url, tmp_path)
    raw = await raw_http(
        r.proxy_url,
        b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
        b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
    )
    status, _, body = split_response(raw)
    assert status.startswith("HTTP/1.1 502") and b'"bad_gateway"' in body


async def test_a_client_that_half_closes_still_gets_its_answer_and_the_connection_ends():
    async with serving() as (_, url):
        reader, writer = await open_conn(url)
        writer.write(b"GET /half HTTP/1.1\r\nHost: a\r\n\r\n")
        writer.write_eof()
        raw = await reader.read()  # returns only once the server closed its side too
        writer.close()
    assert raw.startswith(b"HTTP/1.1 200 OK") and raw.endswith(b"GET /half ")


async def test_a_handler_failure_is_a_500_for_that_request_only():
    async def flaky(req: Request, conn: Connection) -> None:
        if req.target == "/boom":
            raise RuntimeError("bug")
        await echo(req, conn)

    async with serving(flaky) as (_, url):
        reader, writer = await open_conn(url)
        writer.write(b"GET /fine HTTP/1.1\r\nHost: a\r\n\r\nGET /boom HTTP/1.1\r\nHost: a\r\n\r\n")
        _, body = await read_response(reader)
        head, _ = await read_response(reader)
        writer.close()
    assert body == b"GET /fine " and head.startswith(b"HTTP/1.1 500")
