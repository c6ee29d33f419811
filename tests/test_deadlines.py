"""The pool's coarse deadline timer (fast/deadlines.py): a head not in by its deadline fails
with TimeoutError within one tick, one that arrived is never touched, and nothing lingers."""

import asyncio

import pytest

from shadowproxy.fast.deadlines import Deadlines

TICK_S = 0.01


async def test_a_future_past_its_deadline_times_out_within_a_tick() -> None:
    loop = asyncio.get_running_loop()
    d = Deadlines(loop, TICK_S)
    late: asyncio.Future[None] = loop.create_future()
    later: asyncio.Future[None] = loop.create_future()
    start = loop.time()
    d.watch(late, start + 0.05)
    d.watch(later, start + 60.0)
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(late, 5.0)  # a bound should the expiry never come: see below
    # The loop's clock has millisecond steps: allow one on each side of the window.
    assert start + 0.05 - 0.001 <= loop.time() <= start + 0.05 + TICK_S + 0.05
    assert not later.done() and len(d) == 1
    d.forget(later)
    assert len(d) == 0
    d.close()


async def test_a_future_done_in_time_keeps_its_result_and_is_forgotten() -> None:
    loop = asyncio.get_running_loop()
    d = Deadlines(loop, TICK_S)
    on_time: asyncio.Future[None] = loop.create_future()
    d.watch(on_time, loop.time() + 0.02)
    loop.call_soon(on_time.set_result, None)
    await on_time
    d.forget(on_time)
    # Past the deadline the expiry tick finds nothing to fail (a second future, watched for
    # less long, proves the tick ran).
    probe: asyncio.Future[None] = loop.create_future()
    d.watch(probe, loop.time() + 0.03)
    with pytest.raises(TimeoutError):
        await probe
    assert on_time.result() is None and len(d) == 0
    d.close()


async def test_close_stops_the_timer_and_forgets_everything() -> None:
    loop = asyncio.get_running_loop()
    d = Deadlines(loop, TICK_S)
    fut: asyncio.Future[None] = loop.create_future()
    d.watch(fut, loop.time())
    d.close()
    assert len(d) == 0
    # Closed: the future is left alone (the pool aborts its connections instead).
    await asyncio.wait([fut], timeout=3 * TICK_S)
    assert not fut.done()
