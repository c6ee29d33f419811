"""Go / no-go verdicts from evidence: pure statistics, no I/O.

What is judged, per route (each a share of k events in n trials, against a limit):

- mismatch:      mismatching pairs / compared pairs                <= gate.max_mismatch_rate
- shadow_error:  shadow 5xx, errors, timeouts / shadowed requests   <= gate.max_shadow_error_rate
- latency_slo:   shadow calls slower than latency_slo_s / shadow calls <= 1 - latency_quantile
  ("p95 <= 500 ms" is "at most 5% over 500 ms"; exact when the SLO is a histogram bound)
- latency_ratio: pairs whose shadow took more than max_latency_ratio x its own primary / pairs
  <= 1 - latency_quantile. That is the statement "the latency_quantile of shadow/primary over
  the same requests is at most max_latency_ratio", so its interval is an order-statistic
  interval of the per-pair ratio. Without pairs (Prometheus) the two histograms' quantile
  buckets are compared instead, which can prove a breach or a pass only when the bucket
  ranges leave no doubt; that comparison is not a statistical test.

Bounds are one-sided Wilson score bounds (the score test inverted). One-sided, because each
decision asks one question: "is the rate above the limit?" (NO-GO) or "is it at or under?"
(GO). At confidence 95% that is z = 1.645; 0 events in 300 gives an upper bound of 0.89%.

GO is a single planned look: every check's upper bound at the route's configured confidence
is at or under its limit, with n >= min_samples for every check. Never earlier. GO overall
needs every check of every route that matters to pass (an intersection-union test), so the
number of routes does not inflate false GOs.

Looking again and again. The report is run many times on growing evidence, and the overall
verdict is NO-GO if any of m = routes x checks tests says so. Two guards keep the chance of
a false NO-GO at alpha = 1 - gate.confidence (global) however often the report is run:

1. Alpha spending over time (per test). With t = n / min_samples the score statistic Z
   gives a Brownian motion B(t) = Z * sqrt(t). Epoch 0 (t <= 1) spends alpha/2 with a
   constant boundary on B, the O'Brien-Fleming shape: NO-GO needs Z >= z(1 - alpha/4) /
   sqrt(t) (z = 2.24 at n = min_samples, 4.48 at a quarter of it). Epoch e >= 1 (t in
   (2^(e-1), 2^e]) spends alpha/2^(e+1): Z >= z(1 - alpha/2^(e+2)) * sqrt(2^e / t). By the
   reflection principle, P(sup B over [0, T] >= b) = 2(1 - Phi(b / sqrt T)), so each epoch's
   chance of a false crossing, even if looked at continuously, is at most its share, and the
   shares sum to alpha. This yields an anytime-valid p-value per test.
2. Holm across the family: the m p-values of one report are Holm-corrected at alpha; a
   test's NO-GO boundary is the Wilson lower bound at the z its Holm threshold implies.

The price: NO-GO needs more evidence than a single look at 95% would (z >= 2.24 even for a
family of one), and a NO-GO may still come early, before min_samples, when the evidence is
overwhelming. The normal approximation under all of this is rough when n x limit is small.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Literal

from shadowproxy.config import Config, Gate
from shadowproxy.evidence import Evidence, Histogram, RouteEvidence
from shadowproxy.stats import holm, needed_n, nogo_z, sequential_p, wilson, z_for

Verdict = Literal["GO", "NO-GO", "INCONCLUSIVE"]
CheckName = Literal["mismatch", "shadow_error", "latency_slo", "latency_ratio"]
Outcome = Literal["pass", "fail", "open"]
CHECKS: tuple[CheckName, ...] = ("mismatch", "shadow_error", "latency_slo", "latency_ratio")
TITLES: dict[CheckName, str] = {
    "mismatch": "mismatch rate",
    "shadow_error": "shadow error rate",
    "latency_slo": "shadow slower than SLO",
    "latency_ratio": "latency ratio",
}
# Typography for reports, kept as escapes so the source stays plain ASCII.
DASH = "\u2013"
TIMES = "\u00d7"


# --------------------------------------------------------------------------- statistics


def count_over(h: Histogram, threshold_s: float) -> tuple[int, int]:
    """Observations above the threshold: (at least, at most). Equal when it is a bucket bound."""
    most, _ = h.over(threshold_s)
    least = most
    for b, c in zip(h.bounds, h.counts, strict=True):
        if b >= threshold_s - 1e-12:
            least = h.total - c
            break
    return min(least, most), most


# --------------------------------------------------------------------------- formatting


def pct(x: float) -> str:
    if x == 0:
        return "0%"
    v = x * 100
    digits = 3 if v < 0.1 else 2 if v < 1 else 1 if v < 99.95 else 0
    return f"{v:.{digits}f}%"


def seconds(s: float) -> str:
    if math.isinf(s):
        return "∞"
    if s >= 1:
        return f"{s:g} s"
    return f"{s * 1000:g} ms"


def bucket_range(r: tuple[float, float] | None) -> str:
    """A quantile's bucket as text: "20-30 ms", "> 30 s"; DASH alone when there is no data."""
    if r is None:
        return DASH
    lo, hi = r
    if math.isinf(hi):
        return f"> {seconds(lo)}"
    if hi < 1 or lo >= 1:
        unit = " s" if lo >= 1 else " ms"
        scale = 1 if lo >= 1 else 1000
        return f"{lo * scale:g}{DASH}{hi * scale:g}{unit}"
    return f"{seconds(lo)}{DASH}{seconds(hi)}"


