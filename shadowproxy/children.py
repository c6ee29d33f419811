"""The proxy's child processes (the store's writer, the comparison worker) and how they start.

Each is forked from one multiprocessing forkserver that has imported their modules once: not
a fresh interpreter importing them (and DeepDiff) every time, and not a fork of the proxy
with its threads and event loop. The preload list is set by whichever child starts first, so
it names every child's module.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any, Final

# Where the kernel has no SCHED_IDLE (not Linux): a tenth of the CPU of a nice-0 task.
BACKGROUND_NICE: Final = 10

PRELOAD = ["__main__", "shadowproxy.store_writer", "shadowproxy.compare_process", "shadowproxy.compare"]


def spawn(target: Callable[..., None], args: tuple[Any, ...], name: str) -> tuple[BaseProcess, Connection]:
    """Start `target(pipe, *args)` in a child; the parent's end of the pipe comes back."""
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(PRELOAD)
    ours, theirs = ctx.Pipe()
    proc = ctx.Process(target=_background, args=(target, theirs, *args), name=name)
    try:
        proc.start()
    except BaseException:
        ours.close()
        raise
    finally:
        theirs.close()
    return proc, ours


def _background(target: Callable[..., None], *args: Any) -> None:
    """A child's work can wait; the client's cannot (rule 1). Under `make bench` load the
    store's writer ran 1.4-2.4 ms at a stretch twice a second, beside the slowest requests,
    and at nice 10 it still held the proxy's core for 2.4 ms (perf's scheduler switch
    events): a woken task need not preempt a niced one. A SCHED_IDLE task it must, and it
    runs on what the proxy and the backends leave (the writer needs about 1 % of a core at
    6,000 req/s; the comparison worker sheds pairs when it falls behind)."""
    try:
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    except (AttributeError, OSError):
        os.nice(BACKGROUND_NICE)
    target(*args)
