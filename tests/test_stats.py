"""The gate's statistics against hand-checked values, and the false-NO-GO rate under
repeated looks, simulated."""

from __future__ import annotations

import random

import pytest

from shadowproxy import stats

Z95 = 1.6448536269514722  # one-sided 95%: Phi^-1(0.95)


def test_z_is_one_sided() -> None:
    assert stats.z_for(0.95) == pytest.approx(Z95, abs=1e-9)


@pytest.mark.parametrize(
    ("k", "n", "low", "high"),
    [
        # By hand from centre = (p + z^2/2n)/(1 + z^2/n), half = z sqrt(p(1-p)/n + z^2/4n^2)/(1 + z^2/n):
        # 0/300: high = z^2/(n + z^2) = 2.70554/302.70554
        (0, 300, 0.0, 0.0089379),
        # 3/100: centre 0.0423791, half 0.0303273
        (3, 100, 0.0120518, 0.0727103),
        # 16/1000: centre 0.0173059, half 0.0066473
        (16, 1000, 0.0106586, 0.0239533),
    ],
)
def test_wilson_one_sided_95(k: int, n: int, low: float, high: float) -> None:
    lo, hi = stats.wilson(k, n, Z95)
    assert lo == pytest.approx(low, abs=5e-7)
    assert hi == pytest.approx(high, abs=5e-7)


def test_wilson_matches_the_design_note_thresholds() -> None:
    # "With zero errors, U falls under 1% only from n = 268"
    assert stats.wilson(0, 268, Z95)[1] <= 0.01 < stats.wilson(0, 267, Z95)[1]
    # "At n = 100, 3 errors already prove > 1%; at n = 1000, 16 errors" (and one fewer does not)
    assert stats.wilson(2, 100, Z95)[0] <= 0.01 < stats.wilson(3, 100, Z95)[0]
    assert stats.wilson(15, 1000, Z95)[0] <= 0.01 < stats.wilson(16, 1000, Z95)[0]
    assert stats.wilson(0, 0, Z95) == (0.0, 1.0)


def test_needed_n_is_where_the_upper_bound_reaches_the_limit() -> None:
    assert stats.needed_n(0, 10, 0.01, Z95) == 268
    assert stats.needed_n(0, 300, 0.001, Z95) == 2703  # z^2 (1 - limit) / limit = 2702.8
    assert stats.needed_n(5, 100, 0.01, Z95) is None  # the rate itself is over the limit


def test_nogo_boundary_is_obrien_fleming_shaped() -> None:
    # Epoch 0 spends alpha/2 with a constant boundary on B(t) = Z sqrt(t): z(1 - alpha/4) at t = 1.
    at_plan = stats.nogo_z(300, 300, 0.05)
    assert at_plan == pytest.approx(2.2414027, abs=1e-6)
    assert stats.nogo_z(75, 300, 0.05) == pytest.approx(2 * at_plan)
    # Past the plan every doubling spends half of what is left, so the boundary keeps rising.
    assert at_plan < stats.nogo_z(600, 300, 0.05) < stats.nogo_z(1200, 300, 0.05)


def test_sequential_p_agrees_with_the_wilson_lower_bound_at_the_boundary() -> None:
    for n, k in [(50, 5), (300, 9), (1000, 20), (5000, 40)]:
        for alpha in (0.05, 0.01):
            z = stats.nogo_z(n, 300, alpha)
            rejected = stats.sequential_p(k, n, 300, 0.005) <= alpha
            assert rejected == (stats.wilson(k, n, z)[0] > 0.005), (n, k, alpha)


def test_repeated_looks_do_not_inflate_false_nogo() -> None:
    """At a true rate exactly at the limit, look after every request up to 4x the plan: the
    boundary keeps false NO-GOs near alpha; a fixed 95% bound at every look does not."""
    rng = random.Random(20261128)
    limit, planned, looks, runs = 0.05, 100, 400, 400
    ours = naive = 0
    for _ in range(runs):
        k = 0
        crossed_ours = crossed_naive = False
        for n in range(1, looks + 1):
            k += rng.random() < limit
            crossed_ours = crossed_ours or stats.sequential_p(k, n, planned, limit) <= 0.05
            crossed_naive = crossed_naive or (n >= 30 and stats.wilson(k, n, Z95)[0] > limit)
        ours += crossed_ours
        naive += crossed_naive
    assert ours / runs <= 0.07
    assert naive / runs >= 0.15


def test_holm_step_down() -> None:
    rejected, faced = stats.holm([0.01, 0.04, 0.03, 0.005], 0.05)
    assert rejected == [True, False, False, True]
    # Rejected tests faced alpha/4 and alpha/3; the rest face the threshold where Holm stopped.
    assert faced == pytest.approx([0.05 / 3, 0.025, 0.025, 0.0125])
