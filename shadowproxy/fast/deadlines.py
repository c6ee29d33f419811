"""Deadlines kept by one coarse timer: for the response heads a pool waits on, the shadow
calls it sends by callbacks, and the shadowed pairs waiting for their primary's answer.

A uvloop `call_at` and its `cancel` cost about 6 us (each opens and closes a libuv timer
handle), and every proxied request armed two, one per backend, that almost never fired:
about 4 % of a request's instructions (bench-ir, equal). Here a deadline is a dict entry
(0.15 us to add and remove) and one timer, armed while anything is watched, expires what is
due every TICK_S. So a timeout fires up to TICK_S late; timeouts are seconds long, and the
timeout's reported latency is the time actually waited.
"""

from __future__ import annotations

import asyncio
from typing import Final, Protocol

TICK_S: Final = 0.02


class Expirable(Protocol):
    """What can run out of time: an asyncio.Future, or a call driven by callbacks."""

    def done(self) -> bool: ...
    def set_exception(self, exc: BaseException) -> None: ...


class Deadlines:
    def __init__(self, loop: asyncio.AbstractEventLoop, tick_s: float = TICK_S) -> None:
        self._loop = loop
        self._tick_s = tick_s
        self._due: dict[Expirable, float] = {}
        self._timer: asyncio.TimerHandle | None = None

    def watch(self, fut: Expirable, deadline: float) -> None:
        """Fail `fut` with TimeoutError if it is not done by `deadline` (loop time)."""
        self._due[fut] = deadline
        if self._timer is None:
            self._timer = self._loop.call_later(self._tick_s, self._expire)

    def forget(self, fut: Expirable) -> None:
        self._due.pop(fut, None)

    def __len__(self) -> int:
        return len(self._due)

    def _expire(self) -> None:
        now = self._loop.time()
        due = [f for f, deadline in self._due.items() if deadline <= now]
        for f in due:
            del self._due[f]
            if not f.done():
                f.set_exception(TimeoutError())
        # Idle pools keep no timer: the next watch() arms it again.
        self._timer = self._loop.call_later(self._tick_s, self._expire) if self._due else None

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._due.clear()
