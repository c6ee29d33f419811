"""The event-loop lag probe: a loop held up shows as lag, in the metric operators read."""

from __future__ import annotations

import asyncio
import time

from shadowproxy.loopwatch import watch
from shadowproxy.metrics import Metrics
from shadowproxy.tasks import TaskTracker


async def test_a_held_loop_shows_as_lag() -> None:
    seen: list[float] = []
    late = asyncio.Event()

    def observe(seconds: float) -> None:
        seen.append(seconds)
        if seconds >= 0.04:
            late.set()

    tracker = TaskTracker()
    tracker.spawn(watch(observe, interval_s=0.01), name="watch")
    await asyncio.sleep(0)  # one turn: the probe's first timer is set
    time.sleep(0.06)  # noqa: ASYNC251 - the stimulus: code that holds the loop, as a stall does
    await asyncio.wait_for(late.wait(), timeout=5.0)
    assert await tracker.drain(0) == 1  # the probe runs until it is cancelled
    assert max(seen) < 1.0  # lateness, not the interval or a clock in the wrong unit


def test_lag_lands_in_the_histogram_buckets() -> None:
    m = Metrics()
    for seconds in (0.0005, 0.003, 0.03):
        m.loop_lag(seconds)
    count = m.registry.get_sample_value
    assert count("shadowproxy_event_loop_lag_seconds_bucket", {"le": "0.002"}) == 1
    assert count("shadowproxy_event_loop_lag_seconds_bucket", {"le": "0.025"}) == 2
    assert count("shadowproxy_event_loop_lag_seconds_bucket", {"le": "0.05"}) == 3
    assert count("shadowproxy_event_loop_lag_seconds_count", {}) == 3
