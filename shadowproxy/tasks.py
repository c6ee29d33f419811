"""The one way to start a background task: keep a reference, log a failure, count it.

asyncio only keeps weak references to tasks, so an untracked shadow task can be garbage
collected mid-flight; and an exception in a fire-and-forget task is only reported when the
task is collected, if ever. Every background task goes through `TaskTracker.spawn`
(enforced by a ruff banned-API rule on asyncio.create_task).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any

log = logging.getLogger("shadowproxy.tasks")


class TaskTracker:
    def __init__(self, on_failure: Callable[[BaseException], None] | None = None) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()
        self._on_failure = on_failure
        self.failures = 0
        # The loop of the first spawn until drain(): the tasks of one tracker run on one loop
        # (drain awaits them together). Held because Python 3.11's get_running_loop() makes
        # a getpid syscall each time, and the shadow side spawns once per request.
        self._loop: asyncio.AbstractEventLoop | None = None

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str | None = None) -> asyncio.Task[Any]:
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        task = loop.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            self.failed(exc, task.get_name())

    def failed(self, exc: BaseException, name: str) -> None:
        """Log and count a failure of background work, a task's or a callback's."""
        self.failures += 1
        log.error("background task %s failed: %r", name, exc, exc_info=exc)
        if self._on_failure is not None:
            self._on_failure(exc)

    def __len__(self) -> int:
        return len(self._tasks)

    async def drain(self, timeout_s: float) -> int:
        """Wait up to `timeout_s` for running tasks, cancel the rest; return how many were cancelled."""
        self._loop = None  # a tracker drained may serve another loop next
        if not self._tasks:
            return 0
        _, pending = await asyncio.wait(set(self._tasks), timeout=timeout_s)
        for t in pending:
            t.cancel()
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)
        return len(pending)
