"""One keep-alive HTTP/1.1 connection to an upstream, and the response it receives.

An asyncio.Protocol driving httptools' response parser: no stream objects, no task per
connection. The pool (client.py) hands a connection one request at a time; when the
response is complete and both sides allow it, the connection goes back to the pool at once
(the body already sits in the Response's own buffer).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Final, Protocol, cast

from httptools import HttpParserError, HttpParserUpgrade, HttpResponseParser

from shadowproxy.exchange import HOP_BY_HOP, ErrorKind
from shadowproxy.fast.body import BodyStream

CLOSED = "upstream closed the connection"
CUT = "upstream body was cut short or malformed"

# Header names (lower case) after which a response head cannot go to the client as it came:
# hop-by-hop ones (`Connection: keep-alive` alone is cut out instead) and an X-Request-Id of
# the upstream's own (the handler adds ours only when there is none). Bytes, as the parser
# gives them.
_NOT_VERBATIM: Final = frozenset({n.encode() for n in HOP_BY_HOP - {"connection"}} | {b"x-request-id"})
_KEEPALIVE_LINE: Final = b"Connection: keep-alive\r\n"
# The lengths of _NOT_VERBATIM's names, Content-Length's and Connection's, spelt out: compiled,
# `in` a literal tuple is a few integer comparisons (a frozenset would hash each length), and
# most header names are none of these by their length alone. tests/test_verbatim_head.py
# checks it against the names.
_NOTABLE_LENGTHS: Final = (2, 7, 8, 10, 12, 14, 16, 17, 18, 19)


class UpstreamError(Exception):
    """A failed upstream call, already in our terms (transport.classify passes it through).

    `retryable`: the connection died before a single response byte, so a request that is
    safe to repeat may be sent again once on a fresh connection.
    """

    def __init__(self, kind: ErrorKind, detail: str, *, retryable: bool = False) -> None:
        super().__init__(detail)
        self.kind: ErrorKind = kind
        self.detail = detail
        self.retryable = retryable


# Called once when a response sent by callbacks (Pool.send) ends: None when it is complete,
# or cut at its limit (then the body holds more than the limit); else why it failed.
OnEnd = Callable[[UpstreamError | None], None]


# Called from the connection's own callback the moment an awaited response has all arrived,
# before the task awaiting it wakes (see Pool.request).
Relay = Callable[["Response"], None]


class PoolHooks(Protocol):
    def release(self, conn: Conn) -> None: ...
    def lost(self, conn: Conn) -> None: ...


class Response:
    """Status and headers of an upstream answer; the body arrives in `body`."""

    __slots__ = ("_conn", "body", "headers", "reason", "relay", "sent_at", "status", "verbatim_head")

    def __init__(self, conn: Conn) -> None:
        self._conn: Conn | None = conn
        # When the request went out on a connection (perf_counter): an upstream's latency
        # counts from here, not from a wait for a free connection in our own pool.
        self.sent_at = time.perf_counter()
        self.status = 0
        self.reason = ""
        self.headers: list[tuple[str, str]] = []
        self.body = BodyStream(conn.pressure)
        # The head as it came, fit for the client as is (see Conn.data_received): HTTP/1.1,
        # a reason phrase, a Content-Length, no hop-by-hop header but `Connection:
        # keep-alive` (cut out here), no X-Request-Id; without its closing blank line. None
        # when it is not, or did not arrive in one piece: then the headers are re-rendered.
        self.verbatim_head: bytes | None = None
        # Whoever awaits this response clears it once it takes the body over itself.
        self.relay: Relay | None = None

    def whole(self) -> bytes | None:
        """The whole body if it has all arrived (the common small-response case), else None."""
        return self.body.take() if self.body.complete else None

    def close(self) -> None:
        """Done with this response. An unfinished body means the connection cannot be reused."""
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.abort()


class Conn(asyncio.Protocol):
    def __init__(self, pool: PoolHooks) -> None:
        self._pool = pool
        self.transport: asyncio.Transport | None = None
        self._parser = HttpResponseParser(self)
        self._stale_parser = False
        self._resp: Response | None = None
        self._head: asyncio.Future[None] | None = None
        self._head_only = False
        self._in_head = False
        self._interim = False
        self._framed = False  # Content-Length or chunked: EOF before the end is a cut body
        self._got_bytes = False
        # The head may reach the client as it came (Response.verbatim_head), so far.
        self._verbatim = False
        # Where the `Connection: keep-alive` line starts among the header lines (-1: none),
        # counting each line as `Name: value\r\n`; _verbatim_head checks the bytes there.
        self._keepalive_at = -1
        self._header_bytes = 0
        self._sending = False
        self._reason = b""
        self._write_paused = False
        self._drain: asyncio.Future[None] | None = None
        self._on_end: OnEnd | None = None
        self._limit = 0
        self.closed = False
        self.idle_since = 0.0
        self._loop = asyncio.get_running_loop()

    # ---- used by the pool
    def begin(self, head_only: bool, on_end: OnEnd | None = None, limit: int = 0) -> Response:
        """A new response on this connection. With `on_end` nothing awaits it: `on_end` is
        called when it ends, and its body stops at `limit` bytes, which hold what it needs
        (past them the connection closes, like a reader that stops reading)."""
        if self._stale_parser:
            # After a HEAD answer with a Content-Length the parser still expects that body.
            self._parser = HttpResponseParser(self)
            self._stale_parser = False
        resp = Response(self)
        self._resp = resp
        self._head = self._loop.create_future() if on_end is None else None
        self._on_end = on_end
        self._limit = limit
        self._head_only = head_only
        self._in_head = True
        self._interim = False
        self._framed = False
        self._got_bytes = False
        # Only an awaited response is forwarded to a client; one sent by callbacks never is.
        self._verbatim = on_end is None
        self._keepalive_at = -1
        self._header_bytes = 0
        self._reason = b""
        return resp

    def write(self, data: bytes) -> None:
        if self.closed or self.transport is None:
            raise UpstreamError("error", CLOSED, retryable=not self._got_bytes)
        self.transport.write(data)

    async def drain(self) -> None:
        if self._write_paused:
            self._drain = self._loop.create_future()
            await self._drain

    def sending(self, on: bool) -> None:
        self._sending = on

    @property
    def head(self) -> asyncio.Future[None]:
        """Done when the current response's head is in (or failed)."""
        assert self._head is not None
        return self._head

    def abort(self) -> None:
        """Drop the connection; whoever waits on it has given up (timeout, cancel, early stop)."""
        self.closed = True
        resp, self._resp = self._resp, None
        on_end, self._on_end = self._on_end, None
        if resp is not None:
            resp._conn = None
            resp.body.detach()
        if self.transport is not None:
            self.transport.abort()
        if on_end is not None and resp is not None:
            on_end(UpstreamError("error", "the connection was dropped (shutting down)"))

    def pressure(self, paused: bool) -> None:
        if self.transport is None or self.closed or self._on_end is not None:
            # Sent by callbacks, nobody reads the body as it comes: `limit` bounds it instead.
            return
        if paused:
            self.transport.pause_reading()
        else:
            self.transport.resume_reading()

    # ---- asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, only alike.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        resp = self._resp
        if resp is None:
            self.abort()  # bytes nobody asked for: this connection's framing is lost
            return
        first = not self._got_bytes
        self._got_bytes = True
        try:
            self._parser.feed_data(data)
        except HttpParserUpgrade:
            self._fail(UpstreamError("error", "invalid upstream response: unexpected protocol switch"))
            return
        except HttpParserError as e:
            if self._in_head:
                self._fail(UpstreamError("error", f"invalid upstream response: {e}"))
            else:
                self._fail(UpstreamError("error", CUT))
            return
        if first and self._verbatim and self._framed and not self._in_head:
            resp.verbatim_head = self._verbatim_head(data, resp)
        # Here and not in _finish, where on_end is called: the verbatim head the relay writes
        # is only known once feed_data has returned.
        relay = resp.relay
        if relay is not None and resp.body.complete:
            resp.relay = None
            relay(resp)

    def _verbatim_head(self, data: bytes, resp: Response) -> bytes | None:
        """The head of a response that arrived whole in its first chunk, fit for the client
        as is (Response.verbatim_head), or None. Re-rendering it from the parsed headers was
        the largest single cost left on the primary path (about 15,000 instructions of a
        request's 115,000 with shadowing off, callgrind). No search: bytes.find and replace
        cost about 1,800 instructions each here; the parser has said where things are."""
        if not resp.reason or not data.startswith(b"HTTP/1.1 "):
            return None  # the general path writes the client's version and a phrase
        # The parser framed the body and fed every byte of this chunk after the head to it,
        # so the head ends where the body starts; the blank line must be right there.
        end = len(data) - resp.body.size - 2
        if end < 2 or data[end - 2 : end + 2] != b"\r\n\r\n":
            return None
        if self._keepalive_at < 0:
            return data[:end]
        # "HTTP/1.1 200 " and the phrase and CRLF, then the header lines before it.
        at = 15 + len(self._reason) + self._keepalive_at
        if data[at : at + len(_KEEPALIVE_LINE)] != _KEEPALIVE_LINE:
            return None  # a line before it was spelt otherwise: the general path drops it
        return data[:at] + data[at + len(_KEEPALIVE_LINE) : end]

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        resp = self._resp
        if resp is not None:
            if self._in_head:
                self._fail(UpstreamError("error", CLOSED, retryable=not self._got_bytes))
            elif not self._framed:
                self._finish(False)  # no length, not chunked: the body ran until the close
            else:
                self._fail(UpstreamError("error", CUT))
        drain, self._drain = self._drain, None
        if drain is not None and not drain.done():
            drain.set_exception(UpstreamError("error", CLOSED))
        self._pool.lost(self)

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        drain, self._drain = self._drain, None
        if drain is not None and not drain.done():
            drain.set_result(None)

    # ---- httptools callbacks
    def on_status(self, reason: bytes) -> None:
        self._reason += reason

    def on_header(self, name: bytes, value: bytes) -> None:
        resp = self._resp
        if resp is None or self._interim:
            return
        at = self._header_bytes
        if self._verbatim:  # else nobody needs where the lines are
            self._header_bytes = at + len(name) + len(value) + 4
        if len(name) in _NOTABLE_LENGTHS:
            self._notable(name, value, at)
        resp.headers.append((name.decode("latin-1"), value.decode("latin-1")))

    def _notable(self, name: bytes, value: bytes, at: int) -> None:
        """What a header whose name has a notable length means for framing and the
        verbatim head. The usual spellings first: bytes equality, no lower() for them."""
        if name == b"Content-Length":
            self._framed = True
        elif name == b"Content-Type":
            pass
        elif name == b"Connection" and value == b"keep-alive" and self._keepalive_at < 0:
            self._keepalive_at = at
        else:
            lname = name.lower()
            if lname == b"content-length":
                self._framed = True
            elif lname == b"transfer-encoding":
                self._framed = True
                self._verbatim = False
            elif lname in _NOT_VERBATIM or lname == b"connection":
                # Another Connection (close, a list of names, a second one) is the general
                # path's to strip, with whatever it names.
                self._verbatim = False

    def on_headers_complete(self) -> None:
        resp = self._resp
        if resp is None:
            return
        status = self._parser.get_status_code()
        if 100 <= status < 200:
            # 100 Continue and friends come before the real answer: skip them.
            self._interim = True
            self._verbatim = False
            resp.headers.clear()
            self._reason = b""
            return
        resp.status = status
        resp.reason = self._reason.decode("latin-1")
        self._in_head = False
        head = self._head
        if head is not None and not head.done():
            head.set_result(None)
        if self._head_only:
            self._stale_parser = True
            self._finish(self._parser.should_keep_alive())

    def on_body(self, body: bytes) -> None:
        resp = self._resp
        if resp is not None:
            resp.body.feed(body)
            if self._on_end is not None and resp.body.size > self._limit:
                self._cut()

    def on_message_complete(self) -> None:
        if self._interim:
            self._interim = False
            self._framed = False
            return
        if self._resp is not None:
            self._finish(self._parser.should_keep_alive())

    # ---- internals
    def _finish(self, keep_alive: bool) -> None:
        resp = self._resp
        assert resp is not None
        self._resp = None
        resp._conn = None
        resp.body.feed_eof()
        resp.body.detach()
        if keep_alive and not self._sending and not self.closed:
            self.idle_since = self._loop.time()
            self._pool.release(self)
        elif not self.closed:
            self.closed = True
            assert self.transport is not None
            self.transport.close()
        on_end, self._on_end = self._on_end, None
        if on_end is not None:
            on_end(None)

    def _cut(self) -> None:
        """A body sent by callbacks passed its limit: the rest is not wanted."""
        on_end, self._on_end = self._on_end, None
        assert on_end is not None
        self.abort()  # detaches the response; with on_end taken, it reports nothing
        on_end(None)

    def _fail(self, exc: UpstreamError) -> None:
        resp = self._resp
        self._resp = None
        on_end, self._on_end = self._on_end, None
        head = self._head
        if head is not None and not head.done():
            head.set_exception(exc)
        elif resp is not None:
            resp.body.fail(exc)
        if resp is not None:
            resp._conn = None
            resp.body.detach()
        self.abort()
        if on_end is not None:
            on_end(exc)
