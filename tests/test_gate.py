"""The gate: every verdict path, and the formatting of its evidence."""

from __future__ import annotations

import dataclasses
import math
import random

import pytest

from shadowproxy import gate, stats
from shadowproxy.config import Backend, Config, Gate, Route, RouteGate
from shadowproxy.evidence import LATENCY_BUCKETS, Evidence, Histogram, RouteEvidence

# --------------------------------------------------------------------------- statistics


def test_count_over_brackets_a_threshold_between_bounds() -> None:
    h = hist([0.1] * 50 + [0.35] * 30 + [0.45] * 20)
    assert gate.count_over(h, 0.5) == (0, 0)  # a bound: exact
    assert gate.count_over(h, 0.3) == (50, 50)
    assert gate.count_over(h, 0.4) == (0, 50)  # 0.3 < 0.4 < 0.5: between 0 and 50 are slower


def test_bucket_range_text() -> None:
    assert gate.bucket_range((0.02, 0.03)) == "20\u201330 ms"
    assert gate.bucket_range((0.75, 1.0)) == "750 ms\u20131 s"
    assert gate.bucket_range((30.0, math.inf)) == "> 30 s"
    assert gate.bucket_range(None) == "\u2013"


# --------------------------------------------------------------------------- verdicts


def hist(values: list[float]) -> Histogram:
    counts = tuple(sum(1 for v in values if v <= b) for b in LATENCY_BUCKETS)
    return Histogram(counts=counts, total=len(values), sum_s=sum(values))


def route_ev(
    name: str,
    n: int,
    mismatches: int = 0,
    errors: int = 0,
    primary_s: float = 0.025,
    shadow_s: float = 0.026,
    slow: int = 0,
    pairs: bool = True,
    **kw: object,
) -> RouteEvidence:
    """n requests, all shadowed and compared; `slow` shadow calls take 0.8 s."""
    shadow = [0.8] * slow + [shadow_s] * (n - slow)
    primary = [primary_s] * n
    return RouteEvidence(
        route=name,
        requests=n,
        shadowed=n,
        compared=n - errors,
        mismatches=mismatches,
        shadow_errors=errors,
        primary_latency=hist(primary),
        shadow_latency=hist(shadow),
        latency_pairs=tuple(zip(primary, shadow, strict=True)) if pairs else (),
        **kw,  # type: ignore[arg-type]
    )


def cfg_with(*routes: Route, **gate_kw: object) -> Config:
    return Config(
        primary=Backend(url="http://127.0.0.1:1"),
        shadow=Backend(url="http://127.0.0.1:2"),
        routes=routes,
        gate=Gate(**gate_kw),  # type: ignore[arg-type]
    )


def judge(cfg: Config, *evs: RouteEvidence) -> gate.Decision:
    return gate.evaluate(cfg, Evidence(routes=evs, source="test", window="test"))


USER = Route(name="user", match="/api/users/{id}")


def test_go_when_every_check_is_proven_within_its_limit() -> None:
    d = judge(cfg_with(USER), route_ev("user", 4000, errors=10))
    (r,) = d.routes
    assert (d.verdict, r.verdict) == ("GO", "GO")
    assert [c.outcome for c in r.checks] == ["pass"] * 4
    assert any("upper bound" in x and "≤ limit 0.10%" in x for x in r.reasons)


@pytest.mark.parametrize(
    ("ev", "check", "text"),
    [
        (route_ev("user", 4000, mismatches=40), "mismatch", "mismatches 40/4000"),
        (route_ev("user", 4000, errors=120), "shadow_error", "shadow errors 120/4000"),
        (route_ev("user", 4000, slow=400), "latency_slo", "slower than 500 ms 400/4000"),
        (route_ev("user", 4000, shadow_s=0.06), "latency_ratio", "slower than 1.2\u00d7 primary 4000/4000"),
    ],
)
def test_nogo_on_each_check(ev: RouteEvidence, check: str, text: str) -> None:
    d = judge(cfg_with(USER), ev)
    (r,) = d.routes
    assert (d.verdict, r.verdict, r.early) == ("NO-GO", "NO-GO", False)
    c = r.check(check)  # type: ignore[arg-type]
    assert c is not None and c.outcome == "fail"
    assert c.low is not None and c.low > c.limit
    assert any(reason.startswith(text) or text in reason for reason in r.reasons)
    assert d.reasons and d.reasons[0].startswith("user: ")


