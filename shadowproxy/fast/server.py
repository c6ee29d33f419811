"""An HTTP/1.1 server on asyncio protocols with httptools' request parser.

One task per connection serves its requests in order (pipelined ones wait their turn),
request bodies stream with back-pressure, and the response is exactly what the handler
writes: no Date, Server or Content-Type of our own. Malformed input gets a 400 and the
connection is closed. `close()` drains: stop accepting, close idle keep-alive connections,
let in-flight exchanges finish up to a deadline, then abort the rest.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Final, cast

from httptools import HttpParserError, HttpParserUpgrade, HttpRequestParser

from shadowproxy.fast.body import BodyStream
from shadowproxy.fast.wire import Request, Writer
from shadowproxy.tasks import TaskTracker

log: Final = logging.getLogger("shadowproxy.fast")

Handler = Callable[[Request, "Connection"], Awaitable[None]]

MAX_HEAD: Final = 64 * 1024
MAX_PIPELINED: Final = 16
KEEPALIVE_S: Final = 75.0  # aiohttp's default keep-alive timeout
_SWEEP_S: Final = 5.0


class _BadRequest:
    __slots__ = ("reason", "status")

    def __init__(self, status: int, reason: str) -> None:
        self.status = status
        self.reason = reason


class Connection(asyncio.Protocol, Writer):
    def __init__(self, server: FastServer) -> None:
        Writer.__init__(self)
        self._server = server
        self._parser = HttpRequestParser(self)
        self._queue: deque[Request | _BadRequest] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._url = b""
        self._headers: list[tuple[str, str]] = []
        self._head_size = 0
        self._has_length = False
        self._has_te = False
        self._expect = False
        self._host: str | None = None
        self._request_id = ""
        self._reading: Request | None = None  # the request whose body is arriving
        self._peer = ""
        self._paused = {"body": False, "queue": False, "rejected": False}
        self._upgraded = False
        self._raw_early = bytearray()
        self._raw_peer: asyncio.Transport | None = None
        self._task: asyncio.Task[None] | None = None
        self._busy = False
        self._eof = False
        self._loop = asyncio.get_running_loop()
        self.last_active = 0.0

    # ---- asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, only alike.
        self.transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        self._peer = peer[0] if isinstance(peer, tuple) else ""
        self.last_active = asyncio.get_running_loop().time()
        self._server.conns.add(self)
        self._task = self._server.tracker.spawn(self._serve(), name="http connection")

    def data_received(self, data: bytes) -> None:
        if self._upgraded:
            if self._raw_peer is not None:
                self._raw_peer.write(data)
            else:
                self._raw_early += data
                if len(self._raw_early) > MAX_HEAD:
                    self._pause("body", True)
            return
        try:
            self._parser.feed_data(data)
        except HttpParserUpgrade as e:
            self._upgraded = True
            self._raw_early += data[e.args[0] :]
        except HttpParserError as e:
            self._reject(431 if self._head_size > MAX_HEAD else 400, str(e))

    def eof_received(self) -> bool:
        if self._raw_peer is not None:
            self._raw_peer.close()
            return False
        self._eof = True
        if self._reading is not None and self._reading.body is not None:
            self._reading.body.fail(ConnectionResetError("client closed mid-request"))
        self._push(None)
        # Keep the socket open for writing: responses to what was already sent still go out.
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self._server.conns.discard(self)
        if self._raw_peer is not None:
            self._raw_peer.close()
        if self._reading is not None and self._reading.body is not None:
            self._reading.body.fail(ConnectionResetError("client went away"))
        self._push(None)
        self.wake_writer(ConnectionResetError("client went away"))

    def pause_writing(self) -> None:
        if self._raw_peer is not None:
            self._raw_peer.pause_reading()
        self.write_paused = True

    def resume_writing(self) -> None:
        if self._raw_peer is not None:
            self._raw_peer.resume_reading()
        self.write_paused = False
        self.wake_writer(None)

    # ---- httptools callbacks
    def on_message_begin(self) -> None:
        self._url = b""
        self._headers = []
        self._head_size = 0
        self._has_length = self._has_te = self._expect = False
        self._host = None
        self._request_id = ""

    def on_url(self, url: bytes) -> None:
        self._url += url
        self._head_size += len(url)
        if self._head_size > MAX_HEAD:
            raise HttpParserError("request head too large")

    def on_header(self, name: bytes, value: bytes) -> None:
        self._head_size += len(name) + len(value) + 4
        if self._head_size > MAX_HEAD:
            raise HttpParserError("request head too large")
        k, v = name.decode("latin-1"), value.decode("latin-1")
        n = len(name)
        if n in (4, 6, 12, 14, 17):
            lname = name.lower()
            if lname == b"host":
                self._host = self._host if self._host is not None else v
            elif lname == b"x-request-id":
                self._request_id = self._request_id or v
            elif lname == b"content-length":
                self._has_length = value.strip() not in (b"0", b"")
                if self._has_te:
                    raise HttpParserError("Content-Length with Transfer-Encoding")
            elif lname == b"transfer-encoding":
                if self._has_length or any(k.lower() == "content-length" for k, _ in self._headers):
                    raise HttpParserError("Content-Length with Transfer-Encoding")
                self._has_te = True
            elif lname == b"expect":
                self._expect = value.lower() == b"100-continue"
        self._headers.append((k, v))

    def on_headers_complete(self) -> None:
        p = self._parser
        has_body = self._has_length or self._has_te
        req = Request(
            method=p.get_method().decode("ascii"),
            target=self._url.decode("latin-1"),
            version=p.get_http_version(),
            headers=self._headers,
            keep_alive=p.should_keep_alive(),
            upgrade=p.should_upgrade(),
            body=BodyStream(self._body_pressure) if has_body else None,
            peer=self._peer,
            expect_continue=self._expect and has_body,
            host=self._host,
            request_id=self._request_id,
        )
        if req.method == "CONNECT":
            raise HttpParserError("CONNECT is not proxied")
        self._reading = req
        self._push(req)

    def on_body(self, body: bytes) -> None:
        req = self._reading
        if req is not None and req.body is not None:
            req.body.feed(body)

    def on_message_complete(self) -> None:
        req, self._reading = self._reading, None
        if req is not None and req.body is not None:
            req.body.feed_eof()

    # ---- tunnel support (see tunnel.py)
    def relay_to(self, peer: asyncio.Transport) -> bytes:
        """From now on, bytes from the client go straight to `peer`; returns those that came
        after the upgrade request's head and before this call."""
        self._raw_peer = peer
        if self.lost:
            peer.close()  # the client left while the tunnel was being set up
        early = bytes(self._raw_early)
        self._raw_early.clear()
        self._pause("body", False)
        return early

    # ---- the connection's task
    async def _serve(self) -> None:
        queue = self._queue
        try:
            while True:
                # Inline rather than a helper coroutine: this runs once per request.
                while not queue:
                    if self._eof or self.lost or self.transport is None or self.transport.is_closing():
                        return
                    self._waiter = self._loop.create_future()
                    await self._waiter
                item = queue.popleft()
                if len(queue) < MAX_PIPELINED // 2 and self._paused["queue"]:
                    self._pause("queue", False)
                if isinstance(item, _BadRequest):
                    log.debug("fast server: rejected a request from %s: %s", self._peer, item.reason)
                    self.send_error(item.status)
                    return
                self.head_sent = False
                if item.expect_continue:
                    self.raw_write(b"HTTP/1.1 100 Continue\r\n\r\n")
                self._busy = True
                try:
                    await self._server.handler(item, self)
                finally:
                    self._busy = False
                    self.last_active = self._loop.time()
                if not self.reusable(item) or self._stopping or item.upgrade:
                    return
                if item.body is not None and not item.body.finished:
                    return  # the handler left part of the body unread: its framing is lost
        except ConnectionError:
            pass  # the client went away; nothing left to tell it
        except Exception:
            log.exception("fast server: handler failed")
            if not self.head_sent:
                self.send_error(500)
        finally:
            self.close()

    def _push(self, item: Request | _BadRequest | None) -> None:
        if item is not None:
            self._queue.append(item)
            if len(self._queue) >= MAX_PIPELINED:
                self._pause("queue", True)
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _reject(self, status: int, reason: str) -> None:
        self._pause("rejected", True)  # read nothing more from a client that spoke garbage
        if self._reading is not None and self._reading.body is not None:
            self._reading.body.fail(ConnectionResetError("malformed request body"))
        self._push(_BadRequest(status, reason))

    def _body_pressure(self, paused: bool) -> None:
        self._pause("body", paused)

    def _pause(self, why: str, on: bool) -> None:
        before = any(self._paused.values())
        self._paused[why] = on
        after = any(self._paused.values())
        if before != after and self.transport is not None and not self.lost:
            if after:
                self.transport.pause_reading()
            else:
                self.transport.resume_reading()

    # ---- server side
    def stop(self) -> None:
        """Drain: close now if idle, else after the exchange in progress."""
        self._stopping = True
        if not self._busy and not self._queue:
            self.close()

    def idle_for(self, now: float) -> float:
        return 0.0 if self._busy or self._queue or self._upgraded else now - self.last_active


