"""What a report shows, computed once from the decision; md, html and json only lay it out.

Pure and deterministic: no clock, no environment, so the same evidence renders the same bytes.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from shadowproxy.config import Config, Gate
from shadowproxy.evidence import Evidence, FieldCount, Histogram, Sample, SuggestedIgnore
from shadowproxy.exchange import FieldDiff
from shadowproxy.gate import (
    DASH,
    TIMES,
    Check,
    CheckName,
    Decision,
    RouteVerdict,
    bucket_range,
    method_notes,
    pct,
    quantile_name,
    ratio,
    seconds,
)

QUANTILES = (0.5, 0.95, 0.99)
MAX_EXAMPLES = 3
MAX_FIELDS = 10
_VALUE_CHARS = 160


@dataclass(frozen=True, slots=True)
class LatencyRow:
    quantile: str  # "p95"
    primary: str  # a bucket range, like "20-30 ms"
    shadow: str
    expected: str  # the plan's target, "≤ 25 ms", or ""
    expected_met: str  # "met", "missed", "unclear", or ""


@dataclass(frozen=True, slots=True)
class RouteView:
    v: RouteVerdict
    latency: tuple[LatencyRow, ...]
    fields: tuple[FieldCount, ...]
    skipped: tuple[tuple[str, int], ...]  # by count, largest first
    lost: tuple[tuple[str, int], ...]  # shadow calls never recorded, by count
    examples: tuple[Sample, ...]

    @property
    def name(self) -> str:
        return self.v.route


@dataclass(frozen=True, slots=True)
class ReportView:
    decision: Decision
    headline: str
    source: str
    window: str
    config_source: str
    digest: str
    gate: Gate  # the global criteria
    criteria: tuple[tuple[str, str], ...]  # (criterion, global value as text)
    overrides: tuple[tuple[str, str], ...]  # (route, what differs from the global gate)
    notes: tuple[str, ...]
    routes: tuple[RouteView, ...]
    suggestions: tuple[SuggestedIgnore, ...]
    suggestions_yaml: str


def build(cfg: Config, evidence: Evidence, decision: Decision) -> ReportView:
    return ReportView(
        decision=decision,
        headline=headline(decision),
        source=evidence.source,
        window=evidence.window,
        config_source=cfg.source or "(not from a file)",
        digest=cfg.digest or "-",
        gate=cfg.gate,
        criteria=criteria(cfg.gate),
        overrides=tuple(
            (r.route, d) for r in decision.routes if (d := _gate_diff(cfg.gate, r.gate, r.declared))
        ),
        notes=method_notes(decision),
        routes=tuple(_route(cfg, evidence, r) for r in decision.routes),
        suggestions=evidence.suggestions,
        suggestions_yaml=suggestions_yaml(cfg, evidence.suggestions),
    )


def headline(d: Decision) -> str:
    n = len(d.routes)
    if d.verdict == "NO-GO":
        bad = [r.route for r in d.routes if r.verdict == "NO-GO"]
        return f"NO-GO: {len(bad)} of {n} routes fail their criteria ({', '.join(bad)})"
    if d.verdict == "INCONCLUSIVE":
        return f"INCONCLUSIVE: {d.reasons[0]}" if d.reasons else "INCONCLUSIVE"
    return f"GO: {d.reasons[0]}" if d.reasons else "GO"


def criteria(g: Gate) -> tuple[tuple[str, str], ...]:
    q = quantile_name(g.latency_quantile)
    return (
        ("min_samples", f"{g.min_samples:,} per check before a GO"),
        ("max_mismatch_rate", pct(g.max_mismatch_rate)),
        ("max_shadow_error_rate", f"{pct(g.max_shadow_error_rate)} (5xx, transport errors, timeouts)"),
        ("latency SLO", f"shadow {q} ≤ {seconds(g.latency_slo_s)}"),
        ("max_latency_ratio", f"shadow/primary {q} ≤ {g.max_latency_ratio:g}{TIMES} (paired requests)"),
        ("confidence", f"{g.confidence:.0%} one-sided"),
    )


def _gate_diff(base: Gate, g: Gate, declared: bool) -> str:
    keys = [
        ("min_samples", f"{g.min_samples:,}"),
        ("max_mismatch_rate", pct(g.max_mismatch_rate)),
        ("max_shadow_error_rate", pct(g.max_shadow_error_rate)),
        ("latency_slo_s", seconds(g.latency_slo_s)),
        ("latency_quantile", quantile_name(g.latency_quantile)),
        ("max_latency_ratio", f"{g.max_latency_ratio:g}{TIMES}"),
        ("confidence", f"{g.confidence:.0%}"),
    ]
    diffs = [f"{k} {text}" for k, text in keys if getattr(g, k) != getattr(base, k)]
    if g.critical and not base.critical:
        diffs.insert(0, "critical")
    return ", ".join(diffs) if declared else ""


def _route(cfg: Config, evidence: Evidence, r: RouteVerdict) -> RouteView:
    ev = r.evidence
    route = cfg.route(r.route)
    expected = route.expected if route is not None else None
    targets = {0.5: expected.p50_s, 0.95: expected.p95_s} if expected is not None else {}
    rows = tuple(_latency_row(q, ev.primary_latency, ev.shadow_latency, targets.get(q)) for q in QUANTILES)
    skipped = _by_count(ev.skipped)
    mismatch = r.check("mismatch")
    failing = r.verdict == "NO-GO" or (mismatch is not None and mismatch.outcome != "pass" and mismatch.k > 0)
    examples = evidence.samples.get(r.route, ())[:MAX_EXAMPLES] if failing else ()
    return RouteView(r, rows, ev.fields[:MAX_FIELDS], skipped, _by_count(ev.lost), examples)


def _by_count(counts: dict[str, int]) -> tuple[tuple[str, int], ...]:
    return tuple(sorted(((k, v) for k, v in counts.items() if v > 0), key=lambda kv: (-kv[1], kv[0])))


def _latency_row(q: float, primary: Histogram, shadow: Histogram, target: float | None) -> LatencyRow:
    sr = shadow.quantile_range(q)
    met = ""
    if target is not None and sr is not None:
        met = "met" if sr[1] <= target else "missed" if sr[0] >= target else "unclear"
    return LatencyRow(
        quantile=quantile_name(q),
        primary=bucket_range(primary.quantile_range(q)),
        shadow=bucket_range(sr),
        expected=f"≤ {seconds(target)}" if target is not None else "",
        expected_met=met,
    )


# --------------------------------------------------------------------------- cells


def interval(c: Check) -> str:
    """The estimate and its decision interval, for a rate or for the ratio."""
    if c.name == "latency_ratio":
        if c.estimate is None:
            return f"[{ratio(c.low)}{DASH}{ratio(c.high)}]" if c.low is not None else DASH
        return f"{ratio(c.estimate)} [{ratio(c.low)}{DASH}{ratio(c.high)}]"
    if c.n == 0 or c.estimate is None:
        return DASH
    lo = pct(c.low) if c.low is not None else DASH
    hi = pct(c.high) if c.high is not None else DASH
    return f"{pct(c.estimate)} [{lo}{DASH}{hi}]"


def limit(c: Check) -> str:
    return f"{c.limit:g}{TIMES}" if c.name == "latency_ratio" else pct(c.limit)


def check_title(c: CheckName, g: Gate) -> str:
    q = quantile_name(g.latency_quantile)
    return {
        "mismatch": "mismatch rate",
        "shadow_error": "shadow error rate",
        "latency_slo": f"slower than {seconds(g.latency_slo_s)}",
        "latency_ratio": f"{q} shadow/primary",
    }[c]


def traffic(r: RouteVerdict) -> str:
    ev = r.evidence
    parts = ", ".join(f"{p} {n:,}" for p, n in sorted(ev.mismatches_by_part.items()) if n > 0)
    text = (
        f"{ev.requests:,} requests, {ev.shadowed:,} shadowed, {ev.compared:,} compared, "
        f"{ev.mismatches:,} mismatches{f' ({parts})' if parts else ''}, "
        f"{ev.shadow_errors:,} shadow errors (of which timeouts: {ev.shadow_timeouts:,})"
    )
    if ev.hashed_only:
        text += f", {ev.hashed_only:,} compared by hash only (bodies over the diff limit)"
    return text


def value(v: Any) -> str:
    """A field's value as one readable, bounded line of JSON."""
    text = " ".join(json.dumps(v, ensure_ascii=False, default=str).split())
    return text if len(text) <= _VALUE_CHARS else text[: _VALUE_CHARS - 1] + "…"


