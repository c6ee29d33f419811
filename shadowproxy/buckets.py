"""Which histogram bucket a value falls in (`bisect.bisect_left`, compiled), and whether a
latency is a number to put in one (`math.isfinite`, compiled).

Every shadowed request puts four latencies in histogram buckets (the metrics' and the
store's, primary and shadow). Called from compiled code, `bisect.bisect_left` is a generic
call into a C function: about 1,800 instructions each (callgrind, `make bench-ir`'s equal
scenario). This loop, compiled, is a few dozen.
"""

from __future__ import annotations


def bucket_index(bounds: tuple[float, ...], value: float) -> int:
    """The index of the first bound >= value (len(bounds) when none is): a value equal to a
    bound belongs to that bound's bucket, as Prometheus's `le` has it. NaN gives 0, as
    bisect_left does."""
    lo = 0
    hi = len(bounds)
    while lo < hi:
        mid = (lo + hi) // 2
        if bounds[mid] < value:
            lo = mid + 1
        else:
            hi = mid
    return lo


def finite(value: float) -> bool:
    """`math.isfinite` for the latencies of every request: from compiled code the math
    function is a generic call, about 700 instructions (callgrind), four to six times per
    shadowed request. Infinity minus itself, and NaN minus anything, is NaN, never 0."""
    return value - value == 0.0
