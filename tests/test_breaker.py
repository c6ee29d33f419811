"""The shadow's circuit breaker, on a hand-driven clock."""

from __future__ import annotations

from shadowproxy import config
from shadowproxy.breaker import Breaker


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def breaker(**kw: object) -> tuple[Breaker, Clock]:
    clock = Clock()
    return Breaker(config.Breaker(**kw), clock), clock  # type: ignore[arg-type]


def test_opens_after_consecutive_failures_only():
    b, _ = breaker(failures=3)
    for failed in (True, True, False, True, True):
        assert b.allow()
        b.record(failed)
    assert not b.open  # the success in between reset the run
    b.record(True)
    assert b.open and not b.allow()


def test_one_probe_after_the_cool_off_and_a_doubling_wait_while_it_fails():
    b, clock = breaker(failures=1, cool_off_s=5.0, max_cool_off_s=12.0)
    b.record(True)
    assert not b.allow()
    clock.now += 5.0
    assert b.allow()  # the probe
    assert not b.allow()  # one at a time
    b.record(True)  # probe failed: wait 10 s now
    clock.now += 9.9
    assert not b.allow()
    clock.now += 0.1
    assert b.allow()
    b.record(True)  # again: capped at 12 s
    clock.now += 11.9
    assert not b.allow()
    clock.now += 0.1
    assert b.allow()
    b.record(False)  # back: closed, and the cool-off is reset
    assert not b.open and b.allow() and b.allow()


def test_disabled_never_opens():
    b, _ = breaker(enabled=False, failures=1)
    for _ in range(10):
        b.record(True)
    assert b.allow()
