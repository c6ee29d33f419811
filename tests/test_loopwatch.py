"""The event-loop lag probe: a loop held up shows as lag, in the metric operators read."""

from __future__ import annotations

import asyncio
import time

from shadowproxy.loopwatch import LoopWatch
from shadowproxy.metrics import Metrics


async def test_a_held_loop_shows_as_lag() -> None:
    seen: list[float] = []
    late = asyncio.Event()

    def observe(seconds: float) -> None:
        seen.append(seconds)
        if seconds >= 0.04:
            late.set()

    probe = LoopWatch(observe, interval_s=0.01)
    probe.start()
    try:
        time.sleep(0.06)  # noqa: ASYNC251 - the stimulus: code that holds the loop, as a stall does
        await asyncio.wait_for(late.wait(), timeout=5.0)
    finally:
        probe.stop()
    assert max(seen) < 1.0  # lateness, not the interval or a clock in the wrong unit


def test_lag_lands_in_the_histogram_buckets_at_a_flush() -> None:
    m = Metrics()
    for seconds in (0.0005, 0.003, 0.03):
        m.loop_lag(seconds)
    count = m.registry.get_sample_value
    assert count("shadowproxy_event_loop_lag_seconds_count", {}) == 0  # batched until a flush
    m.flush()
    assert count("shadowproxy_event_loop_lag_seconds_bucket", {"le": "0.002"}) == 1
    assert count("shadowproxy_event_loop_lag_seconds_bucket", {"le": "0.025"}) == 2
    assert count("shadowproxy_event_loop_lag_seconds_bucket", {"le": "0.05"}) == 3
    assert count("shadowproxy_event_loop_lag_seconds_count", {}) == 3
    assert abs((count("shadowproxy_event_loop_lag_seconds_sum", {}) or 0) - 0.0335) < 1e-9