def ratio(x: float | None) -> str:
    if x is None:
        return DASH
    return "∞" if math.isinf(x) else f"{x:.2f}{TIMES}"


def quantile_name(q: float) -> str:
    return f"p{q * 100:g}"


# --------------------------------------------------------------------------- verdicts


@dataclass(frozen=True, slots=True)
class Check:
    """One criterion of one route. `low`/`high` is the decision interval, in the check's unit
    (a share, or a ratio for latency_ratio): NO-GO when low > limit, pass when high <= limit.
    `low` uses the look- and family-adjusted z, `high` the route's configured confidence."""

    name: CheckName
    outcome: Outcome
    k: int
    n: int
    limit: float
    estimate: float | None
    low: float | None
    high: float | None
    reason: str
    z_go: float | None = None
    z_nogo: float | None = None
    p_value: float | None = None  # anytime-valid, before Holm; None when not a statistical test

    @property
    def title(self) -> str:
        return TITLES[self.name]


@dataclass(frozen=True, slots=True)
class RouteVerdict:
    route: str
    verdict: Verdict
    reasons: tuple[str, ...]
    checks: tuple[Check, ...]
    gate: Gate
    evidence: RouteEvidence
    declared: bool
    early: bool = False  # a NO-GO before min_samples

    @property
    def critical(self) -> bool:
        return self.gate.critical

    @property
    def seen(self) -> bool:
        return self.evidence.requests > 0 or self.evidence.shadowed > 0

    def check(self, name: CheckName) -> Check | None:
        return next((c for c in self.checks if c.name == name), None)


@dataclass(frozen=True, slots=True)
class Coverage:
    declared_seen: tuple[str, ...]
    declared_unseen: tuple[str, ...]
    under_min: tuple[str, ...]  # seen, with fewer than min_samples compared
    auto: tuple[str, ...]  # seen, not declared (automatic templates, `other`)


@dataclass(frozen=True, slots=True)
class Family:
    """The NO-GO tests of one report, Holm-corrected together."""

    tests: int
    routes: int
    alpha: float
    correction: str = "Holm"


@dataclass(frozen=True, slots=True)
class Decision:
    verdict: Verdict
    reasons: tuple[str, ...]
    routes: tuple[RouteVerdict, ...]
    coverage: Coverage
    family: Family


@dataclass(frozen=True, slots=True)
class _Rate:
    """A rate test waiting for the family's Holm step."""

    name: CheckName
    k_low: int  # events counted for the NO-GO side (at least)
    k: int  # events counted for the GO side (at most)
    n: int
    limit: float  # as a share
    planned: int
    z_go: float
    label: str
    noun: str
    shown_limit: float  # the limit as the user wrote it: a share, or a ratio
    ratios: tuple[float, ...] = ()  # sorted per-pair shadow/primary, for latency_ratio

    @property
    def p(self) -> float:
        return sequential_p(self.k_low, self.n, self.planned, self.limit)


@dataclass(frozen=True, slots=True)
class _Plan:
    route: str
    ev: RouteEvidence
    gate: Gate
    declared: bool
    tests: tuple[_Rate, ...]
    fixed: tuple[Check, ...]  # checks decided without the family (no data, bucket ratio)
    blocker: str | None  # why nothing can be judged at all


def evaluate_live(cfg: Config, evidence: Evidence) -> Decision:
    """`evaluate`, for a decision that travels from the store's writer process to the proxy:
    without the latency pairs it was judged on. They were nearly all of it: 61 routes of
    20,000 pairs pickled to 24 MB, and unpickling that held the proxy's GIL for 190 ms."""
    d = evaluate(cfg, evidence)
    routes = tuple(replace(r, evidence=replace(r.evidence, latency_pairs=())) for r in d.routes)
    return replace(d, routes=routes)


