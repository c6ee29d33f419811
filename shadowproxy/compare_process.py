"""Comparisons of differing answers in a process of their own, off the event loop.

Two equal answers cost little to compare. Two that differ cost a parse of both bodies and a
walk: 143,000 instructions for two 1 KB JSON documents (callgrind), fifty times that for
50 KB ones, on the loop that also serves the primary's clients. Here that work runs in a
child forked from the store's forkserver: on another core when there is one, and scheduled
by the kernel rather than queued in front of the next client request.

The loop sends jobs as plain tuples (pickling our Value classes through their __reduce__
cost 35,000 instructions a pair), batched per loop iteration, over a socket pair that it
reads and writes through asyncio: never a blocking send or receive on the loop.

The worker speeds comparisons up; it never decides which pairs get compared. Only pairs
whose bodies differ come here, so dropping those when the worker falls behind would bias
the mismatch rate down, and the verdict with it. Instead the dispatcher stops starting new
shadow calls while the worker is `busy` (skipped as `compare_busy`, whatever their answers
would have been), and a pair the worker cannot take or answer (its queue full, no worker
yet, the worker dead or hung for `timeout_s`, compare() raising there) comes back as None
for the caller to compare on the loop. A dead or hung worker is replaced.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import pickle
import signal
import socket
import struct
import time
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any, cast

from shadowproxy import children, config, plain
from shadowproxy.compare import compare
from shadowproxy.exchange import Comparison, UpstreamResult

log = logging.getLogger("shadowproxy.compare")

_HEADER = struct.Struct("!i")  # multiprocessing.Connection's frame header: the child reads those
_MAX_FRAME = 2**31 - 1  # what that header can say
_RESTART_AFTER_S = 5.0

_Job = tuple[int, str, tuple[Any, ...], tuple[Any, ...]]
_Reply = tuple[int, Any, str]  # seq, encoded Comparison or None, error type name


def serve(pipe: Connection, rules: dict[str, config.CompareRules], default: config.CompareRules) -> None:
    """The worker's main: compare each batch of jobs and answer, until the parent is gone."""
    # Its lifetime is the socket's: a Ctrl-C to the process group is the parent's to handle.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    while True:
        try:
            jobs: list[_Job] = pickle.loads(pipe.recv_bytes())
        except (EOFError, OSError):
            return
        replies: list[_Reply] = []
        for seq, route, p, s in jobs:
            try:
                c = compare(plain.result_from(p), plain.result_from(s), rules.get(route, default))
                replies.append((seq, plain.comparison(c), ""))
            except Exception as e:  # one bad pair must not end the worker
                replies.append((seq, None, type(e).__name__))
        try:
            pipe.send_bytes(pickle.dumps(replies, protocol=pickle.HIGHEST_PROTOCOL))
        except OSError:  # the parent is gone: nobody to answer
            return


class _Link(asyncio.Protocol):
    """The loop's end of one worker's socket: frames in, frames out, never blocking."""

    def __init__(self, owner: CompareProcess) -> None:
        self._owner = owner
        self._buf = bytearray()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, only alike.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        buf = self._buf
        buf += data
        while len(buf) >= _HEADER.size:
            (n,) = _HEADER.unpack_from(buf)
            if len(buf) < _HEADER.size + n:
                return
            frame = bytes(buf[_HEADER.size : _HEADER.size + n])
            del buf[: _HEADER.size + n]
            self._owner._answered(pickle.loads(frame))

    def connection_lost(self, exc: Exception | None) -> None:
        self._owner._lost(self)


