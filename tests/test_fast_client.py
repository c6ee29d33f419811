"""The fast upstream pool against real servers on loopback: framing, reuse, limits, retries,
errors in transport.classify's terms, and TLS with a certificate made for the test."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import ssl
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from aiohttp import web

from shadowproxy import config
from shadowproxy.fast.body import HIGH, LOW, BodyStream
from shadowproxy.fast.client import FAST_ERRORS, Pool, Response, request_head
from shadowproxy.fast.upstream import FastUpstream
from shadowproxy.transport import classify

HEADERS = [("Host", "upstream.test")]
GET_HEAD = request_head("GET", "/", HEADERS, None)


def pool_for(url: str, **kw) -> Pool:
    host, port = url.removeprefix("http://").split(":")
    kw.setdefault("max_connections", 4)
    kw.setdefault("connect_timeout_s", 2.0)
    return Pool(host, int(port), tls=kw.pop("tls", None), **kw)


async def read_all(resp: Response) -> bytes:
    whole = resp.whole()
    if whole is not None:
        return whole
    parts = []
    while chunk := await resp.body.read(5.0):
        parts.append(chunk)
    return b"".join(parts)


async def get(pool: Pool, target: str = "/", method: str = "GET", body=None) -> tuple[Response, bytes]:
    resp = await pool.request(method, request_head(method, target, HEADERS, body), body, 5.0)
    try:
        return resp, await read_all(resp)
    finally:
        resp.close()


async def outcome(coro: Awaitable[object]) -> tuple[str, str]:
    try:
        await coro
    except FAST_ERRORS as e:
        return classify(e)
    raise AssertionError("the call did not fail")


@pytest.fixture
async def scripted() -> AsyncIterator[Callable[..., Awaitable[tuple[str, list[bytes]]]]]:
    """A raw server: `answer(n_on_conn, head)` returns the bytes to send (None: close
    without answering). Returns (url, list of request heads seen)."""
    servers: list[asyncio.Server] = []

    async def start(answer: Callable[[int, bytes], bytes | None]) -> tuple[str, list[bytes]]:
        seen: list[bytes] = []

        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            n = 0
            try:
                while True:
                    head = await reader.readuntil(b"\r\n\r\n")
                    seen.append(head)
                    for line in head.split(b"\r\n"):
                        if line.lower().startswith(b"content-length:"):
                            await reader.readexactly(int(line.split(b":")[1]))
                    reply = answer(n, head)
                    n += 1
                    if reply is None:
                        return
                    writer.write(reply)
                    await writer.drain()
                    if b"connection: close" in reply.lower() or reply.startswith(b"HTTP/1.0"):
                        return  # a close-delimited body ends here
            except (asyncio.IncompleteReadError, ConnectionError):
                pass
            finally:
                writer.close()

        server = await asyncio.start_server(serve, "127.0.0.1", 0)
        servers.append(server)
        return f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}", seen

    yield start
    for s in servers:
        s.close()
        await s.wait_closed()


OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


async def test_keep_alive_reuses_one_connection(make_upstream):
    up = await make_upstream()
    pool = pool_for(up.url)
    for _ in range(5):
        resp, body = await get(pool, "/a?x=1")
        assert resp.status == 200 and b'"/a?x=1"' in body
    assert len({s.peer for s in up.seen}) == 1
    await pool.close()


@pytest.mark.parametrize(
    ("reply", "body"),
    [
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n", b"abcde"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", b"hello"),
        (b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil the end", b"until the end"),
        (b"HTTP/1.0 200 OK\r\n\r\nold style", b"old style"),
        (b"HTTP/1.1 204 No Content\r\n\r\n", b""),
        (b"HTTP/1.1 304 Not Modified\r\nContent-Length: 99\r\n\r\n", b""),
        (b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 1\r\n\r\nx", b"x"),
    ],
)
async def test_response_framing(scripted, reply, body):
    url, _ = await scripted(lambda n, head: reply)
    pool = pool_for(url)
    resp, got = await get(pool)
    assert got == body
    assert resp.status == int(reply.rsplit(b"HTTP/1.", 1)[1][2:5])
    await pool.close()


async def test_an_interim_answers_headers_are_not_the_final_ones(scripted):
    url, _ = await scripted(
        lambda n, head: (
            b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n"
            b"HTTP/1.1 200 OK\r\nX-Final: 1\r\nContent-Length: 2\r\n\r\nok"
        )
    )
    pool = pool_for(url)
    resp, body = await get(pool)
    assert (resp.status, body) == (200, b"ok")
    assert resp.headers == [("X-Final", "1"), ("Content-Length", "2")]
    await pool.close()


async def test_head_answer_with_a_length_leaves_the_connection_usable(scripted):
    def answer(n: int, head: bytes) -> bytes:
        if head.startswith(b"HEAD"):
            return b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n"
        return OK

    url, seen = await scripted(answer)
    pool = pool_for(url, max_connections=1)
    resp, body = await get(pool, method="HEAD")
    assert (resp.status, body, ("Content-Length", "1000") in resp.headers) == (200, b"", True)
    _, body = await get(pool)
    assert body == b"ok" and len(seen) == 2
    await pool.close()


async def test_headers_keep_wire_order_and_repeats(scripted):
    url, _ = await scripted(
        lambda n, head: (
            b"HTTP/1.1 200 Fine\r\nSet-Cookie: a=1\r\nX-B: 2\r\nSet-Cookie: c=3\r\nContent-Length: 0\r\n\r\n"
        )
    )
    pool = pool_for(url)
    resp, _ = await get(pool)
    assert resp.reason == "Fine"
    assert resp.headers[:3] == [("Set-Cookie", "a=1"), ("X-B", "2"), ("Set-Cookie", "c=3")]
    await pool.close()


async def test_request_bodies_bytes_and_streamed(make_upstream):
    up = await make_upstream()
    pool = pool_for(up.url)
    await get(pool, method="POST", body=b"payload")
    assert (up.seen[-1].body, up.seen[-1].header("Content-Length")) == (b"payload", "7")

    async def parts() -> AsyncIterator[bytes]:
        yield b"one-"
        yield b""
        yield b"two"

    await get(pool, method="PUT", body=parts())
    assert up.seen[-1].body == b"one-two"
    assert up.seen[-1].header("Transfer-Encoding") == "chunked"
    await get(pool, method="POST")
    assert up.seen[-1].header("Content-Length") == "0"
    await get(pool)
    assert up.seen[-1].header("Content-Length") is None
    await pool.close()


@pytest.mark.parametrize(
    ("reply", "relayed"),
    [
        (OK, b"ok"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n", b"ok"),
        (b"HTTP/1.1 204 No Content\r\n\r\n", b""),
        # Only the close ends this body: connection_lost, not data_received, completes it.
        (b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil the end", None),
    ],
)
async def test_a_relay_gets_the_answer_that_is_all_in_before_the_awaiting_task_wakes(
    scripted, reply, relayed
):
    url, _ = await scripted(lambda n, head: reply)
    pool = pool_for(url)
    returned = False
    got: list[tuple[int, bytes, bool]] = []

    def relay(resp: Response) -> None:
        got.append((resp.status, resp.body.take(), returned))

    resp = await pool.request("GET", GET_HEAD, None, 5.0, relay)
    returned = True
    if relayed is None:
        resp.relay = None
        assert (got, await read_all(resp)) == ([], b"until the end")
    else:
        assert got == [(resp.status, relayed, False)]
    resp.close()
    await pool.close()


async def test_a_body_still_arriving_is_the_callers_once_it_clears_the_relay(make_upstream):
    go_on = asyncio.Event()

    async def in_two_parts(request: web.Request, up) -> web.StreamResponse:
        resp = web.StreamResponse()
        resp.content_length = 6
        await resp.prepare(request)
        await resp.write(b"one")
        await go_on.wait()
        await resp.write(b"two")
        return resp

    up = await make_upstream(in_two_parts)
    pool = pool_for(up.url)
    relayed: list[bytes] = []
    arrived = asyncio.Event()

    def relay(resp: Response) -> None:
        relayed.append(resp.body.take())
        arrived.set()

    # Taken over: the caller reads the rest, and the relay never runs.
    resp = await pool.request("GET", GET_HEAD, None, 5.0, relay)
    assert not resp.body.complete
    resp.relay = None
    go_on.set()
    assert await read_all(resp) == b"onetwo"
    resp.close()
    # Left set: the relay takes the body the moment its last byte is in.
    go_on.clear()
    resp = await pool.request("GET", GET_HEAD, None, 5.0, relay)
    assert not resp.body.complete
    go_on.set()
    await arrived.wait()
    assert relayed == [b"onetwo"]
    resp.close()
    await pool.close()


async def test_the_connection_limit_holds_and_waiters_fail_after_the_connect_timeout(make_upstream):
    active = peak = 0
    release = asyncio.Event()

    async def slow(request, up):
        nonlocal active, peak
        active += 1
        peak = max(peak, active)
        await release.wait()
        active -= 1
        return web.Response(text="ok")

    up = await make_upstream(slow)
    pool = pool_for(up.url, max_connections=2, connect_timeout_s=0.2)
    held = [asyncio.ensure_future(get(pool)) for _ in range(2)]  # noqa: TID251
    while len(up.seen) < 2:
        await up.arrived.wait()
        up.arrived.clear()
    # Both connections are busy: a third request waits for one, then gives up as an error.
    kind, detail = await outcome(pool.request("GET", GET_HEAD, None, 5.0))
    assert (kind, detail) == ("error", "no free upstream connection within 0.2 s")
    release.set()
    assert [r.status for r, _ in await asyncio.gather(*held)] == [200, 200]
    assert [r.status for r, _ in await asyncio.gather(*(get(pool) for _ in range(6)))] == [200] * 6
    assert peak == 2 and len({s.peer for s in up.seen}) == 2
    await pool.close()


@pytest.mark.parametrize(("method", "retried"), [("GET", True), ("PUT", True), ("POST", False)])
async def test_a_reused_connection_closed_by_the_server_is_retried_once_only_if_safe(
    scripted, method, retried
):
    # Every connection answers its first request, then closes on the second without a word:
    # what a server does when its keep-alive timeout fires as our request arrives.
    url, seen = await scripted(lambda n, head: OK if n == 0 else None)
    pool = pool_for(url, max_connections=1)
    await get(pool)
    if retried:
        _, body = await get(pool, method=method, body=b"x")
        assert body == b"ok"
        assert [h.split(b" ")[0].decode() for h in seen] == ["GET", method, method]
    else:
        assert await outcome(get(pool, method=method, body=b"x")) == (
            "error",
            "upstream closed the connection",
        )
        assert [h.split(b" ")[0].decode() for h in seen] == ["GET", method]
    await pool.close()


async def test_errors_in_the_aiohttp_engines_terms(scripted, unused_tcp_port):
    pool = pool_for(f"http://127.0.0.1:{unused_tcp_port}")
    kind, detail = await outcome(get(pool))
    assert kind == "error" and detail.startswith("cannot connect: ")

    url, _ = await scripted(
        lambda n, head: b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\nConnection: close\r\n\r\nabc"
    )
    pool = pool_for(url)
    assert await outcome(get(pool)) == ("error", "upstream body was cut short or malformed")

    url, _ = await scripted(lambda n, head: b"HTTP/1.1 abc nonsense\r\n\r\n")
    kind, detail = await outcome(get(pool_for(url)))
    assert kind == "error" and detail.startswith("invalid upstream response: ")

    url, _ = await scripted(lambda n, head: None)
    assert await outcome(get(pool_for(url))) == ("error", "upstream closed the connection")


async def test_no_answer_within_the_timeout_is_a_timeout_and_frees_the_slot(make_upstream):
    release = asyncio.Event()

    async def hang(request, up):
        await release.wait()
        return web.Response(text="late")

    up = await make_upstream(hang)
    pool = pool_for(up.url, max_connections=1)
    assert await outcome(pool.request("GET", GET_HEAD, None, 0.2)) == (
        "timeout",
        "no answer within the timeout",
    )
    release.set()
    resp, body = await get(pool)
    assert (resp.status, body) == (200, b"late")
    await pool.close()


def test_body_stream_pauses_its_socket_above_high_and_resumes_below_low():
    calls: list[bool] = []
    body = BodyStream(calls.append)
    chunk = b"x" * (64 * 1024)
    while len(calls) == 0:
        body.feed(chunk)
    assert calls == [True]
    taken = 0
    while calls == [True]:
        taken += len(asyncio.run(body.read()))
    assert calls == [True, False]
    assert HIGH - taken <= LOW + len(chunk)


# ---- TLS


@pytest.fixture(scope="module")
def cert(tmp_path_factory) -> tuple[Path, Path]:
    if shutil.which("openssl") is None:
        pytest.skip("openssl CLI not installed")
    d = tmp_path_factory.mktemp("tls")
    key, crt = d / "key.pem", d / "cert.pem"
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"),
            *("-keyout", str(key), "-out", str(crt)),
            *("-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost"),
        ],
        check=True,
        capture_output=True,
    )
    return crt, key


@contextlib.asynccontextmanager
async def tls_server(cert: tuple[Path, Path]) -> AsyncIterator[int]:
    async def hello(request: web.Request) -> web.Response:
        return web.Response(text=f"secure {request.host}")

    app = web.Application()
    app.router.add_get("/", hello)
    runner = web.AppRunner(app)
    await runner.setup()
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(*cert)
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ctx)
    await site.start()
    try:
        yield runner.addresses[0][1]
    finally:
        await runner.cleanup()


async def test_tls_upstream_with_sni_and_verification(cert):
    async with tls_server(cert) as port:
        trusting = ssl.create_default_context(cafile=str(cert[0]))
        pool = Pool("localhost", port, tls=trusting, max_connections=2, connect_timeout_s=2.0)
        resp = await pool.request(
            "GET", request_head("GET", "/", [("Host", f"localhost:{port}")], None), None, 5.0
        )
        assert (resp.status, await read_all(resp)) == (200, f"secure localhost:{port}".encode())
        resp.close()
        await pool.close()

        default = Pool(
            "localhost", port, tls=ssl.create_default_context(), max_connections=2, connect_timeout_s=2
        )
        kind, detail = await outcome(default.request("GET", GET_HEAD, None, 5.0))
        assert kind == "error" and "CERTIFICATE_VERIFY_FAILED" in detail


async def test_the_proxy_forwards_to_a_tls_primary(cert, make_upstream, sidecar, tmp_path, monkeypatch):
    import aiohttp

    from tests.conftest import make_config

    # create_default_context() reads SSL_CERT_FILE: the fast engine's pools then trust our cert.
    monkeypatch.setenv("SSL_CERT_FILE", str(cert[0]))
    shadow = await make_upstream()
    async with tls_server(cert) as port:
        cfg = make_config(f"https://localhost:{port}", shadow.url, tmp_path)
        r = await sidecar(cfg)
        if r.sidecar.cfg.engine != "fast":
            pytest.skip("aiohttp's client keeps the CA bundle it loaded at import")
        async with aiohttp.ClientSession() as s, s.get(r.proxy_url + "/", headers={"Host": "front"}) as resp:
            assert (resp.status, await resp.text()) == (200, "secure front")


FORWARDED = (
    ("Host", "front.example"),
    ("Accept", "application/json"),
    ("X-Forwarded-For", "203.0.113.9"),
    ("X-Request-Id", "r-1"),
)


@pytest.mark.parametrize("policy", ["preserve", "backend"])
@pytest.mark.parametrize(
    ("method", "query", "body", "forwarded"),
    [
        ("GET", "", None, FORWARDED),
        ("GET", "a=1&b=%20", None, FORWARDED[1:]),  # no Host from the client
        ("POST", "", b"{}", FORWARDED),
        ("POST", "", None, FORWARDED),  # a length of 0 all the same
        ("PUT", "x=1", b"abc", (*FORWARDED, ("content-length", "3"))),  # the client's length
    ],
)
async def test_the_one_pass_head_is_request_head_of_the_backends_headers(
    policy, method, query, body, forwarded
):
    cfg = config.Backend(
        url="http://api.internal:8001/base/", host_header=policy, headers={"X-Env": "staging"}
    )
    up = FastUpstream("shadow", cfg, extra_headers=(("X-Shadow", "1"),))
    for host in ("front.example", None):
        expected = request_head(method, up.target("/p/q", query), up.headers(forwarded, host), body)
        assert up.head(method, "/p/q", query, forwarded, host, body) == expected
    streamed = up.head("POST", "/s", "", forwarded, None, _chunks())
    assert streamed == request_head("POST", up.target("/s", ""), up.headers(forwarded, None), _chunks())


async def _chunks() -> AsyncIterator[bytes]:
    yield b"x"
