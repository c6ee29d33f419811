"""The primary path: forward each request to the primary and stream its answer back.

The client must not be able to tell we are here: bytes of path, query and body reach the
primary unchanged, the answer comes back unchanged (no decompression, no added headers),
and shadowing (see shadow.py) happens beside this path, never in it.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Generic, Protocol, TypeVar

from aiohttp import ClientResponse, web

from shadowproxy import config
from shadowproxy.exchange import ErrorKind, Headers, RequestSnapshot, SkipReason, UpstreamResult
from shadowproxy.responses import error_response
from shadowproxy.routes import Router
from shadowproxy.shadow import ShadowDispatcher, ShadowPolicy
from shadowproxy.transport import HOP_BY_HOP, TRANSPORT_ERRORS, Upstream, classify, strip_hop_by_hop
from shadowproxy.websocket import is_websocket_upgrade, proxy_websocket

log = logging.getLogger("shadowproxy.proxy")

# Headers aiohttp's server adds to a response on its own (see _prepare_headers); we take
# them back out in on_response_prepare when the upstream did not send them.
_SERVER_DEFAULTS = ("Date", "Server", "Content-Type")


class Recorder(Protocol):
    """Where the primary path reports what happened (metrics and store, fanned out by app)."""

    def request(self, route: str, method: str, code: int) -> None: ...
    def upstream(self, route: str, method: str, result: UpstreamResult) -> None: ...
    def skipped(self, route: str, method: str, reason: SkipReason) -> None: ...


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


def request_id_for(incoming: str | None) -> str:
    """The client's X-Request-Id, or a new one: the same id reaches both backends."""
    # 128 random bits in hex. A correlation id, not a secret: the process's Mersenne Twister
    # (seeded from os.urandom in each worker) costs no syscall, where os.urandom's released
    # and re-took the GIL on every request.
    return incoming or f"{_ids.getrandbits(128):032x}"


_ids = random.Random()


# Not forwarded as the client sent them: hop-by-hop, and the ones we set ourselves.
_REPLACED = HOP_BY_HOP | {"x-forwarded-proto", "x-forwarded-host", "x-request-id"}


def forward_headers(
    raw: Iterable[tuple[str, str]], peer: str, scheme: str, host: str | None, request_id: str
) -> Headers:
    """The client's headers as forwarded: hop-by-hop gone, X-Forwarded-* and X-Request-Id ours."""
    out = strip_hop_by_hop(raw, _REPLACED)
    prior = [v for k, v in out if len(k) == 15 and k.lower() == "x-forwarded-for"]
    if prior:
        out = [(k, v) for k, v in out if len(k) != 15 or k.lower() != "x-forwarded-for"]
        out.append(("X-Forwarded-For", f"{', '.join(prior)}, {peer}"))
    else:
        out.append(("X-Forwarded-For", peer))
    out.append(("X-Forwarded-Proto", scheme))
    if host:
        out.append(("X-Forwarded-Host", host))
    out.append(("X-Request-Id", request_id))
    return tuple(out)


U = TypeVar("U", bound=Upstream)


class ProxyCore(Generic[U]):
    """What both engines do around the forwarding itself: start the shadow, report failures.
    `U` is the engine's kind of primary upstream."""

    def __init__(
        self,
        cfg: config.Config,
        router: Router,
        primary: U,
        policy: ShadowPolicy,
        dispatcher: ShadowDispatcher,
        recorder: Recorder,
    ) -> None:
        self._cfg = cfg
        self._primary = primary
        self._router = router
        self._policy = policy
        self._dispatcher = dispatcher
        self._rec = recorder
        self._max_body = cfg.shadowing.max_body_bytes
        self._capture = cfg.shadowing.max_response_bytes
        self._marker = (cfg.shadowing.marker_header, "1")

    def shadow_begin(
        self,
        skip: SkipReason | None,
        route: str,
        method: str,
        raw_path: str,
        query: str,
        forwarded: Headers,
        body: bytes | None,
        request_id: str,
        host: str | None,
    ) -> asyncio.Future[UpstreamResult] | None:
        """Start the shadow call unless `skip` (or the in-flight cap) says no, and record a skip.
        Returns the future the primary's result must be set on (see primary_done)."""
        primary_fut: asyncio.Future[UpstreamResult] | None = None
        if skip is None:
            snapshot = RequestSnapshot(
                method=method,
                path=raw_path,
                query=query,
                headers=(*forwarded, self._marker),
                body=body or b"",
                request_id=request_id,
                route=route,
            )
            primary_fut = asyncio.get_running_loop().create_future()
            skip = self._dispatcher.try_start(snapshot, host, primary_fut)
            if skip is not None:
                primary_fut = None
        if skip is not None:
            self._rec.skipped(route, method, skip)
        return primary_fut

    def primary_failed(
        self, route: str, method: str, exc: BaseException, started: float
    ) -> tuple[int, str, UpstreamResult]:
        """Record a primary that gave no answer; returns (status for the client, detail, result)."""
        kind, detail = classify(exc)
        result = failed_result(detail, kind, time.perf_counter() - started)
        self._rec.upstream(route, method, result)
        log.warning("primary %s %s: %s", method, route, detail)
        return (504 if kind == "timeout" else 502), detail, result

    def primary_answered(
        self,
        route: str,
        method: str,
        status: int,
        headers: Headers,
        captured: bytes,
        size: int,
        since: float,
    ) -> UpstreamResult:
        """Record the primary's complete answer; the result the shadow side compares with.
        Its latency counts from `since`: the send, where the engine can tell (fast engine)."""
        result = UpstreamResult(
            backend="primary",
            status=status,
            headers=headers,
            body=captured,
            latency_s=time.perf_counter() - since,
            body_size=size,
            truncated=size > len(captured),
        )
        self._rec.upstream(route, method, result)
        return result

    def primary_cut(self, route: str, method: str, exc: BaseException, started: float, size: int) -> None:
        """Record a primary that failed after its headers went to the client."""
        kind, detail = classify(exc)
        self._rec.upstream(route, method, failed_result(detail, kind, time.perf_counter() - started))
        log.warning("primary %s %s failed mid-body after %d bytes: %s", method, route, size, detail)


