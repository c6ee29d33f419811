"""A circuit breaker for the shadow: stop sending it copies while it keeps failing.

A dead or hanging shadow otherwise costs the primary path all the same: every copy holds
an in-flight slot until its timeout, the pool keeps reopening connections, and the
timeouts fire in bursts that show up in the primary's p99 (measured: a hanging shadow
quadrupled it at 8 connections). After `failures` transport errors or timeouts in a row
the breaker opens; requests are then skipped (`circuit_open`, counted) for a cool-off that
doubles while the shadow stays sick, and one probe at a time tests whether it is back.
A 5xx is an answer, not a failure here: it is evidence for the gate and keeps flowing.

Pure: no I/O, an injectable clock.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from shadowproxy import config


class Breaker:
    def __init__(self, cfg: config.Breaker, clock: Callable[[], float] = time.monotonic) -> None:
        self._cfg = cfg
        self._clock = clock
        self._failures = 0
        self._open_until: float | None = None
        self._cool_off = cfg.cool_off_s
        self._probing = False

    @property
    def open(self) -> bool:
        return self._open_until is not None

    def allow(self) -> bool:
        """May a copy go to the shadow now? In the open state, one probe after the cool-off."""
        if not self._cfg.enabled or self._open_until is None:
            return True
        if self._probing or self._clock() < self._open_until:
            return False
        self._probing = True
        return True

    def record(self, failed: bool) -> None:
        """The outcome of a copy that was allowed."""
        if not failed:
            self._failures = 0
            self._open_until = None
            self._probing = False
            self._cool_off = self._cfg.cool_off_s
            return
        self._failures += 1
        if self._probing:
            # The probe failed: stay open, and wait longer before the next one.
            self._probing = False
            self._cool_off = min(self._cool_off * 2, self._cfg.max_cool_off_s)
            self._open_until = self._clock() + self._cool_off
        elif self._open_until is None and self._failures >= self._cfg.failures:
            self._open_until = self._clock() + self._cool_off