class FastServer:
    def __init__(self, handler: Handler, *, keepalive_s: float = KEEPALIVE_S) -> None:
        self.handler = handler
        self.conns: set[Connection] = set()
        self.tracker = TaskTracker()
        self._keepalive_s = keepalive_s
        self._server: asyncio.Server | None = None
        self._sweeper: asyncio.Task[None] | None = None

    async def start(self, host: str, port: int, *, reuse_port: bool = False) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: Connection(self), host, port, reuse_port=reuse_port or None, backlog=1024
        )
        self._sweeper = self.tracker.spawn(self._sweep(), name="keep-alive sweeper")

    @property
    def url(self) -> str:
        assert self._server is not None
        # uvloop's `sockets` is a list where typeshed says tuple: read it through Any, as the
        # compiled build (setup.py) checks the declared type of an attribute it reads.
        sockets: Sequence[socket.socket] = cast(Any, self._server).sockets
        host, port = sockets[0].getsockname()[:2]
        if host in ("0.0.0.0", "::"):
            host = "127.0.0.1"
        return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"

    async def close(self, drain_timeout_s: float) -> None:
        if self._server is None:
            return
        self._server.close()
        if self._sweeper is not None:
            self._sweeper.cancel()
        for conn in list(self.conns):
            conn.stop()
        # Connection tasks end when their exchange does; the rest are cancelled at the deadline.
        await self.tracker.drain(drain_timeout_s)
        for conn in list(self.conns):
            conn.abort()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(1.0):
                await self._server.wait_closed()

    async def _sweep(self) -> None:
        """Close keep-alive connections idle past the timeout (and heads that never finish)."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(_SWEEP_S)
            now = loop.time()
            for conn in list(self.conns):
                if conn.idle_for(now) > self._keepalive_s:
                    conn.close()
