"""The primary path on the aiohttp engine: forward each request to the primary and stream
its answer back (the steps both engines share are in forwarding.py).

The client must not be able to tell we are here: bytes of path, query and body reach the
primary unchanged, the answer comes back unchanged (no decompression, no added headers),
and shadowing (see shadow.py) happens beside this path, never in it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

from aiohttp import ClientResponse, web

from shadowproxy.exchange import Headers, UpstreamResult
from shadowproxy.forwarding import (
    Chain,
    ProxyCore,
    client_headers,
    forward_headers,
    log,
    primary_done,
    read_bounded,
    request_id_for,
)
from shadowproxy.responses import error_response
from shadowproxy.transport import TRANSPORT_ERRORS, Upstream
from shadowproxy.websocket import is_websocket_upgrade, proxy_websocket

# Headers aiohttp's server adds to a response on its own (see _prepare_headers); we take
# them back out in on_response_prepare when the upstream did not send them.
_SERVER_DEFAULTS = ("Date", "Server", "Content-Type")


class _ProxiedResponse(web.StreamResponse):
    """A response whose headers are exactly the upstream's."""

    __slots__ = ("upstream_names",)

    def __init__(self, status: int, reason: str | None, upstream_names: frozenset[str]) -> None:
        super().__init__(status=status, reason=reason)
        self.upstream_names = upstream_names


async def strip_server_defaults(request: web.Request, response: web.StreamResponse) -> None:
    """on_response_prepare hook: runs after aiohttp filled in its defaults, before they are sent."""
    if isinstance(response, _ProxiedResponse):
        for name in _SERVER_DEFAULTS:
            if name.lower() not in response.upstream_names:
                response.headers.popall(name, None)


class ProxyHandler:
    def __init__(self, core: ProxyCore, primary: Upstream) -> None:
        self._core = core
        self._primary = primary

    async def handle(self, request: web.Request) -> web.StreamResponse:
        core = self._core
        raw_path, _, query = request.raw_path.partition("?")
        route = core.router.resolve(raw_path, request.method)
        method = request.method
        request_id = request_id_for(request.headers.get("X-Request-Id"))
        forwarded = forward_headers(
            ((k.decode("latin-1"), v.decode("latin-1")) for k, v in request.raw_headers),
            request.remote or "",
            request.scheme,
            request.host,
            request_id,
        )

        if is_websocket_upgrade(request):
            core.rec.skipped(route, method, "websocket")
            return await proxy_websocket(request, self._primary, forwarded, route, core.rec)

        skip = core.policy.decide(route, method, request.headers.get)
        body: bytes | None = None
        rest = False  # True when the body is larger than we captured: the rest streams on
        if skip is None and request.body_exists:
            body, rest = await read_bounded(request.content.readany, core.max_body)
            if rest:
                skip = "body_too_large"
        pair = core.shadow_begin(
            skip, route, method, raw_path, query, forwarded, body, request_id, request.host
        )

        data: bytes | AsyncIterator[bytes] | object | None
        if body is not None:
            data = Chain(body, request.content.readany) if rest else body
        else:
            data = request.content if request.body_exists else None
        result: UpstreamResult | None = None
        try:
            response, result = await self._forward(
                request, route, raw_path, query, forwarded, data, request_id, capture=pair is not None
            )
        finally:
            primary_done(pair, result)
        core.rec.request(route, method, response.status)
        return response

    async def _forward(
        self,
        request: web.Request,
        route: str,
        path: str,
        query: str,
        forwarded: Headers,
        data: object,
        request_id: str,
        capture: bool,
    ) -> tuple[web.StreamResponse, UpstreamResult]:
        up = self._primary
        started = time.perf_counter()
        try:
            async with asyncio.timeout(up.cfg.timeout_s):
                upstream = await up.session.request(
                    request.method,
                    up.url(path, query),
                    headers=up.headers(forwarded, request.host),
                    data=data,
                    allow_redirects=False,
                )
        except TRANSPORT_ERRORS as e:
            status, detail, result = self._core.primary_failed(route, request.method, e, started)
            return error_response(status, up.name, detail, request_id), result

        captured = bytearray()
        size = 0
        try:
            headers = tuple((k.decode("latin-1"), v.decode("latin-1")) for k, v in upstream.raw_headers)
            response = self._response_for(upstream.status, upstream.reason, headers, request_id)
            await response.prepare(request)
            # The headers are out; the body is bounded only by sock_read between chunks.
            async for chunk in _iter_body(upstream, up.cfg.timeout_s):
                size += len(chunk)
                if capture and len(captured) < self._core.capture:
                    captured += chunk[: self._core.capture - len(captured)]
                await response.write(chunk)
            await response.write_eof()
        except TRANSPORT_ERRORS as e:
            if request.transport is None or request.transport.is_closing():
                log.debug("client went away during %s %s after %d bytes", request.method, route, size)
                raise
            self._core.primary_cut(route, request.method, e, started, size)
            # Headers are already sent: the only honest signal left is to cut the connection.
            raise
        finally:
            upstream.release()
        result = self._core.primary_answered(
            route, request.method, upstream.status, headers, bytes(captured), size, started
        )
        return response, result

    def _response_for(
        self, status: int, reason: str | None, headers: Headers, request_id: str
    ) -> web.StreamResponse:
        kept = client_headers(headers, request_id)
        response = _ProxiedResponse(status, reason, frozenset(k.lower() for k, _ in kept))
        h = response.headers
        for k, v in kept:
            h.add(k, v)
        return response


async def _iter_body(upstream: ClientResponse, idle_timeout_s: float) -> AsyncIterator[bytes]:
    """Stream the upstream body; an idle gap longer than the timeout is an error."""
    content = upstream.content
    while True:
        async with asyncio.timeout(idle_timeout_s):
            chunk = await content.readany()
        if not chunk:
            return
        yield chunk
