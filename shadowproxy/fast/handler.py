"""The primary path on the fast engine: the same steps as proxy.ProxyHandler (shared
through forwarding.ProxyCore), on the httptools server and pool instead of aiohttp's."""

from __future__ import annotations

import time
from http import HTTPStatus

from shadowproxy.exchange import Headers, UpstreamResult
from shadowproxy.fast.client import FAST_ERRORS, Body, Response
from shadowproxy.fast.server import Connection
from shadowproxy.fast.tunnel import tunnel
from shadowproxy.fast.upstream import FastUpstream
from shadowproxy.fast.wire import Request
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
from shadowproxy.responses import error_body, error_headers


class FastProxy:
    def __init__(self, core: ProxyCore, primary: FastUpstream) -> None:
        self._core = core
        self._primary = primary

    async def __call__(self, req: Request, conn: Connection) -> None:
        core = self._core
        raw_path, _, query = req.target.partition("?")
        route = core.router.resolve(raw_path, req.method)
        method = req.method
        host = req.host
        request_id = request_id_for(req.request_id)
        forwarded = forward_headers(req.headers, req.peer, "http", host, request_id)

        if req.upgrade:
            core.rec.skipped(route, method, "websocket")
            await tunnel(req, conn, self._primary, forwarded, route, request_id, core.rec)
            return

        skip = core.policy.decide(route, method, req.header)
        body: bytes | None = None
        rest = False
        if skip is None and req.body is not None:
            body, rest = await read_bounded(req.body.read, core.max_body)
            if rest:
                skip = "body_too_large"
        pair = core.shadow_begin(skip, route, method, raw_path, query, forwarded, body, request_id, host)

        data: Body
        if body is not None:
            data = Chain(body, req.body.read) if rest and req.body is not None else body
        elif req.body is None:
            data = None
        else:
            # A small body is often all in already: send it as bytes (one write, retryable).
            data = req.body.take() if req.body.complete else Chain(b"", req.body.read)
        result: UpstreamResult | None = None
        try:
            status, result = await self._forward(
                req, conn, route, raw_path, query, forwarded, data, request_id, pair is not None
            )
        finally:
            primary_done(pair, result)
        core.rec.request(route, method, status)

    async def _forward(
        self,
        req: Request,
        conn: Connection,
        route: str,
        path: str,
        query: str,
        forwarded: Headers,
        data: Body,
        request_id: str,
        capture: bool,
    ) -> tuple[int, UpstreamResult]:
        up = self._primary
        started = time.perf_counter()
        host = req.host
        try:
            resp = await up.pool.request(
                req.method, up.head(req.method, path, query, forwarded, host, data), data, up.cfg.timeout_s
            )
        except FAST_ERRORS as e:
            status, detail, result = self._core.primary_failed(route, req.method, e, started)
            body = error_body(status, up.name, detail, request_id)
            conn.respond(req, status, HTTPStatus(status).phrase, error_headers(request_id), body)
            return status, result

        whole = resp.whole()
        if whole is not None:
            # The upstream's head as it came, with our request id (client_headers keeps
            # theirs, and verbatim_head is None when they sent one); else re-rendered.
            head = resp.verbatim_head
            if head is None or not conn.respond_as_is(
                req, resp.status, head, b"X-Request-Id: " + request_id.encode("latin-1") + b"\r\n", whole
            ):
                conn.respond(req, resp.status, resp.reason, client_headers(resp.headers, request_id), whole)
            size, captured = len(whole), whole[: self._core.capture] if capture else b""
        else:
            headers = client_headers(resp.headers, request_id)
            size, captured = await self._stream(req, conn, resp, headers, route, started, capture)
        result = self._core.primary_answered(
            route, req.method, resp.status, tuple(resp.headers), captured, size, resp.sent_at
        )
        return resp.status, result

    async def _stream(
        self,
        req: Request,
        conn: Connection,
        resp: Response,
        headers: list[tuple[str, str]],
        route: str,
        started: float,
        capture: bool,
    ) -> tuple[int, bytes]:
        """Stream a body that has not all arrived: headers first, then chunk by chunk."""
        captured = bytearray()
        size = 0
        limit = self._core.capture if capture else 0
        idle_s = self._primary.cfg.timeout_s
        try:
            conn.start(req, resp.status, resp.reason, headers)
            while chunk := await resp.body.read(idle_s):
                size += len(chunk)
                if len(captured) < limit:
                    captured += chunk[: limit - len(captured)]
                conn.write(chunk)
                await conn.drain()
            conn.end()
        except FAST_ERRORS as e:
            if conn.lost:
                log.debug("client went away during %s %s after %d bytes", req.method, route, size)
                raise
            self._core.primary_cut(route, req.method, e, started, size)
            # Headers are already sent: the only honest signal left is to cut the connection.
            conn.abort()
            raise ConnectionResetError("primary failed mid-body") from e
        finally:
            resp.close()
        return size, bytes(captured)