class CompareProcess:
    """The loop's handle on the comparison worker. Everything here runs on the loop except
    the process start, which `start()` and restarts do in a thread (forking through the
    forkserver takes milliseconds)."""

    def __init__(
        self,
        rules: dict[str, config.CompareRules],
        default: config.CompareRules,
        max_pending: int = 64,
        timeout_s: float = 10.0,
    ) -> None:
        self._args = (rules, default)
        self._max_pending = max_pending
        self._timeout_s = timeout_s
        self._proc: BaseProcess | None = None
        self._link: _Link | None = None
        self._pending: dict[int, tuple[asyncio.Future[Comparison | None], float]] = {}
        self._outbox: list[_Job] = []
        self._seq = 0
        self._starting: asyncio.Task[None] | None = None
        self._next_start = 0.0
        self._expiry: asyncio.TimerHandle | None = None
        self._failures_logged = 0
        self._closed = False
        self.answered = 0  # pairs the workers compared, since start

    async def start(self) -> None:
        proc, sock = await asyncio.to_thread(self._spawn)
        loop = asyncio.get_running_loop()
        try:
            _, link = await loop.create_unix_connection(lambda: _Link(self), sock=sock)
        except BaseException:
            sock.close()
            await asyncio.to_thread(_stop, proc)
            raise
        self._proc, self._link = proc, link

    def _spawn(self) -> tuple[BaseProcess, socket.socket]:
        proc, ours = children.spawn(serve, self._args, "shadowproxy-compare")
        sock = socket.socket(fileno=os.dup(ours.fileno()))
        ours.close()
        sock.setblocking(False)
        return proc, sock

    @property
    def busy(self) -> bool:
        """Half the queue waits: time to stop starting shadow calls whose pairs may come here
        (the other half takes the pairs of the calls already under way)."""
        return len(self._pending) * 2 >= self._max_pending

    def compare(
        self, route: str, primary: UpstreamResult, shadow: UpstreamResult
    ) -> asyncio.Future[Comparison | None] | None:
        """A future for the comparison, None if the worker cannot take it now. The future's
        None: the worker could not answer. Either way the caller compares on the loop."""
        link = self._link
        if link is None or link.transport is None or len(self._pending) >= self._max_pending:
            if link is None:
                self._restart()
            return None
        loop = asyncio.get_running_loop()
        self._seq += 1
        fut: asyncio.Future[Comparison | None] = loop.create_future()
        self._pending[self._seq] = (fut, time.monotonic())
        if not self._outbox:
            loop.call_soon(self._send)
        self._outbox.append((self._seq, route, plain.result(primary), plain.result(shadow)))
        if self._expiry is None:
            self._expiry = loop.call_later(self._timeout_s / 4, self._expire)
        return fut

    def _send(self) -> None:
        jobs, self._outbox = self._outbox, []
        link = self._link
        if not jobs or link is None or link.transport is None:
            return  # _lost has answered them
        data = pickle.dumps(jobs, protocol=pickle.HIGHEST_PROTOCOL)
        if len(data) > _MAX_FRAME:
            # Only with shadowing.max_response_bytes in the hundreds of MiB: the loop compares.
            self._answered([(seq, None, "frame too large") for seq, *_ in jobs])
            return
        link.transport.write(_HEADER.pack(len(data)) + data)

    def _answered(self, replies: list[_Reply]) -> None:
        self.answered += len(replies)
        for seq, encoded, error in replies:
            entry = self._pending.pop(seq, None)
            if encoded is None and self._failures_logged < 3:  # a bug: said, not flooded
                self._failures_logged += 1
                log.error("compare: the worker could not compare a pair (%s); the loop compares it", error)
            if entry is not None and not entry[0].done():
                entry[0].set_result(None if encoded is None else plain.comparison_from(encoded))

    def _expire(self) -> None:
        """Pairs waiting longer than timeout_s: the worker hangs. Give up on them and on it."""
        self._expiry = None
        if not self._pending:
            return
        oldest = min(at for _, at in self._pending.values())
        if time.monotonic() - oldest > self._timeout_s:
            log.error(
                "compare: the worker answered nothing for %.0f s; the loop compares its pairs, a new "
                "one takes over",
                self._timeout_s,
            )
            self._abandon()
            return
        self._expiry = asyncio.get_running_loop().call_later(self._timeout_s / 4, self._expire)

    def _lost(self, link: _Link) -> None:
        if link is not self._link:
            return
        if not self._closed:
            log.error(
                "compare: the worker process ended; the loop compares the %d pairs it held",
                len(self._pending),
            )
        self._abandon()

    def _abandon(self) -> None:
        link, proc = self._link, self._proc
        self._link = self._proc = None
        self._outbox = []
        pending, self._pending = self._pending, {}
        for fut, _ in pending.values():
            if not fut.done():
                fut.set_result(None)
        if link is not None and link.transport is not None:
            link.transport.abort()
        if proc is not None:
            # Killed at once (it may hang), reaped in a thread: a join must not block the loop.
            proc.kill()
            asyncio.get_running_loop().run_in_executor(None, proc.join)

    def _restart(self) -> None:
        if self._closed or self._starting is not None or time.monotonic() < self._next_start:
            return
        self._next_start = time.monotonic() + _RESTART_AFTER_S
        self._starting = asyncio.get_running_loop().create_task(self._start_again())

    async def _start_again(self) -> None:
        try:
            await self.start()
        except Exception as e:
            log.error(
                "compare: no new worker could start (%s: %s); retrying in %.0f s",
                type(e).__name__,
                e,
                _RESTART_AFTER_S,
            )
        finally:
            self._starting = None

    async def restarted(self) -> bool:
        """Wait for a restart under way, if any; whether a worker runs now."""
        if self._starting is not None:
            with contextlib.suppress(Exception):
                await self._starting
        return self._link is not None

    @property
    def pid(self) -> int | None:
        return None if self._proc is None else self._proc.pid

    async def close(self) -> None:
        self._closed = True
        if self._starting is not None:
            with contextlib.suppress(Exception):
                await self._starting
        if self._expiry is not None:
            self._expiry.cancel()
        link, proc = self._link, self._proc
        self._link = self._proc = None
        for fut, _ in self._pending.values():
            if not fut.done():
                fut.set_result(None)
        self._pending = {}
        if link is not None and link.transport is not None:
            link.transport.close()  # the worker sees the end and exits
        if proc is not None:
            await asyncio.to_thread(_stop, proc)


def _stop(proc: BaseProcess, timeout_s: float = 5.0) -> None:
    proc.join(timeout_s)
    if proc.exitcode is None:
        proc.kill()
        proc.join()
