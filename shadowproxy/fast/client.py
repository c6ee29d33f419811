"""A keep-alive HTTP/1.1 connection pool for one upstream, with an explicit limit.

Beyond `max_connections` a request waits for a free connection up to the connect timeout,
then fails as an error (the pool is the bottleneck, not the upstream). A reused connection
that turns out to have been closed by the server while idle is retried once, and only for
a request that is safe to repeat (idempotent method, body held in memory): a request that
may have reached the server is never sent twice.
"""

from __future__ import annotations

import asyncio
import ssl
from collections import deque
from collections.abc import AsyncIterable, Callable, Sequence
from typing import Final, TypeVar

from shadowproxy.fast.conn import Conn, OnEnd, Relay, Response, UpstreamError
from shadowproxy.fast.deadlines import Deadlines, Expirable
from shadowproxy.fast.head import head_lines

__all__ = ["FAST_ERRORS", "Body", "Pool", "Relay", "Response", "UpstreamError", "end_head", "request_head"]

P = TypeVar("P", bound=asyncio.Protocol)
Body = bytes | AsyncIterable[bytes] | None

# What a call through the pool can raise: ours, a timeout, a socket error (transport.classify
# turns each into the same (kind, detail) as the aiohttp engine's).
FAST_ERRORS: Final = (UpstreamError, TimeoutError, OSError)
IDEMPOTENT: Final = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"})
# aiohttp's client sends a length for these even when empty; so do we.
_LENGTH_ALWAYS: Final = frozenset({"POST", "PUT", "PATCH"})
# A connection idle longer than this may already be closed by the server; don't bet on it.
IDLE_MAX_S: Final = 30.0


class Pool:
    def __init__(
        self,
        host: str,
        port: int,
        *,
        tls: ssl.SSLContext | None,
        max_connections: int,
        connect_timeout_s: float,
    ) -> None:
        self._host = host
        self._port = port
        self._tls = tls
        self._max = max_connections
        self._connect_timeout_s = connect_timeout_s
        self._idle: list[Conn] = []
        self._live: set[Conn] = set()
        self._total = 0  # live plus connecting: what the limit counts
        self._waiters: deque[asyncio.Future[Conn | None]] = deque()
        self.closed = False
        # Held, not asked for per request: Python 3.11's get_running_loop() makes a getpid
        # syscall (a fork check) every time, and this path asked four times per request.
        self._loop = asyncio.get_running_loop()
        self._deadlines = Deadlines(self._loop)

    async def request(
        self,
        method: str,
        head: bytes,
        body: Body = None,
        timeout_s: float | None = None,
        relay: Relay | None = None,
    ) -> Response:
        """Send one request, `head` (request_head, or FastUpstream.head) then `body`; return
        once the response head is in (the body may still arrive).

        The caller must `close()` the response unless it read the body to the end.
        `timeout_s` bounds getting a connection, sending and the head. `relay` (not for a
        streamed body) is called with the response from the connection's callback the
        moment the whole answer is in, unless the caller has cleared `Response.relay`
        first, as it must before it reads the body itself.
        """
        if body is not None and not isinstance(body, bytes):
            # Streamed uploads are rare; the plain context manager bounds every await in them.
            async with asyncio.timeout(timeout_s):
                return await self._streamed(method, head, body)
        # The hot path, kept flat (no nested coroutines): two of these run per proxied request.
        loop = self._loop
        deadline = None if timeout_s is None else loop.time() + timeout_s
        for attempt in (0, 1):
            conn, reused = self._idle_conn(), True
            if conn is None:
                async with asyncio.timeout_at(deadline):
                    conn, reused = await self._acquire()
            resp = conn.begin(method == "HEAD")
            resp.relay = relay
            head_fut = conn.head
            watched = False
            try:
                _write(conn, head, body)
                if not head_fut.done() and deadline is not None:
                    # Not a timer of its own: see deadlines.py.
                    self._deadlines.watch(head_fut, deadline)
                    watched = True
                await head_fut
                return resp
            except BaseException as e:
                conn.abort()
                retry = isinstance(e, UpstreamError) and e.retryable and reused and method in IDEMPOTENT
                if not retry or attempt == 1:
                    raise
                # Else round again, on another connection (no `continue`: mypyc cannot compile
                # one inside try/finally).
            finally:
                if watched:
                    self._deadlines.forget(head_fut)
        raise AssertionError("unreachable")  # pragma: no cover

    def send(
        self,
        method: str,
        head: bytes,
        body: bytes | None,
        timeout_s: float,
        call: Expirable,
        on_end: OnEnd,
        limit: int,
    ) -> Response | None:
        """Send one request on an idle connection and return at once, or None when no
        connection is idle (then `request()` it). Nothing awaits the response: `on_end` is
        called when it ends, and `call` fails with TimeoutError after `timeout_s` unless
        `forget(call)` comes first. The body stops at `limit` bytes (see Conn.begin).

        For the shadow side, which only needs the whole answer: a task and a future per call
        cost more than comparing an equal pair. Never retried here: a connection found dead
        fails with a retryable UpstreamError, and the caller may `request()` once more."""
        conn = self._idle_conn()
        if conn is None:
            return None
        try:
            # Before begin(): a connection that cannot take the bytes is only given up.
            _write(conn, head, body)
        except UpstreamError:
            conn.abort()
            return None
        resp = conn.begin(method == "HEAD", on_end, limit)
        self._deadlines.watch(call, self._loop.time() + timeout_s)
        return resp

    def forget(self, call: Expirable) -> None:
        """`call` (see send) ended: its deadline no longer applies."""
        self._deadlines.forget(call)

    async def _streamed(self, method: str, head: bytes, body: AsyncIterable[bytes]) -> Response:
        """A request whose body streams in: never retried (it cannot be replayed)."""
        conn = self._idle_conn()
        if conn is None:
            conn, _ = await self._acquire()
        resp = conn.begin(method == "HEAD")
        try:
            await _send_stream(conn, head, body)
            await conn.head
            return resp
        except BaseException:
            conn.abort()
            raise

    async def open(self, factory: Callable[[], P]) -> P:
        """A fresh connection outside the pool and its limit (an upgrade tunnel owns it)."""
        try:
            async with asyncio.timeout(self._connect_timeout_s):
                _, proto = await self._loop.create_connection(
                    factory,
                    self._host,
                    self._port,
                    ssl=self._tls,
                    server_hostname=self._host if self._tls is not None else None,
                )
        except OSError as e:
            raise UpstreamError("error", f"cannot connect: {e.strerror or e}") from None
        return proto

    async def close(self) -> None:
        self.closed = True
        self._deadlines.close()
        for conn in list(self._live):
            conn.abort()
        while self._waiters:
            w = self._waiters.popleft()
            if not w.done():
                w.set_exception(UpstreamError("error", "upstream pool closed"))

    # ---- PoolHooks, called by Conn
    def release(self, conn: Conn) -> None:
        if self.closed:
            conn.abort()
            return
        while self._waiters:
            w = self._waiters.popleft()
            if not w.done():
                w.set_result(conn)
                return
        self._idle.append(conn)

    def lost(self, conn: Conn) -> None:
        if conn not in self._live:
            return
        self._live.discard(conn)
        self._total -= 1
        if conn in self._idle:
            self._idle.remove(conn)
        self._slot_freed()

    # ---- internals
    def _slot_freed(self) -> None:
        """A slot under the limit is free: hand it to the first waiter still waiting."""
        while self._waiters:
            w = self._waiters.popleft()
            if not w.done():
                self._total += 1  # reserved for that waiter, which connects itself
                w.set_result(None)
                return

    @property
    def has_idle(self) -> bool:
        """Whether a connection waits in the pool (it may still turn out closed or stale)."""
        return bool(self._idle)

    def _idle_conn(self) -> Conn | None:
        """The most recently used idle connection (warmest), without waiting."""
        idle = self._idle
        if not idle:
            return None
        now = self._loop.time()
        while idle:
            conn = idle.pop()
            if not conn.closed:
                if now - conn.idle_since < IDLE_MAX_S:
                    return conn
                conn.abort()
        return None

    async def _acquire(self) -> tuple[Conn, bool]:
        """A connection when none is idle: a new one under the limit, else wait for one."""
        if self.closed:
            raise UpstreamError("error", "upstream pool closed")
        if self._total < self._max:
            self._total += 1
            return await self._connect(), False
        waiter: asyncio.Future[Conn | None] = self._loop.create_future()
        self._waiters.append(waiter)
        try:
            async with asyncio.timeout(self._connect_timeout_s):
                got = await waiter
        except TimeoutError:
            self._give_back(waiter)
            raise UpstreamError(
                "error", f"no free upstream connection within {self._connect_timeout_s:g} s"
            ) from None
        except BaseException:
            self._give_back(waiter)
            raise
        if got is None:
            return await self._connect(), False
        return got, True

    def _give_back(self, waiter: asyncio.Future[Conn | None]) -> None:
        """A waiter gave up: what it was handed at the last moment goes to the next one."""
        if not waiter.done() or waiter.cancelled():
            return
        got = waiter.result()
        if got is None:
            self._total -= 1
            self._slot_freed()
        else:
            self.release(got)

    async def _connect(self) -> Conn:
        """Open a connection for a slot already counted in `_total`."""
        try:
            conn = await self.open(lambda: Conn(self))
        except BaseException:
            self._total -= 1
            self._slot_freed()
            raise
        self._live.add(conn)
        return conn


