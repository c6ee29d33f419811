"""Generate the Grafana dashboards (overview.json, route.json) so their panels stay consistent.

    python dashboards/build.py           # rewrite the JSON files
    python dashboards/build.py --check   # exit 1 if a committed file differs from what this builds

Importable into Grafana 10/11 (schemaVersion 39). Every query goes to `${datasource}`;
`$instance` and `$route` filter the raw series. The "rollback triggers" row reads the
recording rules of config/prometheus/rules.yml instead, so it shows exactly what the alerts
evaluate (all instances, 5m windows).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
SCHEMA_VERSION = 39
DS = {"type": "prometheus", "uid": "${datasource}"}
OVERVIEW_UID = "shadowproxy-overview"
ROUTE_UID = "shadowproxy-route"
TAG = "shadowproxy"

# The migration plan's limits.
ERROR_LIMIT = 0.01  # shadow errors, and the mismatch alert
SLOW_SHARE_LIMIT = 0.05  # share of shadow responses over the SLO (p95)
LATENCY_SLO_S = 0.5

Json = dict[str, Any]


def sel(metric: str, *matchers: str, route: bool = True) -> str:
    """`metric{instance=~"$instance",route=~"$route",...}`: every raw query honours the variables."""
    base = ['instance=~"$instance"'] + (['route=~"$route"'] if route else [])
    return f"{metric}{{{','.join([*base, *matchers])}}}"


def rate(metric: str, *matchers: str, route: bool = True) -> str:
    return f"rate({sel(metric, *matchers, route=route)}[$__rate_interval])"


def eq(label: str, value: str) -> str:
    return f'{label}="{value}"'


def sum_by(labels: str, expr: str) -> str:
    return f"sum by ({labels}) ({expr})"


@dataclass(frozen=True)
class Target:
    expr: str
    legend: str = ""
    instant: bool = False
    fmt: str = "time_series"


@dataclass(frozen=True)
class Panel:
    title: str
    targets: tuple[Target, ...]
    unit: str
    kind: str = "timeseries"
    description: str = ""
    limit: float | None = None  # drawn as a red threshold line
    width: int = 8
    height: int = 8
    stacked: bool = False
    extra: Json = field(default_factory=dict)


@dataclass(frozen=True)
class Row:
    title: str
    panels: tuple[Panel, ...]


def _thresholds(limit: float | None) -> Json:
    steps: list[Json] = [{"color": "green", "value": None}]
    if limit is not None:
        steps.append({"color": "red", "value": limit})
    return {"mode": "absolute", "steps": steps}


def _target(t: Target, ref: str) -> Json:
    out: Json = {"datasource": DS, "refId": ref, "expr": t.expr, "legendFormat": t.legend or "__auto"}
    out.update({"format": t.fmt, "instant": t.instant, "range": not t.instant})
    return out


def _panel(p: Panel, pid: int, x: int, y: int) -> Json:
    defaults: Json = {"unit": p.unit, "thresholds": _thresholds(p.limit)}
    defaults["color"] = {"mode": "palette-classic"}
    options: Json = {}
    if p.kind == "timeseries":
        defaults["custom"] = {
            "drawStyle": "line",
            "lineWidth": 1,
            "fillOpacity": 10,
            "showPoints": "never",
            "spanNulls": False,
            "stacking": {"mode": "normal" if p.stacked else "none", "group": "A"},
            "thresholdsStyle": {"mode": "off" if p.limit is None else "line+area"},
        }
        defaults["min"] = 0
        options = {
            "legend": {
                "displayMode": "table",
                "placement": "bottom",
                "showLegend": True,
                "calcs": ["lastNotNull"],
            },
            "tooltip": {"mode": "multi", "sort": "desc"},
        }
    elif p.kind == "heatmap":
        defaults["custom"] = {"scaleDistribution": {"type": "linear"}}
        options = {
            "calculate": False,
            "yAxis": {"unit": p.unit, "axisPlacement": "left"},
            "rowsFrame": {"layout": "le"},
            "color": {"mode": "scheme", "scheme": "Oranges", "steps": 64, "exponent": 0.5},
            "cellGap": 1,
            "tooltip": {"mode": "single", "yHistogram": True},
            "legend": {"show": True},
        }
    panel: Json = {
        "id": pid,
        "type": p.kind,
        "title": p.title,
        "description": p.description,
        "datasource": DS,
        "gridPos": {"x": x, "y": y, "w": p.width, "h": p.height},
        "fieldConfig": {"defaults": defaults, "overrides": []},
        "options": options,
        "targets": [_target(t, chr(ord("A") + i)) for i, t in enumerate(p.targets)],
    }
    _merge(panel, p.extra)
    return panel


def _merge(into: Json, extra: Json) -> None:
    for k, v in extra.items():
        if isinstance(v, dict) and isinstance(into.get(k), dict):
            _merge(into[k], v)
        else:
            into[k] = v


def _layout(rows: tuple[Row, ...]) -> list[Json]:
    panels: list[Json] = []
    pid, y = 1, 0
    for row in rows:
        panels.append(
            {"id": pid, "type": "row", "title": row.title, "collapsed": False, "panels": [],
             "gridPos": {"x": 0, "y": y, "w": 24, "h": 1}}
        )  # fmt: skip
        pid, y, x, row_h = pid + 1, y + 1, 0, 0
        for p in row.panels:
            if x + p.width > 24:
                x, y, row_h = 0, y + row_h, 0
            panels.append(_panel(p, pid, x, y))
            pid, x, row_h = pid + 1, x + p.width, max(row_h, p.height)
        y += row_h
    return panels


def _variables(route_multi: bool) -> list[Json]:
    def query_var(name: str, label: str, query: str, multi: bool) -> Json:
        return {
            "name": name,
            "label": label,
            "type": "query",
            "datasource": DS,
            "query": query,
            "definition": query,
            "refresh": 2,  # on time range change: routes appear as traffic does
            "sort": 1,
            "multi": multi,
            "includeAll": multi,
            "allValue": ".*" if multi else None,
            "current": {},
            "options": [],
            "hide": 0,
            "regex": "",
        }

    return [
        {"name": "datasource", "label": "Data source", "type": "datasource", "query": "prometheus",
         "current": {}, "options": [], "hide": 0, "refresh": 1, "regex": ""},
        query_var("instance", "Instance", "label_values(shadowproxy_build_info, instance)", True),
        query_var("route", "Route", 'label_values(shadowproxy_requests_total{instance=~"$instance"}, route)',
                  route_multi),
    ]  # fmt: skip


def _dashboard(uid: str, title: str, description: str, rows: tuple[Row, ...], route_multi: bool) -> Json:
    return {
        "uid": uid,
        "title": title,
        "description": description,
        "tags": [TAG],
        "schemaVersion": SCHEMA_VERSION,
        "version": 1,
        "editable": True,
        "graphTooltip": 1,
        "timezone": "browser",
        "refresh": "30s",
        "time": {"from": "now-1h", "to": "now"},
        "annotations": {
            "list": [
                {"builtIn": 1, "datasource": {"type": "grafana", "uid": "-- Grafana --"}, "enable": True,
                 "hide": True, "iconColor": "rgba(0, 211, 255, 1)", "name": "Annotations & Alerts",
                 "type": "dashboard"}
            ]
        },
        "links": [
            {"type": "dashboards", "tags": [TAG], "asDropdown": False, "includeVars": True, "keepTime": True,
             "title": "shadowproxy", "icon": "external link", "targetBlank": False}
        ],
        "templating": {"list": _variables(route_multi)},
        "panels": _layout(rows),
    }  # fmt: skip


def _quantile(q: float, *matchers: str) -> str:
    buckets = rate("shadowproxy_upstream_duration_seconds_bucket", 'backend=~"primary|shadow"', *matchers)
    return f"histogram_quantile({q}, sum by (le, route, backend) ({buckets}))"


def _over_slo(by: str) -> str:
    total = sum_by(by, rate("shadowproxy_upstream_duration_seconds_count"))
    fast = sum_by(by, rate("shadowproxy_upstream_duration_seconds_bucket", eq("le", str(LATENCY_SLO_S))))
    return f"({total} - {fast}) / {total}"


def _ratio(num: str, den: str, by: str) -> str:
    """num/den per `by`; `or ... * 0` draws 0 where there is traffic but no numerator series."""
    return f"({sum_by(by, num)} or {sum_by(by, den)} * 0) / {sum_by(by, den)}"


VERDICT_EXTRA: Json = {
    "fieldConfig": {
        "defaults": {
            "color": {"mode": "thresholds"},
            "thresholds": {
                "mode": "absolute",
                "steps": [{"color": "red", "value": None}, {"color": "yellow", "value": 0},
                          {"color": "green", "value": 1}],
            },
            "mappings": [
                {"type": "value", "options": {
                    "1": {"text": "GO", "color": "green", "index": 0},
                    "0": {"text": "INCONCLUSIVE", "color": "yellow", "index": 1},
                    "-1": {"text": "NO-GO", "color": "red", "index": 2},
                }}
            ],
        }
    },
    "options": {
        "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
        "colorMode": "background", "graphMode": "none", "textMode": "value_and_name",
        "orientation": "auto", "justifyMode": "auto",
    },
}  # fmt: skip

DRILL_LINK: Json = {
    "fieldConfig": {
        "defaults": {
            "links": [
                {
                    "title": "Open route ${__field.labels.route}",
                    "url": f"/d/{ROUTE_UID}/shadowproxy-route?var-route=${{__field.labels.route}}"
                    "&${datasource:queryparam}&${instance:queryparam}&${__url_time_range}",
                }
            ]
        }
    }
}


def overview() -> Json:
    route_filter = 'route=~"$route"'
    triggers = Row(
        "Rollback triggers: all instances, 5m windows, as the alerts evaluate them",
        (
            Panel(
                "Mismatch ratio per route",
                (Target(f"route:shadowproxy_mismatch_ratio:rate5m{{{route_filter}}}", "{{route}}"),),
                "percentunit",
                description="Compared pairs that differed. Alert ShadowMismatchRateHigh above 1%.",
                limit=ERROR_LIMIT,
                width=6,
                extra=DRILL_LINK,
            ),
            Panel(
                "Shadow error ratio per route",
                (Target(f"route:shadowproxy_shadow_error_ratio:rate5m{{{route_filter}}}", "{{route}}"),),
                "percentunit",
                description="Shadow 5xx, transport errors and timeouts. Rollback trigger: 1%.",
                limit=ERROR_LIMIT,
                width=6,
                extra=DRILL_LINK,
            ),
            Panel(
                "Shadow responses over 500 ms per route",
                (
                    Target(
                        'route_backend:shadowproxy_upstream_over_slo_ratio:rate5m{backend="shadow",'
                        f"{route_filter}}}",
                        "{{route}}",
                    ),
                ),
                "percentunit",
                description="Exact, from the le=0.5 bucket. p95 <= 500 ms means at most 5% here.",
                limit=SLOW_SHARE_LIMIT,
                width=6,
                extra=DRILL_LINK,
            ),
            Panel(
                "Verdict per route",
                (Target(f"min by (route) ({sel('shadowproxy_verdict')})", "{{route}}", instant=True),),
                "none",
                kind="stat",
                description="Last gate verdict; with several instances the worst one is shown.",
                width=6,
                extra=VERDICT_EXTRA,
            ),
        ),
    )
    latency = Row(
        "Latency, shadow vs primary",
        tuple(
            Panel(
                f"p{int(q * 100)} latency per route",
                (Target(_quantile(q), "{{route}} {{backend}}"),),
                "s",
                description="Interpolated inside a bucket (histogram_quantile): a range, not a point.",
                limit=LATENCY_SLO_S,
            )
            for q in (0.5, 0.95, 0.99)
        ),
    )
    upstream = "shadowproxy_upstream_requests_total"
    loop_lag = rate("shadowproxy_event_loop_lag_seconds_bucket", route=False)
    all_calls = rate(upstream)
    traffic = Row(
        "Traffic and errors",
        (
            Panel(
                "Request rate per route",
                (Target(f"sum by (route) ({rate('shadowproxy_requests_total')})", "{{route}}"),),
                "reqps",
                description="Responses given to clients.",
            ),
            Panel(
                "Error and timeout ratio per backend",
                (
                    Target(
                        _ratio(rate(upstream, 'code=~"5..|error"'), all_calls, "backend"),
                        "{{backend}} errors",
                    ),
                    Target(
                        _ratio(rate(upstream, eq("code", "timeout")), all_calls, "backend"),
                        "{{backend}} timeouts",
                    ),
                ),
                "percentunit",
                description="5xx and transport errors, and timeouts, among each backend's calls.",
                limit=ERROR_LIMIT,
            ),
            Panel(
                "Skipped shadows by reason",
                (Target(f"sum by (reason) ({rate('shadowproxy_shadow_skipped_total')})", "{{reason}}"),),
                "reqps",
                description="Requests not sent to the shadow. `saturated` means the in-flight cap was full or every shadow connection was busy; `compare_busy`, that the comparison worker was behind with large differing answers; `circuit_open`, that the shadow kept failing.",
                stacked=True,
            ),
            Panel(
                "Shadow calls in flight",
                (
                    Target(
                        sum_by("instance", sel("shadowproxy_shadow_in_flight", route=False)), "{{instance}}"
                    ),
                ),
                "short",
            ),
            Panel(
                "Shadow coverage per route",
                (
                    Target(
                        _ratio(
                            rate(upstream, eq("backend", "shadow")),
                            rate("shadowproxy_requests_total"),
                            "route",
                        ),
                        "{{route}}",
                    ),
                ),
                "percentunit",
                description="Share of client requests that were also sent to the shadow.",
            ),
            Panel(
                "Dropped work and failed tasks",
                (
                    Target(
                        sum_by("reason", rate("shadowproxy_shadow_dropped_total", route=False)),
                        "drop {{reason}}",
                    ),
                    Target(
                        f"sum ({rate('shadowproxy_background_task_failures_total', route=False)})",
                        "background task failures",
                    ),
                ),
                "ops",
                description="Anything here means samples and counts are incomplete.",
            ),
            Panel(
                "Event loop lag p99 per process",
                (
                    Target(
                        f"histogram_quantile(0.99, {sum_by('le, instance', loop_lag)})",
                        "{{instance}}",
                    ),
                ),
                "s",
                description=(
                    "How late each proxy process ran a 10 ms timer: time every request in flight "
                    "waited for the proxy itself, not a backend. Its clock counts whole "
                    "milliseconds: below 2 ms is noise."
                ),
            ),
        ),
    )
    return _dashboard(
        OVERVIEW_UID,
        "shadowproxy / overview",
        "Primary (old) vs shadow (new) backend, per route: differences, errors, latency, verdicts.",
        (triggers, latency, traffic),
        route_multi=True,
    )


def route_detail() -> Json:
    fields_metric = "shadowproxy_field_mismatches_total"
    comparisons = "shadowproxy_comparisons_total"
    upstream = "shadowproxy_upstream_requests_total"
    differences = Row(
        "Differences",
        (
            Panel(
                "Mismatch ratio",
                (
                    Target(
                        _ratio(rate(comparisons, eq("result", "mismatch")), rate(comparisons), "route"),
                        "{{route}}",
                    ),
                ),
                "percentunit",
                limit=ERROR_LIMIT,
            ),
            Panel(
                "Mismatches by part",
                (Target(f"sum by (part) ({rate('shadowproxy_mismatches_total')})", "{{part}}"),),
                "reqps",
                stacked=True,
            ),
            Panel(
                "Top differing fields (time range)",
                (
                    Target(
                        f"sort_desc(sum by (field) (increase({sel(fields_metric)}[$__range])))",
                        "{{field}}",
                        instant=True,
                        fmt="table",
                    ),
                ),
                "short",
                kind="table",
                description="Pairs that differed in each field. Array indices are folded to [*]; "
                "fields past the per-route label budget count as `other`.",
                extra={"transformations": [{"id": "organize", "options": {"excludeByName": {"Time": True}}}]},
            ),
            Panel(
                "Field mismatches over time",
                (Target(f"sum by (field) ({rate(fields_metric)})", "{{field}}"),),
                "reqps",
                width=24,
            ),
        ),
    )
    codes = Row(
        "Status codes",
        tuple(
            Panel(
                f"Status codes, {backend}",
                (Target(sum_by("code", rate(upstream, eq("backend", backend))), "{{code}}"),),
                "reqps",
                description="`error` and `timeout` are calls that got no status.",
                stacked=True,
                width=12,
            )
            for backend in ("primary", "shadow")
        ),
    )
    buckets = "shadowproxy_upstream_duration_seconds_bucket"
    heatmaps = tuple(
        Panel(
            f"Latency heatmap, {backend}",
            (
                Target(
                    sum_by("le", f"increase({sel(buckets, eq('backend', backend))}[$__rate_interval])"),
                    "{{le}}",
                    fmt="heatmap",
                ),
            ),
            "s",
            kind="heatmap",
            width=12,
        )
        for backend in ("primary", "shadow")
    )
    latency = Row(
        "Latency",
        (
            *heatmaps,
            Panel(
                "Share of requests over 500 ms",
                (Target(_over_slo("backend"), "{{backend}}"),),
                "percentunit",
                description="Exact from the le=0.5 bucket. The shadow must stay under 5% (p95 <= 500 ms).",
                limit=SLOW_SHARE_LIMIT,
                width=12,
            ),
            Panel(
                "p95 latency, shadow vs primary",
                (Target(_quantile(0.95), "{{backend}}"),),
                "s",
                description="Interpolated inside a bucket: read it as a range.",
                limit=LATENCY_SLO_S,
                width=12,
            ),
        ),
    )
    return _dashboard(
        ROUTE_UID,
        "shadowproxy / route",
        "One route in detail: which fields differ, status codes on both sides, latency distribution.",
        (differences, codes, latency),
        route_multi=False,
    )


DASHBOARDS = {"overview.json": overview, "route.json": route_detail}


def render(name: str) -> str:
    return json.dumps(DASHBOARDS[name](), indent=2) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--check", action="store_true", help="fail if a committed file is stale")
    args = parser.parse_args(argv)
    stale = []
    for name in DASHBOARDS:
        path, text = HERE / name, render(name)
        if args.check:
            if not path.exists() or path.read_text(encoding="utf-8") != text:
                stale.append(name)
        else:
            path.write_text(text, encoding="utf-8")
    if stale:
        print(f"stale dashboards (run python dashboards/build.py): {', '.join(stale)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
