"""The primary's response head on a keep-alive exchange: the fast engine forwards it as it
came when it can (Conn's verbatim head), and must then give the client what re-rendering
would: hop-by-hop headers gone, our X-Request-Id added, nothing else changed. Every other
head takes the general path. Each case runs on both engines; the bytes must agree."""

from __future__ import annotations

import asyncio

import pytest

from shadowproxy.fast import conn
from tests.conftest import make_config

NGINX = (
    b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Sun, 29 Nov 2026 20:00:00 GMT\r\n"
    b"Content-Type: application/json\r\nContent-Length: 11\r\nConnection: keep-alive\r\n"
    b'ETag: "6543-b"\r\n\r\n{"ok": true}'[:-1]
)


async def exchange(url: str, times: int = 2) -> list[bytes]:
    """`times` keep-alive GETs on one connection; each whole response, its head as sent and
    its body de-chunked when it came chunked."""
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    out = []
    try:
        async with asyncio.timeout(10):
            for i in range(times):
                writer.write(b"GET /v HTTP/1.1\r\nHost: a\r\nX-Request-Id: req-%d\r\n\r\n" % i)
                head = await reader.readuntil(b"\r\n\r\n")
                lines = [line.lower() for line in head.split(b"\r\n")]
                if b"transfer-encoding: chunked" in lines:
                    body = b""
                    while size := int(await reader.readuntil(b"\r\n"), 16):
                        body += (await reader.readexactly(size + 2))[:-2]
                    await reader.readexactly(2)
                else:
                    (length,) = [
                        int(line.split(b":", 1)[1]) for line in lines if line.startswith(b"content-length:")
                    ]
                    body = await reader.readexactly(length)
                out.append(head + body)
    finally:
        writer.close()
    return out


async def through_proxy(raw_upstream, make_upstream, sidecar, tmp_path, response: bytes) -> list[bytes]:
    primary = await raw_upstream(response)
    shadow = await make_upstream()
    r = await sidecar(make_config(primary.url, shadow.url, tmp_path))
    return await exchange(r.proxy_url)


async def test_an_nginx_head_reaches_the_client_less_its_connection_line_plus_our_request_id(
    raw_upstream, make_upstream, sidecar, tmp_path
):
    got = await through_proxy(raw_upstream, make_upstream, sidecar, tmp_path, NGINX)
    for i, raw in enumerate(got):
        expected = NGINX.replace(b"Connection: keep-alive\r\n", b"").replace(
            b"\r\n\r\n", b"\r\nX-Request-Id: req-%d\r\n\r\n" % i
        )
        assert raw == expected


