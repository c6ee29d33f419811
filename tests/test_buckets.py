"""buckets.bucket_index is bisect.bisect_left, for every bucket layout we use."""

import bisect
import math
import random

import pytest

from shadowproxy.buckets import bucket_index, finite
from shadowproxy.evidence import LATENCY_BUCKETS
from shadowproxy.metrics import LOOP_LAG_BUCKETS


@pytest.mark.parametrize("bounds", [LATENCY_BUCKETS, LOOP_LAG_BUCKETS, (1.0,), ()])
def test_bucket_index_is_bisect_left(bounds: tuple[float, ...]) -> None:
    rng = random.Random(7)
    values = [*bounds, *(b * 0.999 for b in bounds), *(b * 1.001 for b in bounds)]
    values += [
        0.0,
        -1.0,
        math.inf,
        -math.inf,
        1e-9,
        1e9,
        *(rng.uniform(0, 2 * max(bounds, default=1)) for _ in range(500)),
    ]
    for v in values:
        assert bucket_index(bounds, v) == bisect.bisect_left(bounds, v), v
    assert bucket_index(bounds, math.nan) == bisect.bisect_left(bounds, math.nan) == 0


def test_finite_is_math_isfinite() -> None:
    rng = random.Random(7)
    values = [0.0, -0.0, 1e-308, 5e-324, 1.7e308, -1.7e308, math.inf, -math.inf, math.nan, -math.nan]
    values += [rng.uniform(-1e6, 1e6) for _ in range(500)]
    for v in values:
        assert finite(v) is math.isfinite(v), v
