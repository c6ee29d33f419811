"""`shadowproxy report`: judge the evidence, render it (md, json, html), return the exit code.

The CLI loads the config and the evidence (store or Prometheus) and calls `run_report`.
Output is deterministic for the same evidence: no clock is read here.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

from shadowproxy import report_html, report_md, report_view
from shadowproxy.config import Config, Gate
from shadowproxy.evidence import Evidence, Histogram
from shadowproxy.gate import Check, Verdict, evaluate
from shadowproxy.report_view import QUANTILES, ReportView, RouteView

EXIT_CODES: dict[Verdict, int] = {"GO": 0, "NO-GO": 1, "INCONCLUSIVE": 3}
EXIT_USAGE = 2
FORMATS = ("md", "json", "html")


def render(cfg: Config, evidence: Evidence, fmt: str) -> tuple[str, Verdict]:
    """The report text in `fmt` and the overall verdict."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown report format {fmt!r} (one of {', '.join(FORMATS)})")
    view = report_view.build(cfg, evidence, evaluate(cfg, evidence))
    if fmt == "md":
        text = report_md.render(view)
    elif fmt == "html":
        text = report_html.render(view)
    else:
        text = json.dumps(to_json(view), indent=2, ensure_ascii=False, allow_nan=False) + "\n"
    return text, view.decision.verdict


def run_report(cfg: Config, evidence: Evidence, fmt: str, out: str | None) -> int:
    """Render, write to `out` (or print), and return the exit code: 0 GO, 1 NO-GO, 3 INCONCLUSIVE,
    2 for a format or output path that cannot be used."""
    try:
        text, verdict = render(cfg, evidence, fmt)
    except ValueError as e:
        print(f"shadowproxy report: {e}", file=sys.stderr)
        return EXIT_USAGE
    if out is None:
        sys.stdout.write(text)
        sys.stdout.flush()
    else:
        try:
            Path(out).write_text(text, encoding="utf-8")
        except OSError as e:
            print(f"shadowproxy report: cannot write {out}: {e.strerror or e}", file=sys.stderr)
            return EXIT_USAGE
    return EXIT_CODES[verdict]


# --------------------------------------------------------------------------- json


def to_json(view: ReportView) -> dict[str, Any]:
    d = view.decision
    return {
        "verdict": d.verdict,
        "exit_code": EXIT_CODES[d.verdict],
        "headline": view.headline,
        "reasons": list(d.reasons),
        "source": view.source,
        "window": view.window,
        "config": {"source": view.config_source, "digest": view.digest},
        "criteria": {
            "global": _gate(view.gate),
            "global_text": dict(view.criteria),
            "overrides": dict(view.overrides),
            "one_sided": True,
            "family": {
                "tests": d.family.tests,
                "routes": d.family.routes,
                "alpha": d.family.alpha,
                "correction": d.family.correction,
            },
            "method": list(view.notes),
        },
        "coverage": {
            "declared_seen": list(d.coverage.declared_seen),
            "declared_unseen": list(d.coverage.declared_unseen),
            "under_min_samples": list(d.coverage.under_min),
            "automatic": list(d.coverage.auto),
        },
        "routes": [_route(r) for r in view.routes],
        "suggestions": [
            {"route": s.route, "path": s.path, "raw": s.raw, "noise": s.noise, "total": s.total, "why": s.why}
            for s in view.suggestions
        ],
        "suggestions_yaml": view.suggestions_yaml,
    }


def _route(r: RouteView) -> dict[str, Any]:
    v, ev = r.v, r.v.evidence
    return {
        "route": v.route,
        "verdict": v.verdict,
        "early": v.early,
        "declared": v.declared,
        "critical": v.critical,
        "reasons": list(v.reasons),
        "gate": _gate(v.gate),
        "counts": {
            "requests": ev.requests,
            "shadowed": ev.shadowed,
            "compared": ev.compared,
            "mismatches": ev.mismatches,
            "shadow_errors": ev.shadow_errors,
            "shadow_timeouts": ev.shadow_timeouts,
            "hashed_only": ev.hashed_only,
            "mismatches_by_part": dict(sorted(ev.mismatches_by_part.items())),
            "skipped": dict(r.skipped),
            "lost": dict(r.lost),
        },
        "checks": [_check(c) for c in v.checks],
        "latency": {
            "primary": _quantiles(ev.primary_latency),
            "shadow": _quantiles(ev.shadow_latency),
            "expected": [
                {"quantile": x.quantile, "target": x.expected, "met": x.expected_met}
                for x in r.latency
                if x.expected
            ],
            "pairs": len(ev.latency_pairs),
        },
        "fields": [{"path": f.path, "raw": f.raw, "noise": f.noise} for f in r.fields],
        "examples": [s.to_json() for s in r.examples],
    }


def _gate(g: Gate) -> dict[str, Any]:
    return {
        "min_samples": g.min_samples,
        "max_mismatch_rate": g.max_mismatch_rate,
        "max_shadow_error_rate": g.max_shadow_error_rate,
        "latency_slo_s": g.latency_slo_s,
        "latency_quantile": g.latency_quantile,
        "max_latency_ratio": g.max_latency_ratio,
        "confidence": g.confidence,
        "critical": g.critical,
    }


def _check(c: Check) -> dict[str, Any]:
    return {
        "name": c.name,
        "outcome": c.outcome,
        "k": c.k,
        "n": c.n,
        "estimate": _num(c.estimate),
        "low": _num(c.low),
        "high": _num(c.high),
        "limit": c.limit,
        "z_go": _num(c.z_go),
        "z_nogo": _num(c.z_nogo),
        "p_value": _num(c.p_value),
        "reason": c.reason,
    }


def _quantiles(h: Histogram) -> dict[str, Any]:
    out: dict[str, Any] = {"count": h.total}
    for q in QUANTILES:
        rng = h.quantile_range(q)
        out[f"p{q * 100:g}"] = None if rng is None else [rng[0], _num(rng[1])]
    return out


def _num(x: float | None) -> float | None:
    """JSON has no infinity: an unbounded value is null."""
    return None if x is None or math.isinf(x) or math.isnan(x) else x
