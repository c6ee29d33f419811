"""The statistics behind the gate, pure math: one-sided Wilson bounds, the alpha-spending
NO-GO boundary over repeated looks, and Holm's step-down across a family of tests.

gate.py's module doc explains why these and how they combine.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from statistics import NormalDist

_NORMAL = NormalDist()


def z_for(confidence: float) -> float:
    """One-sided normal quantile: 1.645 for 0.95."""
    return _NORMAL.inv_cdf(confidence)


def wilson(k: float, n: int, z: float) -> tuple[float, float]:
    """Wilson score bounds for k events in n trials; (0, 1) when n is 0."""
    if n <= 0:
        return 0.0, 1.0
    p = k / n
    z2 = z * z
    denom = 1 + z2 / n
    centre = (p + z2 / (2 * n)) / denom
    half = z * math.sqrt(max(0.0, p * (1 - p) / n + z2 / (4 * n * n))) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def _epoch(t: float) -> int:
    return 0 if t <= 1 else math.ceil(math.log2(t))


def sequential_p(k: int, n: int, planned: int, limit: float) -> float:
    """Anytime-valid p-value of "rate > limit" at look n of a plan of `planned` (see module doc)."""
    if n <= 0 or limit >= 1:
        return 1.0
    if limit <= 0:
        return 0.0 if k > 0 else 1.0
    z = (k - n * limit) / math.sqrt(n * limit * (1 - limit))
    t = n / planned
    span = float(1 << _epoch(t))  # the epoch's end, 2^e
    tail = 0.5 * math.erfc(z * math.sqrt(t / span) / math.sqrt(2))
    return min(1.0, 4 * span * tail)


def nogo_z(n: int, planned: int, alpha: float) -> float:
    """The z a NO-GO needs at look n when the test's share of alpha is `alpha`."""
    t = max(n, 1) / planned
    span = float(1 << _epoch(t))
    return z_for(1 - alpha / (4 * span)) * math.sqrt(span / t)


def holm(pvalues: Sequence[float], alpha: float) -> tuple[list[bool], list[float]]:
    """Holm's step-down: which tests are rejected, and the p threshold each one faced.

    A test after the first non-rejected one faces that test's threshold, so a bound shown
    at it is consistent with not being rejected.
    """
    m = len(pvalues)
    order = sorted(range(m), key=lambda i: (pvalues[i], i))
    rejected = [False] * m
    faced = [alpha] * m
    stop: float | None = None
    for rank, i in enumerate(order):
        threshold = alpha / (m - rank)
        if stop is None and pvalues[i] <= threshold:
            rejected[i] = True
            faced[i] = threshold
        else:
            stop = threshold if stop is None else stop
            faced[i] = stop
    return rejected, faced


def needed_n(k: int, n: int, limit: float, z: float) -> int | None:
    """Trials needed for the upper bound to reach the limit if the rate stays k/n; None if never."""
    rate = k / n if n else 0.0
    if rate >= limit or limit <= 0:
        return None
    lo, hi = max(n, 1), max(n, 1)
    while wilson(rate * hi, hi, z)[1] > limit:
        lo, hi = hi, hi * 2
        if hi > 10**12:
            return None
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if wilson(rate * mid, mid, z)[1] <= limit else (mid, hi)
    return hi