def evaluate(cfg: Config, evidence: Evidence) -> Decision:
    """Every route's verdict and the overall one (see the module doc for the method)."""
    by_name = {r.route: r for r in evidence.routes}
    declared = [r.name for r in cfg.routes]
    names = declared + sorted(n for n in by_name if n not in set(declared))
    plans = [_plan(n, by_name.get(n, RouteEvidence(route=n)), cfg.gate_for(n), n in declared) for n in names]
    flat = [(i, t) for i, p in enumerate(plans) for t in p.tests]
    alpha = round(1 - cfg.gate.confidence, 12)  # 1 - 0.95 is 0.050000000000000044
    rejected, faced = holm([t.p for _, t in flat], alpha)
    decided: dict[int, list[Check]] = {i: [] for i in range(len(plans))}
    for (i, t), rej, a in zip(flat, rejected, faced, strict=True):
        decided[i].append(_decide(t, rej, a))
    routes = tuple(_verdict(p, decided[i]) for i, p in enumerate(plans))
    family = Family(tests=len(flat), routes=len({i for i, _ in flat}), alpha=alpha)
    verdict, reasons = _overall(routes)
    return Decision(verdict, reasons, routes, _coverage(routes), family)


def _most_first(counts: dict[str, int]) -> list[tuple[str, int]]:
    """The reasons counted more than zero times, most first, then by name."""
    return sorted(((r, c) for r, c in counts.items() if c > 0), key=lambda rc: (-rc[1], rc[0]))


def _plan(route: str, ev: RouteEvidence, gate: Gate, declared: bool) -> _Plan:
    if ev.shadowed <= 0:
        if ev.requests <= 0:
            blocker = "no traffic in the window"
        else:
            skipped = [f"{c} {r}" for r, c in _most_first(ev.skipped)]
            lost = [f"{c} lost ({r})" for r, c in _most_first(ev.lost)]
            why = ", ".join(skipped + lost) or "no skip reason recorded"
            # A lost pair was sent to the shadow: "not shadowed" would be untrue of it.
            blocker = f"{'no pair recorded' if lost else 'not shadowed'}: {why} (of {ev.requests} requests)"
        return _Plan(route, ev, gate, declared, (), (), blocker)
    z_go = z_for(gate.confidence)
    planned = gate.min_samples
    q = gate.latency_quantile
    tests: list[_Rate] = []
    fixed: list[Check] = []

    def rate(name: CheckName, k_low: int, k: int, n: int, limit: float, label: str, noun: str) -> None:
        if n <= 0:
            fixed.append(Check(name, "open", 0, 0, limit, None, None, None, f"{TITLES[name]}: no {noun}"))
            return
        tests.append(_Rate(name, min(k_low, n), min(k, n), n, limit, planned, z_go, label, noun, limit))

    rate(
        "mismatch",
        ev.mismatches,
        ev.mismatches,
        ev.compared,
        gate.max_mismatch_rate,
        "mismatches",
        "compared",
    )
    rate(
        "shadow_error",
        ev.shadow_errors,
        ev.shadow_errors,
        ev.shadowed,
        gate.max_shadow_error_rate,
        "shadow errors",
        "shadowed",
    )
    h = ev.shadow_latency
    least, most = count_over(h, gate.latency_slo_s)
    slow = f"slower than {seconds(gate.latency_slo_s)}"
    if least != most:
        slow += " (not a bucket bound: counted between bounds)"
    rate("latency_slo", least, most, h.total, 1 - q, slow, "shadow calls")
    if ev.latency_pairs:
        r = sorted(_pair_ratio(p, s) for p, s in ev.latency_pairs)
        k = len(r) - bisect.bisect_right(r, gate.max_latency_ratio)
        limit = gate.max_latency_ratio
        label = f"slower than {limit:g}{TIMES} primary"
        tests.append(
            _Rate("latency_ratio", k, k, len(r), 1 - q, planned, z_go, label, "pairs", limit, tuple(r))
        )
    else:
        fixed.append(_bucket_ratio(ev, gate))
    return _Plan(route, ev, gate, declared, tuple(tests), tuple(fixed), None)


def _pair_ratio(primary_s: float, shadow_s: float) -> float:
    if primary_s > 0:
        return shadow_s / primary_s
    return math.inf if shadow_s > 0 else 0.0


