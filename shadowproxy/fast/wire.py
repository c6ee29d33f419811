"""What the fast server hands a handler (Request) and how the handler answers (Writer).

The Writer frames the response and nothing else: the status line, the handler's headers
as given, then Content-Length, chunked or close-delimited framing only when the headers
carry no length. It never adds Date, Server or Content-Type.
"""

from __future__ import annotations

import asyncio
from http import HTTPStatus

from shadowproxy.fast.body import BodyStream
from shadowproxy.fast.head import head_lines


class Request:
    __slots__ = (
        "body",
        "expect_continue",
        "headers",
        "host",
        "keep_alive",
        "method",
        "peer",
        "request_id",
        "target",
        "upgrade",
        "version",
    )

    def __init__(
        self,
        *,
        method: str,
        target: str,
        version: str,
        headers: list[tuple[str, str]],
        keep_alive: bool,
        upgrade: bool,
        body: BodyStream | None,
        peer: str,
        expect_continue: bool = False,
        host: str | None = None,
        request_id: str = "",
    ) -> None:
        self.method = method
        self.target = target  # raw, as received: path?query, still percent-encoded
        self.version = version
        self.headers = headers  # wire order, latin-1 decoded, repeats kept
        self.keep_alive = keep_alive
        self.upgrade = upgrade
        self.body = body  # None: the request has no body
        self.peer = peer
        self.expect_continue = expect_continue
        self.host = host  # the first Host header, as aiohttp's request.host has it
        self.request_id = request_id  # the first X-Request-Id, or ""

    def header(self, name: str) -> str | None:
        lname = name.lower()
        for k, v in self.headers:
            if len(k) == len(lname) and k.lower() == lname:
                return v
        return None


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return ""


def _bodiless(req: Request, status: int) -> bool:
    return req.method == "HEAD" or status < 200 or status in (204, 304)


class Writer:
    """The response side of a server connection (mixed into the protocol)."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.lost = False
        self.write_paused = False
        self.head_sent = False
        self._drain: asyncio.Future[None] | None = None
        self._chunked = False
        self._close_after = False
        self._stopping = False

    def respond(
        self, req: Request, status: int, reason: str, headers: list[tuple[str, str]], body: bytes
    ) -> None:
        """A whole response in one write (the common small-response case)."""
        head = self._head(req, status, reason, headers, len(body))
        self.raw_write(head if _bodiless(req, status) or not body else head + body)
        self.head_sent = True

    def respond_as_is(self, req: Request, status: int, head: bytes, line: bytes, body: bytes) -> bool:
        """A whole response whose head came from the upstream fit to forward (the
        handler's verbatim path): `head` as is (its header lines, no blank line), then
        `line` (a header line of the handler's), then the body; False, with nothing
        written, when this exchange needs a framing or Connection line of ours, or must
        carry no body (HEAD, 1xx, 204, 304).
        For header lines in the usual `Name: value` form these are the bytes `respond`
        would write; others reach the client as the upstream spelt them."""
        if req.version != "1.1" or not self._keeps_alive(req) or _bodiless(req, status):
            return False
        self._chunked = False
        self.raw_write(b"".join((head, line, b"\r\n", body)))
        self.head_sent = True
        return True

    def start(self, req: Request, status: int, reason: str, headers: list[tuple[str, str]]) -> None:
        """The head of a response whose body follows through write()."""
        self.raw_write(self._head(req, status, reason, headers, None))
        self.head_sent = True

    def write(self, data: bytes) -> None:
        if self._chunked:
            self.raw_write(b"%x\r\n%b\r\n" % (len(data), data))
        else:
            self.raw_write(data)

    def end(self) -> None:
        if self._chunked:
            self.raw_write(b"0\r\n\r\n")
            self._chunked = False

    async def drain(self) -> None:
        if self.lost:
            raise ConnectionResetError("client went away")
        if self.write_paused:
            self._drain = asyncio.get_running_loop().create_future()
            await self._drain

    def raw_write(self, data: bytes) -> None:
        if self.lost or self.transport is None:
            raise ConnectionResetError("client went away")
        self.transport.write(data)

    def wake_writer(self, exc: BaseException | None) -> None:
        drain, self._drain = self._drain, None
        if drain is not None and not drain.done():
            if exc is None:
                drain.set_result(None)
            else:
                drain.set_exception(exc)

    def send_error(self, status: int) -> None:
        """Our own answer to a request we could not read: plain text, then close."""
        body = f"{status} {_phrase(status)}".encode()
        self._close_after = True
        if not self.lost and self.transport is not None:
            self.transport.write(
                b"HTTP/1.1 %d %b\r\nContent-Type: text/plain; charset=utf-8\r\n"
                b"Content-Length: %d\r\nConnection: close\r\n\r\n%b"
                % (status, _phrase(status).encode(), len(body), body)
            )

    def _keeps_alive(self, req: Request) -> bool:
        """Whether the connection may stay open after this response, as far as the request
        and a drain in progress say (a body with no length may still end it)."""
        return req.keep_alive and not self._stopping and not req.upgrade

    def reusable(self, req: Request) -> bool:
        return req.keep_alive and not self._close_after and not self.lost

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    def _head(
        self, req: Request, status: int, reason: str, headers: list[tuple[str, str]], length: int | None
    ) -> bytes:
        self.head_sent = False
        self._chunked = False
        start = f"HTTP/{req.version} {status} {reason or _phrase(status)}\r\n"
        lines, has_length = head_lines(start, headers)
        keep = self._keeps_alive(req)
        if not has_length and not _bodiless(req, status):
            if length is not None:
                lines.append(f"Content-Length: {length}\r\n")
            elif req.version == "1.1":
                lines.append("Transfer-Encoding: chunked\r\n")
                self._chunked = True
            else:
                keep = False  # HTTP/1.0 without a length: the close ends the body
        if not keep:
            self._close_after = True
            if req.version == "1.1":
                lines.append("Connection: close\r\n")
        elif req.version == "1.0":
            lines.append("Connection: keep-alive\r\n")
        lines.append("\r\n")
        return "".join(lines).encode("latin-1")
