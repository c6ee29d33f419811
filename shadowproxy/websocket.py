"""WebSocket passthrough to the primary. Never shadowed: a socket is a session with side
effects in both directions, not a request we can replay."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

import aiohttp
from aiohttp import WSMsgType, web

from shadowproxy.exchange import Headers, UpstreamResult
from shadowproxy.responses import error_response
from shadowproxy.transport import TRANSPORT_ERRORS, Upstream, classify

if TYPE_CHECKING:
    from shadowproxy.recording import Recorder

log = logging.getLogger("shadowproxy.websocket")

# The handshake headers are the client library's to generate, per connection.
_HANDSHAKE = frozenset(
    {"sec-websocket-key", "sec-websocket-version", "sec-websocket-extensions", "sec-websocket-protocol"}
)
MAX_MESSAGE = 4 * 1024 * 1024


def is_websocket_upgrade(request: web.Request) -> bool:
    return (
        request.headers.get("Upgrade", "").lower() == "websocket"
        and "upgrade" in request.headers.get("Connection", "").lower()
    )


async def proxy_websocket(
    request: web.Request, primary: Upstream, forwarded: Headers, route: str, rec: Recorder
) -> web.StreamResponse:
    raw_path, _, query = request.raw_path.partition("?")
    protocols = tuple(
        p.strip() for p in request.headers.get("Sec-WebSocket-Protocol", "").split(",") if p.strip()
    )
    headers = [(k, v) for k, v in primary.headers(forwarded, request.host) if k.lower() not in _HANDSHAKE]
    loop = asyncio.get_running_loop()
    started = loop.time()
    try:
        upstream = await primary.session.ws_connect(
            primary.url(raw_path, query).with_scheme(
                "wss" if primary.url("", "").scheme == "https" else "ws"
            ),
            headers=headers,
            protocols=protocols,
            timeout=aiohttp.ClientWSTimeout(ws_receive=None, ws_close=10.0),
            max_msg_size=MAX_MESSAGE,
            autoclose=False,
            autoping=True,
        )
    except aiohttp.WSServerHandshakeError as e:
        # The upstream refused the upgrade: pass its status on, as a plain response.
        rec.upstream(route, request.method, _answered(e.status, loop.time() - started))
        return web.Response(status=e.status, text=e.message or "websocket upgrade refused")
    except TRANSPORT_ERRORS as e:
        kind, detail = classify(e)
        rec.upstream(
            route, request.method, UpstreamResult.failure("primary", kind, detail, loop.time() - started)
        )
        status = 504 if kind == "timeout" else 502
        rec.request(route, request.method, status)
        return error_response(status, primary.name, detail, dict(forwarded).get("X-Request-Id", ""))

    rec.upstream(route, request.method, _answered(101, loop.time() - started))
    client = web.WebSocketResponse(
        protocols=(upstream.protocol,) if upstream.protocol else (), max_msg_size=MAX_MESSAGE, autoclose=False
    )
    await client.prepare(request)
    rec.request(route, request.method, 101)
    async with upstream:
        await asyncio.gather(_pump(client, upstream), _pump(upstream, client))
    return client


async def _pump(
    src: web.WebSocketResponse | aiohttp.ClientWebSocketResponse,
    dst: web.WebSocketResponse | aiohttp.ClientWebSocketResponse,
) -> None:
    """Copy messages one way; a close on one side closes the other with the same code."""
    async for msg in src:
        if msg.type == WSMsgType.TEXT:
            await dst.send_str(msg.data)
        elif msg.type == WSMsgType.BINARY:
            await dst.send_bytes(msg.data)
        elif msg.type == WSMsgType.CLOSE:
            await dst.close(code=msg.data or 1000, message=(msg.extra or "").encode())
            await src.close()
            return
        elif msg.type == WSMsgType.ERROR:
            break
    if not dst.closed:
        await dst.close(code=src.close_code or 1011)


def _answered(status: int, latency_s: float) -> UpstreamResult:
    return UpstreamResult(backend="primary", status=status, headers=(), body=b"", latency_s=latency_s)