def _decide(t: _Rate, rejected: bool, alpha_faced: float) -> Check:
    z_no = nogo_z(t.n, t.planned, alpha_faced)
    low = wilson(t.k_low, t.n, z_no)[0]
    high = wilson(t.k, t.n, t.z_go)[1]
    outcome: Outcome = "fail" if rejected else "pass" if high <= t.limit and t.n >= t.planned else "open"
    base = f"{t.label} {t.k}/{t.n} = {pct(t.k / t.n)}"
    if outcome == "fail":
        reason = f"{base}: lower bound {pct(low)} > limit {pct(t.limit)}"
        if t.n < t.planned:
            reason += f" (early NO-GO at n={t.n} of {t.planned})"
    elif outcome == "pass":
        reason = f"{base}: upper bound {pct(high)} ≤ limit {pct(t.limit)}"
    else:
        need = needed_n(t.k, t.n, t.limit, t.z_go) if high > t.limit else None
        if t.n < t.planned:
            reason = f"n={t.n} of {t.planned} {t.noun}: {base}, upper bound {pct(high)}"
        else:
            reason = f"{base}: bounds {pct(low)}{DASH}{pct(high)} straddle limit {pct(t.limit)}"
        if need is not None:
            reason += f"; passing needs about {max(need, t.planned):,} {t.noun} at this rate"
        elif high > t.limit:
            reason += f" > limit {pct(t.limit)}"
    est: float | None = t.k / t.n
    lo: float | None = low
    hi: float | None = high
    if t.name == "latency_ratio":
        q = 1 - t.limit
        est = t.ratios[max(0, math.ceil(q * t.n) - 1)]
        lo, hi = _ratio_bounds(t.ratios, t.limit, z_no, t.z_go)
        bounds = f"{ratio(lo)}{DASH}{ratio(hi)}"
        reason = f"{quantile_name(q)} of shadow/primary {ratio(est)} (bounds {bounds}); {reason}"
    return Check(t.name, outcome, t.k, t.n, t.shown_limit, est, lo, hi, reason, t.z_go, z_no, t.p)


def _ratio_bounds(r: tuple[float, ...], share: float, z_no: float, z_go: float) -> tuple[float | None, float]:
    """The quantile's decision interval read off the sorted ratios: the rate test at
    threshold R fails exactly when R < low and passes exactly when R >= high."""
    n = len(r)

    def over_from(i: int, right: bool) -> int:
        return n - (bisect.bisect_right(r, r[i]) if right else bisect.bisect_left(r, r[i]))

    # The largest index whose value still proves a breach below it; predicates are monotone.
    lo_i = _last_true(n, lambda j: wilson(over_from(j, False), n, z_no)[0] > share)
    hi_i = _first_true(n, lambda i: wilson(over_from(i, True), n, z_go)[1] <= share)
    return (r[lo_i] if lo_i is not None else None), (r[hi_i] if hi_i is not None else math.inf)


def _first_true(n: int, pred: Callable[[int], bool]) -> int | None:
    lo, hi = 0, n
    while lo < hi:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if pred(mid) else (mid + 1, hi)
    return lo if lo < n else None


def _last_true(n: int, pred: Callable[[int], bool]) -> int | None:
    first_false = _first_true(n, lambda i: not pred(i))
    last = (n if first_false is None else first_false) - 1
    return last if last >= 0 else None


def _bucket_ratio(ev: RouteEvidence, gate: Gate) -> Check:
    """Without pairs, only bucket ranges that leave no doubt decide (never a false NO-GO from
    interpolation): NO-GO when the shadow's lower bound exceeds primary's upper x ratio."""
    q, limit, planned = gate.latency_quantile, gate.max_latency_ratio, gate.min_samples
    p, s = ev.primary_latency, ev.shadow_latency
    pr, sr = p.quantile_range(q), s.quantile_range(q)
    n = min(p.total, s.total)
    if pr is None or sr is None:
        return Check("latency_ratio", "open", 0, n, limit, None, None, None, "latency ratio: no latency data")
    low = 0.0 if math.isinf(pr[1]) else sr[0] / pr[1]
    high = sr[1] / pr[0] if pr[0] > 0 else math.inf
    name = quantile_name(q)
    text = (
        f"no paired samples: {name} shadow {bucket_range(sr)} vs primary {bucket_range(pr)}, "
        f"ratio between {ratio(low)} and {ratio(high)}"
    )
    outcome: Outcome
    if n < planned:
        outcome, reason = "open", f"n={n} of {planned} shadow calls: {text}"
    elif low > limit:
        outcome, reason = "fail", f"{text} > {limit:g}{TIMES} (the bucket bounds alone prove it)"
    elif high <= limit:
        outcome, reason = "pass", f"{text} ≤ {limit:g}{TIMES}"
    else:
        outcome, reason = "open", f"{text}: cannot show ≤ {limit:g}{TIMES} from buckets (paired samples can)"
    return Check("latency_ratio", outcome, 0, n, limit, None, low, high, reason)