def _write(conn: Conn, head: bytes, body: bytes | None) -> None:
    if body and len(body) > 16 * 1024:
        conn.write(head)  # not joined: a copy of a large body costs more than a second write
        conn.write(body)
    else:
        conn.write(head + body if body else head)


async def _send_stream(conn: Conn, head: bytes, body: AsyncIterable[bytes]) -> None:
    chunked = head.endswith(b"Transfer-Encoding: chunked\r\n\r\n")
    conn.sending(True)
    try:
        conn.write(head)
        async for chunk in body:
            if not chunk:
                continue
            conn.write(b"%x\r\n%b\r\n" % (len(chunk), chunk) if chunked else chunk)
            await conn.drain()
        if chunked:
            conn.write(b"0\r\n\r\n")
    finally:
        conn.sending(False)


def request_head(method: str, target: str, headers: Sequence[tuple[str, str]], body: Body) -> bytes:
    lines, has_length = head_lines(f"{method} {target} HTTP/1.1\r\n", headers)
    return end_head(lines, method, body, has_length)


def end_head(lines: list[str], method: str, body: Body, has_length: bool) -> bytes:
    """The request head's framing line (unless the headers carry a length) and blank line
    after `lines`, encoded."""
    if not has_length:
        if isinstance(body, bytes):
            if body or method in _LENGTH_ALWAYS:
                lines.append(f"Content-Length: {len(body)}\r\n")
        elif body is not None:
            lines.append("Transfer-Encoding: chunked\r\n")
        elif method in _LENGTH_ALWAYS:
            lines.append("Content-Length: 0\r\n")
    lines.append("\r\n")
    return "".join(lines).encode("latin-1")
