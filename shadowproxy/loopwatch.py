"""How late the event loop runs: the time a request may wait for the proxy itself.

Everything a process does shares one event loop, and every thread of it the GIL: when
anything holds on too long, every request in flight waits, and nothing in the upstream
latencies shows it. A timer that should fire every `interval_s` measures how late it
fires. Under `make bench`'s load on 2 cores, a probe like it showed 3-6 ms stalls twice a
second, at the store's flush cadence, while the store wrote from a thread: enough to move
a p99. Its writer is a process of its own now (store_writer.py).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

PROBE_INTERVAL_S = 0.01  # 100 timers a second


class LoopWatch:
    """A bare timer callback, not a task around asyncio.sleep: a tick costs a timer and a
    call, so the probe stays out of what it measures (and out of `make bench-ir`)."""

    def __init__(self, observe: Callable[[float], None], interval_s: float = PROBE_INTERVAL_S) -> None:
        self._observe = observe
        self._interval_s = interval_s
        self._loop: asyncio.AbstractEventLoop | None = None
        self._handle: asyncio.TimerHandle | None = None
        self._due = 0.0

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._schedule()

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _schedule(self) -> None:
        assert self._loop is not None
        self._due = time.perf_counter() + self._interval_s
        self._handle = self._loop.call_later(self._interval_s, self._tick)

    def _tick(self) -> None:
        self._observe(max(0.0, time.perf_counter() - self._due))
        self._schedule()