def test_inconclusive_below_min_samples_says_how_far() -> None:
    d = judge(cfg_with(USER), route_ev("user", 42))
    (r,) = d.routes
    assert (d.verdict, r.verdict) == ("INCONCLUSIVE", "INCONCLUSIVE")
    assert any(x.startswith("n=42 of 300 compared") for x in r.reasons)
    assert d.coverage.under_min == ("user",)


def test_early_nogo_below_min_samples_on_overwhelming_evidence() -> None:
    d = judge(cfg_with(USER), route_ev("user", 100, mismatches=30))
    (r,) = d.routes
    assert (d.verdict, r.verdict, r.early) == ("NO-GO", "NO-GO", True)
    assert "early NO-GO at n=100 of 300" in r.reasons[0]


def test_early_evidence_that_would_pass_a_single_look_is_not_enough() -> None:
    # 3/100 proves > 1% at one look (Wilson lower 1.2%); early, the boundary asks for more.
    ev = route_ev("user", 100, errors=3)
    d = judge(cfg_with(USER, min_samples=300), ev)
    c = d.routes[0].check("shadow_error")
    assert c is not None and c.outcome == "open"


def test_declared_route_without_traffic_blocks() -> None:
    orders = Route(name="orders", match="/api/orders/**")
    d = judge(cfg_with(USER, orders), route_ev("user", 4000))
    assert d.verdict == "INCONCLUSIVE"
    assert d.routes[0].verdict == "GO"
    assert d.routes[1].reasons == ("no traffic in the window",)
    assert d.reasons == ("orders (declared): no traffic in the window",)
    assert d.coverage.declared_unseen == ("orders",)


def test_not_shadowed_route_names_the_skip_reasons() -> None:
    ev = RouteEvidence(route="/api/pitches", requests=50, skipped={"unsafe_method": 45, "body_too_large": 5})
    d = judge(cfg_with(USER), route_ev("user", 4000), ev)
    r = d.routes[1]
    assert r.verdict == "INCONCLUSIVE"
    assert r.reasons == ("not shadowed: 45 unsafe_method, 5 body_too_large (of 50 requests)",)
    assert d.verdict == "GO"  # an automatic, non-critical route does not block


def test_a_route_whose_pairs_were_all_lost_says_so() -> None:
    ev = RouteEvidence(route="/api/pitches", requests=7, skipped={"saturated": 4}, lost={"pair_expired": 3})
    r = judge(cfg_with(USER), route_ev("user", 4000), ev).routes[1]
    assert r.verdict == "INCONCLUSIVE"
    assert r.reasons == ("no pair recorded: 4 saturated, 3 lost (pair_expired) (of 7 requests)",)


def test_critical_route_inconclusive_blocks() -> None:
    critical = Route(name="user", match="/api/users/{id}", critical=True)
    d = judge(cfg_with(critical), route_ev("user", 42))
    assert d.verdict == "INCONCLUSIVE"
    assert d.reasons[0].startswith("user (critical): n=42 of 300")


def test_auto_route_inconclusive_does_not_block_but_nothing_proven_is_not_go() -> None:
    d = judge(cfg_with(USER), route_ev("user", 4000), route_ev("/api/misc/{id}", 42))
    assert d.verdict == "GO"
    assert d.reasons[1] == "not blocking (not critical): /api/misc/{id} inconclusive"
    assert judge(cfg_with(), route_ev("/api/misc/{id}", 42)).verdict == "INCONCLUSIVE"