def _verdict(plan: _Plan, decided: list[Check]) -> RouteVerdict:
    def make(
        verdict: Verdict, reasons: Sequence[str], checks: tuple[Check, ...], early: bool
    ) -> RouteVerdict:
        return RouteVerdict(
            plan.route, verdict, tuple(reasons), checks, plan.gate, plan.ev, plan.declared, early
        )

    if plan.blocker is not None:
        return make("INCONCLUSIVE", [plan.blocker], (), False)
    checks = tuple(sorted([*decided, *plan.fixed], key=lambda c: CHECKS.index(c.name)))
    fails = [c for c in checks if c.outcome == "fail"]
    if fails:
        early = any(c.n < plan.gate.min_samples for c in fails)
        return make("NO-GO", [c.reason for c in fails], checks, early)
    opens = [c.reason for c in checks if c.outcome == "open"]
    if opens:
        return make("INCONCLUSIVE", opens, checks, False)
    return make("GO", [c.reason for c in checks], checks, False)


def _overall(routes: tuple[RouteVerdict, ...]) -> tuple[Verdict, tuple[str, ...]]:
    nogo = [r for r in routes if r.verdict == "NO-GO"]
    if nogo:
        return "NO-GO", tuple(f"{r.route}: {why}" for r in nogo for why in r.reasons)
    blocking = [
        r for r in routes if r.verdict == "INCONCLUSIVE" and (r.critical or (r.declared and not r.seen))
    ]
    if blocking:
        return "INCONCLUSIVE", tuple(
            f"{r.route} ({'critical' if r.critical else 'declared'}): {r.reasons[0]}" for r in blocking
        )
    go = [r for r in routes if r.verdict == "GO"]
    if not go:
        return "INCONCLUSIVE", (f"no route has reached GO ({len(routes)} routes, none proven)",)
    reasons = [f"{len(go)} of {len(routes)} routes GO"]
    rest = [r.route for r in routes if r.verdict == "INCONCLUSIVE"]
    if rest:
        reasons.append(f"not blocking (not critical): {', '.join(rest)} inconclusive")
    return "GO", tuple(reasons)


def _coverage(routes: tuple[RouteVerdict, ...]) -> Coverage:
    return Coverage(
        declared_seen=tuple(r.route for r in routes if r.declared and r.seen),
        declared_unseen=tuple(r.route for r in routes if r.declared and not r.seen),
        under_min=tuple(r.route for r in routes if r.seen and r.evidence.compared < r.gate.min_samples),
        auto=tuple(r.route for r in routes if not r.declared and r.seen),
    )


def method_notes(d: Decision) -> tuple[str, ...]:
    """The method in plain words, for the report's criteria section."""
    f = d.family
    conf = 1 - f.alpha
    return (
        f"Rates are judged by one-sided Wilson score bounds: GO needs each upper bound at the route's "
        f"confidence (global {conf:.0%}, z = {z_for(conf):.3f}) at or under its limit, and n ≥ min_samples "
        f"for every check. GO is never given early.",
        "p-quantile latency is judged as a rate: 'p95 ≤ 500 ms' means at most 5% of shadow calls slower "
        "than 500 ms, counted exactly at a histogram bucket bound. The latency ratio is the share of "
        f"paired requests whose shadow took more than max_latency_ratio {TIMES} its own primary, against "
        "1 - latency_quantile (an order-statistic interval of the per-pair ratio).",
        f"Repeated looks: a NO-GO needs the score statistic to cross an alpha-spending boundary in "
        f"information time t = n / min_samples (O'Brien{DASH}Fleming shape, alpha/2 spent up to "
        f"min_samples, alpha/2^(e+1) in each later doubling e), so the chance of a false NO-GO stays "
        f"≤ alpha = {f.alpha:.0%} however often this report is run. A NO-GO may come before min_samples "
        f"only on overwhelming evidence.",
        f"Many routes: this report's family is {f.tests} NO-GO tests ({f.routes} routes {TIMES} up to "
        f"{len(CHECKS)} checks), {f.correction}-corrected at alpha = {f.alpha:.0%}. The lower bounds shown "
        f"are at each test's adjusted z; the upper bounds at the configured confidence.",
        "Overall: NO-GO if any route is NO-GO; INCONCLUSIVE if a critical route, or a declared route "
        "with no traffic, is inconclusive, or no route has reached GO; otherwise GO.",
    )
