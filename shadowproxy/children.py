"""The proxy's child processes (the store's writer, the comparison worker) and how they start.

Each is forked from one multiprocessing forkserver that has imported their modules once: not
a fresh interpreter importing them (and DeepDiff) every time, and not a fork of the proxy
with its threads and event loop. The preload list is set by whichever child starts first, so
it names every child's module.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any

PRELOAD = ["__main__", "shadowproxy.store_writer", "shadowproxy.compare_process", "shadowproxy.compare"]


def spawn(target: Callable[..., None], args: tuple[Any, ...], name: str) -> tuple[BaseProcess, Connection]:
    """Start `target(pipe, *args)` in a child; the parent's end of the pipe comes back."""
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(PRELOAD)
    ours, theirs = ctx.Pipe()
    proc = ctx.Process(target=target, args=(theirs, *args), name=name)
    try:
        proc.start()
    except BaseException:
        ours.close()
        raise
    finally:
        theirs.close()
    return proc, ours