def test_route_override_changes_the_limit() -> None:
    lenient = Route(name="user", match="/u", gate=RouteGate(max_mismatch_rate=0.05))
    assert judge(cfg_with(USER), route_ev("user", 4000, mismatches=40)).verdict == "NO-GO"
    assert judge(cfg_with(lenient), route_ev("user", 4000, mismatches=40)).verdict == "GO"


def test_more_routes_make_a_nogo_harder_holm() -> None:
    # 12/4000 mismatches against 0.1%: p = 0.0083, under alpha/4 (one route's 4 tests) but
    # over alpha/40 (ten routes' tests).
    assert stats.sequential_p(12, 4000, 300, 0.001) == pytest.approx(0.008284, abs=1e-6)
    alone = judge(cfg_with(USER), route_ev("user", 4000, mismatches=12))
    assert alone.verdict == "NO-GO" and alone.family.tests == 4
    others = [route_ev(f"/r{i}", 4000) for i in range(9)]
    crowd = judge(cfg_with(USER), route_ev("user", 4000, mismatches=12), *others)
    assert crowd.family.tests == 40 and crowd.family.routes == 10
    assert crowd.routes[0].verdict == "INCONCLUSIVE"


def test_ratio_interval_is_consistent_with_the_decision() -> None:
    rng = random.Random(7)
    pairs = [(p, p * rng.uniform(0.7, 1.6)) for p in (rng.uniform(0.02, 0.2) for _ in range(2000))]
    for limit in (1.0, 1.3, 1.45, 1.5, 1.55, 1.7):
        ev = RouteEvidence(
            route="user",
            requests=2000,
            shadowed=2000,
            compared=2000,
            shadow_latency=hist([s for _, s in pairs]),
            primary_latency=hist([p for p, _ in pairs]),
            latency_pairs=tuple(pairs),
        )
        c = judge(cfg_with(USER, max_latency_ratio=limit), ev).routes[0].check("latency_ratio")
        assert c is not None and c.low is not None and c.high is not None
        assert (c.outcome == "fail") == (c.low > limit), limit
        assert (c.outcome == "pass") == (c.high <= limit), limit
        assert c.low <= (c.estimate or 0) <= c.high


def test_without_pairs_buckets_decide_only_when_they_leave_no_doubt() -> None:
    slow = judge(cfg_with(USER), route_ev("user", 4000, shadow_s=0.4, pairs=False))
    c = slow.routes[0].check("latency_ratio")
    assert c is not None and c.outcome == "fail" and c.p_value is None
    assert "no paired samples" in c.reason and "300\u2013500 ms vs primary 20\u201330 ms" in c.reason
    same = judge(cfg_with(USER), route_ev("user", 4000, pairs=False))
    c = same.routes[0].check("latency_ratio")
    assert c is not None and c.outcome == "open"
    assert same.verdict == "INCONCLUSIVE"
    assert same.family.tests == 3  # the bucket comparison is not a test in the family


def test_the_live_decision_is_the_same_judgement_without_the_pairs_it_was_judged_on() -> None:
    # The store's writer sends it to the proxy; the pairs were nearly all of its size.
    cfg = cfg_with(USER)
    ev = Evidence(routes=(route_ev("user", 4000, shadow_s=0.4),), source="test", window="test")
    full, live = gate.evaluate(cfg, ev), gate.evaluate_live(cfg, ev)
    assert full.routes[0].evidence.latency_pairs and not live.routes[0].evidence.latency_pairs
    ratio = full.routes[0].check("latency_ratio")
    assert ratio is not None and ratio.outcome == "fail"  # judged on the pairs
    same = tuple(
        dataclasses.replace(r, evidence=f.evidence) for r, f in zip(live.routes, full.routes, strict=True)
    )
    assert dataclasses.replace(live, routes=same) == full
