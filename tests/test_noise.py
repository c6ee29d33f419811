from __future__ import annotations

import pytest

from shadowproxy import noise
from shadowproxy.config import Noise
from shadowproxy.evidence import FieldCount, SuggestedIgnore

CFG = Noise(enabled=True)


@pytest.mark.parametrize(
    ("raw", "noise_", "total", "real"),
    [
        (100, 10, 1000, True),  # far more old-vs-new than old-vs-old
        (100, 90, 1000, False),  # 10/190 = 5.3% relative: noise
        (50, 50, 1000, False),  # raw must exceed noise
        (10, 50, 1000, False),
        (0, 0, 1000, False),
        (60, 40, 1000, False),  # exactly 20% relative is not above it
        (61, 39, 1000, True),
        (3, 0, 10000, False),  # exactly 0.03% of traffic is not above it
        (4, 0, 10000, True),
        (2, 0, 100000, False),  # rare: 0.002% of traffic
        (5, 0, 0, True),  # a total below the counts is read as at least raw
    ],
)
def test_is_real_difference(raw: int, noise_: int, total: int, real: bool) -> None:
    assert noise.is_real_difference(raw, noise_, total, CFG) is real


def test_thresholds_come_from_config() -> None:
    strict = Noise(min_relative_difference=0.01, min_absolute_difference=0.0)
    assert noise.is_real_difference(100, 90, 1000, strict)
    assert not noise.is_real_difference(100, 90, 1000, CFG)


def test_suggest() -> None:
    fields = [
        FieldCount("$.data[0].updated_at", raw=300, noise=280),
        FieldCount("$.data[1].updated_at", raw=200, noise=190),  # merged with the one above
        FieldCount("header:x-trace", raw=40, noise=40),
        FieldCount("$.price", raw=120, noise=3),  # a real difference: never suggested
        FieldCount("$.rare", raw=5, noise=0),  # rare, but the old backend never varied it
        FieldCount("status", raw=10, noise=10),  # no rule can ignore a status
        FieldCount("line:3", raw=10, noise=10),
    ]
    out = noise.suggest("/api/pitches", fields, total=1000, cfg=CFG)
    assert [(s.route, s.path, s.raw, s.noise, s.total) for s in out] == [
        ("/api/pitches", "$.data[*].updated_at", 500, 470, 1000),
        ("/api/pitches", "header:x-trace", 40, 40, 1000),
    ]
    assert out[0].why == (
        "differs old-vs-new in 500 and old-vs-old in 470 of 1000 requests that also went to the "
        "secondary: |raw-noise|/(raw+noise) = 3.1%, not above the 20.0% needed to call it a real difference"
    )
    assert out[1].why.endswith("the old backend disagrees with itself at least as often, so this is noise")


def test_suggest_caps_merged_counts_at_total() -> None:
    fields = [FieldCount(f"$.items[{i}].at", raw=90, noise=90) for i in range(5)]
    out = noise.suggest("r", fields, total=100, cfg=CFG)
    assert out == [SuggestedIgnore("r", "$.items[*].at", 100, 100, 100, out[0].why)]


def test_suggest_explains_the_absolute_threshold() -> None:
    cfg = Noise(min_relative_difference=0.0, min_absolute_difference=0.01)
    (s,) = noise.suggest("r", [FieldCount("$.a", raw=12, noise=8)], total=1000, cfg=cfg)
    assert s.why.endswith(
        "|raw-noise|/total = 0.400%, not above the 1.000% needed to call it a real difference"
    )


@pytest.mark.parametrize(
    ("field", "total"),
    [
        (FieldCount("$.a", raw=3, noise=0), 0),
        # Too rare to be a real difference, but never noisy either: not to be hidden.
        (FieldCount("$.a", raw=2, noise=0), 100_000),
        (FieldCount("$.a", raw=0, noise=7), 100),
    ],
)
def test_suggest_only_what_the_secondary_explains(field: FieldCount, total: int) -> None:
    assert noise.suggest("r", [field], total=total, cfg=CFG) == []