@pytest.mark.parametrize(
    ("response", "gone"),
    [
        # Hop-by-hop headers, each alone or beside the usual Connection line.
        (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nKeep-Alive: timeout=5\r\n\r\nok", b"Keep-Alive"),
        (
            b"HTTP/1.1 200 OK\r\nConnection: keep-alive\r\nUpgrade: h2c\r\nContent-Length: 2\r\n\r\nok",
            b"Upgrade",
        ),
        (
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nProxy-Authenticate: Basic\r\n\r\nok",
            b"Proxy-Authenticate",
        ),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTrailer: X-T\r\n\r\nok", b"Trailer"),
        # A Connection header naming one of its own, or spelt otherwise than nginx does.
        (b"HTTP/1.1 200 OK\r\nConnection: X-Hop\r\nX-Hop: 1\r\nContent-Length: 2\r\n\r\nok", b"X-Hop"),
        (b"HTTP/1.1 200 OK\r\nconnection: keep-alive\r\nContent-Length: 2\r\n\r\nok", b"connection"),
        (b"HTTP/1.1 200 OK\r\nConnection:keep-alive\r\nContent-Length: 2\r\n\r\nok", b"Connection"),
        (b"HTTP/1.1 200 OK\r\nConnection: Keep-Alive\r\nContent-Length: 2\r\n\r\nok", b"Connection"),
    ],
)
async def test_a_head_with_hop_by_hop_headers_loses_them_on_a_keep_alive_exchange(
    raw_upstream, make_upstream, sidecar, tmp_path, response, gone
):
    got = await through_proxy(raw_upstream, make_upstream, sidecar, tmp_path, response)
    for i, raw in enumerate(got):
        head, _, body = raw.partition(b"\r\n\r\n")
        names = [line.split(b":", 1)[0].lower() for line in head.split(b"\r\n")[1:]]
        assert gone.lower() not in names and b"connection" not in names
        assert b"X-Request-Id: req-%d" % i in head.split(b"\r\n") and names.count(b"x-request-id") == 1
        assert head.startswith(b"HTTP/1.1 200 OK\r\n") and body == b"ok"


async def test_the_upstreams_own_request_id_wins(raw_upstream, make_upstream, sidecar, tmp_path):
    response = b"HTTP/1.1 200 OK\r\nX-Request-Id: theirs\r\nContent-Length: 2\r\n\r\nok"
    got = await through_proxy(raw_upstream, make_upstream, sidecar, tmp_path, response)
    assert got == [response, response]


async def test_the_status_line_is_the_clients_version(raw_upstream, make_upstream, sidecar, tmp_path):
    response = b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok"
    got = await through_proxy(raw_upstream, make_upstream, sidecar, tmp_path, response)
    assert all(raw.startswith(b"HTTP/1.1 200 OK\r\n") and raw.endswith(b"\r\n\r\nok") for raw in got)


async def test_a_status_line_without_a_phrase(raw_upstream, make_upstream, sidecar, tmp_path):
    primary = await raw_upstream(b"HTTP/1.1 200 \r\nContent-Length: 2\r\n\r\nok")
    shadow = await make_upstream()
    r = await sidecar(make_config(primary.url, shadow.url, tmp_path))
    # The fast engine writes the standard phrase (its general path, not the verbatim one);
    # aiohttp's keeps the empty one.
    line = b"HTTP/1.1 200 OK" if r.sidecar.cfg.engine == "fast" else b"HTTP/1.1 200 "
    assert all(raw.startswith(line + b"\r\n") for raw in await exchange(r.proxy_url))


async def test_a_head_line_spelt_unusually_is_forwarded_as_spelt_by_the_fast_engine(
    raw_upstream, make_upstream, sidecar, tmp_path
):
    response = b"HTTP/1.1 200 OK\r\nContent-Type:text/plain\r\nContent-Length: 2\r\n\r\nok"
    primary = await raw_upstream(response)
    shadow = await make_upstream()
    r = await sidecar(make_config(primary.url, shadow.url, tmp_path))
    (raw,) = await exchange(r.proxy_url, times=1)
    # aiohttp's engine re-renders every head; the fast one forwards this one as it came.
    spelt = b"Content-Type:text/plain" if r.sidecar.cfg.engine == "fast" else b"Content-Type: text/plain"
    assert raw == response.replace(b"Content-Type:text/plain", spelt).replace(
        b"\r\n\r\n", b"\r\nX-Request-Id: req-0\r\n\r\n"
    )


async def test_a_chunked_head_is_reframed_not_forwarded(raw_upstream, make_upstream, sidecar, tmp_path):
    response = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n"
    got = await through_proxy(raw_upstream, make_upstream, sidecar, tmp_path, response)
    for i, raw in enumerate(got):
        head, _, body = raw.partition(b"\r\n\r\n")
        # The fast engine sends the whole body with a length, aiohttp's re-chunks it.
        assert body == b"ok" and b"X-Request-Id: req-%d" % i in head.split(b"\r\n")


def test_the_notable_lengths_are_those_of_the_names_that_matter():
    names = conn._NOT_VERBATIM | {b"content-length", b"connection"}
    assert sorted(conn._NOTABLE_LENGTHS) == sorted({len(n) for n in names})


async def test_a_head_with_extra_spaces_before_its_connection_line_is_still_cleaned(
    raw_upstream, make_upstream, sidecar, tmp_path
):
    # The Connection line is not where "Name: value" lines would put it: no verbatim cut.
    response = b"HTTP/1.1 200 OK\r\nX-A:   spaced\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\nok"
    got = await through_proxy(raw_upstream, make_upstream, sidecar, tmp_path, response)
    for raw in got:
        head = raw.partition(b"\r\n\r\n")[0]
        assert b"connection" not in head.lower() and b"X-A: spaced" in head.split(b"\r\n")