def client_headers(upstream: Iterable[tuple[str, str]], request_id: str) -> list[tuple[str, str]]:
    """The upstream's response headers as the client gets them: hop-by-hop gone, and the
    request id added unless the upstream sent its own."""
    kept = strip_hop_by_hop(upstream)
    for k, _ in kept:
        if len(k) == 12 and k.lower() == "x-request-id":
            return kept
    kept.append(("X-Request-Id", request_id))
    return kept


def primary_done(fut: asyncio.Future[UpstreamResult] | None, result: UpstreamResult | None) -> None:
    """Hand the primary's answer to the waiting shadow task (a failure if there was none)."""
    if fut is not None and not fut.done():
        # No result: the primary failed after its headers went out, or the client left.
        fut.set_result(result or failed_result("primary gave no complete answer"))


class ProxyHandler(ProxyCore[Upstream]):
    async def handle(self, request: web.Request) -> web.StreamResponse:
        raw_path, _, query = request.raw_path.partition("?")
        route = self._router.resolve(raw_path, request.method)
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
            self._rec.skipped(route, method, "websocket")
            return await proxy_websocket(request, self._primary, forwarded, route, self._rec)

        skip = self._policy.decide(route, method, request.headers.get)
        body: bytes | None = None
        rest = False  # True when the body is larger than we captured: the rest streams on
        if skip is None and request.body_exists:
            body, rest = await read_bounded(request.content.readany, self._max_body)
            if rest:
                skip = "body_too_large"
        primary_fut = self.shadow_begin(
            skip, route, method, raw_path, query, forwarded, body, request_id, request.host
        )

        data: bytes | AsyncIterator[bytes] | object | None
        if body is not None:
            data = chain(body, request.content.readany) if rest else body
        else:
            data = request.content if request.body_exists else None
        result: UpstreamResult | None = None
        try:
            response, result = await self._forward(
                request, route, raw_path, query, forwarded, data, request_id, capture=primary_fut is not None
            )
        finally:
            primary_done(primary_fut, result)
        self._rec.request(route, method, response.status)
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
            status, detail, result = self.primary_failed(route, request.method, e, started)
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
                if capture and len(captured) < self._capture:
                    captured += chunk[: self._capture - len(captured)]
                await response.write(chunk)
            await response.write_eof()
        except TRANSPORT_ERRORS as e:
            if request.transport is None or request.transport.is_closing():
                log.debug("client went away during %s %s after %d bytes", request.method, route, size)
                raise
            self.primary_cut(route, request.method, e, started, size)
            # Headers are already sent: the only honest signal left is to cut the connection.
            raise
        finally:
            upstream.release()
        result = self.primary_answered(
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


Read = Callable[[], Awaitable[bytes]]  # the next chunk of a request body; b"" at its end


async def read_bounded(read: Read, limit: int) -> tuple[bytes, bool]:
    """Read the body up to `limit` bytes (a chunk more at most); True if more remains,
    then the rest still streams on through `chain`. Both engines capture this way."""
    buf = bytearray()
    while len(buf) <= limit:
        chunk = await read()
        if not chunk:
            return bytes(buf), False
        buf += chunk
    return bytes(buf), True


async def chain(head: bytes, read: Read) -> AsyncIterator[bytes]:
    """`head`, then the rest of the body as it arrives."""
    if head:
        yield head
    while chunk := await read():
        yield chunk


async def _iter_body(upstream: ClientResponse, idle_timeout_s: float) -> AsyncIterator[bytes]:
    """Stream the upstream body; an idle gap longer than the timeout is an error."""
    content = upstream.content
    while True:
        async with asyncio.timeout(idle_timeout_s):
            chunk = await content.readany()
        if not chunk:
            return
        yield chunk


def failed_result(detail: str, kind: ErrorKind = "error", latency_s: float = 0.0) -> UpstreamResult:
    return UpstreamResult.failure("primary", kind, detail, latency_s)
