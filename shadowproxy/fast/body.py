"""A message body between a socket and its reader, with back-pressure.

The protocol feeds bytes as they arrive; past HIGH buffered bytes it is told to pause
reading, and told to resume once the reader has taken the buffer below LOW. So a slow
reader (a slow client, a slow upstream) bounds memory instead of buffering everything.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Final

HIGH: Final = 256 * 1024
LOW: Final = 64 * 1024

# Called with True to pause the socket's reading, False to resume it.
Pressure = Callable[[bool], None]


class BodyStream:
    __slots__ = ("_chunks", "_eof", "_exc", "_paused", "_pressure", "_size", "_waiter")

    def __init__(self, pressure: Pressure | None = None) -> None:
        # A list, not a deque: compiled, list operations are inline while a deque's are
        # method calls (about 300 instructions each), and creating a deque allocates a
        # 64-slot block. Chunks rarely queue up (back-pressure stops reading at HIGH bytes,
        # and most bodies are one chunk), so pop(0) moves a few pointers at most.
        self._chunks: list[bytes] = []
        self._size = 0
        self._eof = False
        self._exc: BaseException | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._pressure = pressure
        self._paused = False

    def feed(self, data: bytes) -> None:
        self._chunks.append(data)
        self._size += len(data)
        self._wake()
        if self._size > HIGH and not self._paused and self._pressure is not None:
            self._paused = True
            self._pressure(True)

    def feed_eof(self) -> None:
        self._eof = True
        self._wake()

    def fail(self, exc: BaseException) -> None:
        if not self._eof:
            self._exc = exc
            self._wake()

    def detach(self) -> None:
        """The socket moves on (keep-alive): never pause or resume it again from here."""
        if self._paused and self._pressure is not None:
            self._pressure(False)
        self._paused = False
        self._pressure = None

    @property
    def size(self) -> int:
        """Bytes buffered, not yet read."""
        return self._size

    @property
    def complete(self) -> bool:
        """Every byte has arrived (some may still be buffered)."""
        return self._eof

    @property
    def finished(self) -> bool:
        """Every byte has arrived and been read."""
        return self._eof and not self._chunks

    def take(self) -> bytes:
        """Everything buffered now, in one piece."""
        chunks = self._chunks
        if not chunks:
            return b""
        data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        self._chunks = []
        self._size = 0
        self._relieve()
        return data

    async def read(self, timeout_s: float | None = None) -> bytes:
        """The next chunk; b"" at the end. An idle gap over `timeout_s` raises TimeoutError."""
        while True:
            if self._chunks:
                chunk = self._chunks.pop(0)
                self._size -= len(chunk)
                self._relieve()
                return chunk
            if self._exc is not None:
                raise self._exc
            if self._eof:
                return b""
            waiter = asyncio.get_running_loop().create_future()
            self._waiter = waiter
            if timeout_s is None:
                await waiter
            else:
                async with asyncio.timeout(timeout_s):
                    await waiter

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)

    def _relieve(self) -> None:
        if self._paused and self._size <= LOW and self._pressure is not None:
            self._paused = False
            self._pressure(False)