def diff_lines(fields: Iterable[FieldDiff]) -> list[str]:
    """One line per differing field: path, kind, primary → shadow, aligned."""
    rows = []
    for f in fields:
        # `missing`: the shadow lacks the field; `extra`: only the shadow has it.
        before = "(absent)" if f.kind == "extra" else value(f.primary)
        after = "(absent)" if f.kind == "missing" else value(f.shadow)
        rows.append((f.path, f.kind, f"{before} → {after}"))
    if not rows:
        return []
    w_path = min(48, max(len(p) for p, _, _ in rows))
    w_kind = max(len(k) for _, k, _ in rows)
    return [f"{p:<{w_path}}  {k:<{w_kind}}  {change}" for p, k, change in rows]


def request_line(s: Sample) -> str:
    return f"{s.method} {s.path}{'?' + s.query if s.query else ''}"


def statuses(s: Sample) -> str:
    def one(x: int | None) -> str:
        return "no answer" if x is None else str(x)

    primary = f"primary {one(s.primary_status)} in {seconds(s.primary_latency_s)}"
    return f"{primary}, shadow {one(s.shadow_status)} in {seconds(s.shadow_latency_s)}"


# --------------------------------------------------------------------------- suggestions


def suggestions_yaml(cfg: Config, suggestions: tuple[SuggestedIgnore, ...]) -> str:
    """Learned noise as config the user can paste: per declared route, else global."""
    if not suggestions:
        return ""
    declared = {r.name for r in cfg.routes}
    per_route: dict[str, list[SuggestedIgnore]] = {}
    global_: list[SuggestedIgnore] = []
    for s in suggestions:
        (per_route.setdefault(s.route, []) if s.route in declared else global_).append(s)
    lines = [
        "# Learned noise: review each rule, then add it to your config. Nothing is ignored until you do."
    ]
    if per_route:
        lines.append("# Under each route of `routes:` (merge into the existing entry):")
        lines.append("routes:")
        for name in [r.name for r in cfg.routes if r.name in per_route]:
            lines += [f"  - name: {json.dumps(name)}", "    compare:", "      ignore:"]
            lines += [f"        - {_rule(s)}" for s in per_route[name]]
    if global_:
        lines.append("# Global (automatic routes have no entry of their own):")
        lines += ["compare:", "  ignore:"]
        lines += [f"    - {_rule(s, with_route=True)}" for s in global_]
    return "\n".join(lines) + "\n"


def _rule(s: SuggestedIgnore, with_route: bool = False) -> str:
    where = f"route {s.route}: " if with_route else ""
    why = " ".join(s.why.split())
    # A JSON string is a valid YAML double-quoted scalar, so odd paths stay safe to paste.
    counts = f"old vs new differ in {s.raw:,}, old vs old in {s.noise:,} of {s.total:,}"
    return f"{json.dumps(s.path)}  # {where}{counts}; {why}"
