"""How late the event loop runs: the time a request may wait for the proxy itself.

Everything a process does shares one event loop, and the store's writer thread shares its
GIL: when either holds on too long, every request in flight waits, and nothing in the
upstream latencies shows it. A timer that should fire every `interval_s` measures how
late it fires. Under `make bench`'s load on 2 cores, a probe like it showed 3-6 ms stalls
twice a second, at the store's flush cadence: enough to move a p99.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

PROBE_INTERVAL_S = 0.01  # 100 wake-ups a second: microseconds of work each


async def watch(observe: Callable[[float], None], interval_s: float = PROBE_INTERVAL_S) -> None:
    """Forever: sleep `interval_s`, then report how much later than that it woke (seconds)."""
    while True:
        start = time.perf_counter()
        await asyncio.sleep(interval_s)
        observe(max(0.0, time.perf_counter() - start - interval_s))
