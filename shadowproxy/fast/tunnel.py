"""Upgrade requests (WebSocket, or any other `Upgrade`): a byte tunnel to the primary.

The request head goes to the primary with its Connection/Upgrade kept (the one place they
are forwarded); the primary's answer goes back as it came. After a 101 both directions are
spliced until either side closes, so subprotocols, extensions and close codes pass through
untouched. Never shadowed: a socket is a session with side effects, not a replayable request.
"""

from __future__ import annotations

import asyncio
import time
from http import HTTPStatus
from typing import TYPE_CHECKING, cast

from httptools import HttpParserError, HttpParserUpgrade, HttpResponseParser

from shadowproxy.exchange import Headers, UpstreamResult
from shadowproxy.fast.client import FAST_ERRORS, request_head
from shadowproxy.fast.conn import CLOSED, UpstreamError
from shadowproxy.fast.upstream import FastUpstream
from shadowproxy.fast.wire import Request
from shadowproxy.forwarding import failed_result
from shadowproxy.responses import error_body, error_headers
from shadowproxy.transport import classify

if TYPE_CHECKING:
    from shadowproxy.fast.server import Connection
    from shadowproxy.recording import Recorder


async def tunnel(
    req: Request,
    conn: Connection,
    primary: FastUpstream,
    forwarded: Headers,
    route: str,
    request_id: str,
    rec: Recorder,
) -> None:
    raw_path, _, query = req.target.partition("?")
    headers = primary.headers(forwarded, req.header("host"))
    headers += [("Connection", "Upgrade"), ("Upgrade", req.header("upgrade") or "")]
    started = time.perf_counter()
    up: _Upstream | None = None
    try:
        async with asyncio.timeout(primary.cfg.timeout_s):
            up = await primary.pool.open(_Upstream)
            up.send(request_head(req.method, primary.target(raw_path, query), headers, None))
            up.send(conn.relay_to(up.transport))
            status = await up.head
    except FAST_ERRORS as e:
        if up is not None:
            up.close()
        kind, detail = classify(e)
        rec.upstream(route, req.method, failed_result(detail, kind, time.perf_counter() - started))
        code = 504 if kind == "timeout" else 502
        body = error_body(code, primary.name, detail, request_id)
        conn.respond(req, code, HTTPStatus(code).phrase, error_headers(request_id), body)
        rec.request(route, req.method, code)
        return
    latency = time.perf_counter() - started
    rec.upstream(route, req.method, UpstreamResult("primary", status, (), b"", latency))
    rec.request(route, req.method, status)
    up.relay_to(conn)
    await up.done


class _Upstream(asyncio.Protocol):
    """The primary's side of the tunnel: collects its answer's head, then relays."""

    def __init__(self) -> None:
        loop = asyncio.get_running_loop()
        self.head: asyncio.Future[int] = loop.create_future()
        self.done: asyncio.Future[None] = loop.create_future()
        self._transport: asyncio.Transport | None = None
        self._parser = HttpResponseParser(self)
        self._early = bytearray()  # the answer until the handler takes over
        self._client: Connection | None = None
        self._switched = False
        self._finished = False  # a refusal (not 101) was relayed whole: the tunnel ends

    @property
    def transport(self) -> asyncio.Transport:
        assert self._transport is not None
        return self._transport

    def send(self, data: bytes) -> None:
        if data and self._transport is not None and not self._transport.is_closing():
            self._transport.write(data)

    def relay_to(self, client: Connection) -> None:
        self._client = client
        early, self._early = bytes(self._early), bytearray()
        self._to_client(early)
        if self._finished:
            self.close()

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()

    # ---- asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, only alike.
        self._transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        if self._client is None:
            self._early += data
        else:
            self._to_client(data)
        if self._switched:
            return
        try:
            self._parser.feed_data(data)
        except HttpParserUpgrade:
            self._switched = True
            self._settle(101)
        except HttpParserError as e:
            self._settle(UpstreamError("error", f"invalid upstream response: {e}"))
            self.close()
        if self._finished and self._client is not None:
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self._settle(UpstreamError("error", CLOSED))
        if self._client is not None:
            self._client.close()
        if not self.done.done():
            self.done.set_result(None)

    def pause_writing(self) -> None:
        if self._client is not None and self._client.transport is not None:
            self._client.transport.pause_reading()

    def resume_writing(self) -> None:
        if self._client is not None and self._client.transport is not None:
            self._client.transport.resume_reading()

    # ---- httptools callbacks
    def on_headers_complete(self) -> None:
        self._settle(self._parser.get_status_code())

    def on_message_complete(self) -> None:
        if not self._parser.should_upgrade():
            self._finished = True

    def _settle(self, outcome: int | UpstreamError) -> None:
        if self.head.done():
            return
        if isinstance(outcome, int):
            self.head.set_result(outcome)
        else:
            self.head.set_exception(outcome)

    def _to_client(self, data: bytes) -> None:
        client = self._client
        if not data or client is None:
            return
        try:
            client.raw_write(data)
        except ConnectionError:
            self.close()
