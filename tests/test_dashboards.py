"""The Grafana dashboards: structure, variables, units, thresholds, and every query run for
real against Prometheus scraping a Metrics registry."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp import web
from aiohttp.test_utils import TestServer

from shadowproxy.exchange import Comparison, Exchange, FieldDiff, RequestSnapshot, UpstreamResult
from shadowproxy.metrics import Metrics
from tests.promserver import (
    DASHBOARDS,
    RULES,
    PromServer,
    finite,
    promql_expressions,
    substitute,
    variable_promql,
)
from tests.test_rules import realistic_metrics

DS = {"type": "prometheus", "uid": "${datasource}"}
UIDS = {"overview.json": "shadowproxy-overview", "route.json": "shadowproxy-route"}
UNITS = {"s", "percentunit", "reqps", "short", "none", "ops"}


def load(name: str) -> dict[str, Any]:
    board: dict[str, Any] = json.loads((DASHBOARDS / name).read_text(encoding="utf-8"))
    return board


def panels(board: dict[str, Any]) -> list[dict[str, Any]]:
    return [p for p in board["panels"] if p["type"] != "row"]


def red_steps(panel: dict[str, Any]) -> list[float]:
    steps = panel["fieldConfig"]["defaults"]["thresholds"]["steps"]
    return [s["value"] for s in steps if s["color"] == "red" and s["value"] is not None]


def test_committed_dashboards_are_what_build_py_generates() -> None:
    r = subprocess.run(
        [sys.executable, str(DASHBOARDS / "build.py"), "--check"], capture_output=True, text=True, check=False
    )
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in DASHBOARDS.glob("*.json")) == sorted(UIDS)


@pytest.mark.parametrize("name", sorted(UIDS))
def test_dashboard_identity_and_variables(name: str) -> None:
    board = load(name)
    assert board["uid"] == UIDS[name]
    assert 36 <= board["schemaVersion"] <= 41
    assert "shadowproxy" in board["tags"]
    variables = {v["name"]: v for v in board["templating"]["list"]}
    ds = variables["datasource"]
    assert (ds["type"], ds["query"]) == ("datasource", "prometheus")
    for var, label in (("instance", "instance"), ("route", "route")):
        v = variables[var]
        assert v["type"] == "query"
        assert v["datasource"] == DS
        assert re.fullmatch(rf"label_values\(shadowproxy_\w+(\{{.*\}})?, {label}\)", v["query"]), v["query"]
    assert '$instance"' in variables["route"]["query"]  # routes of the chosen instances only


@pytest.mark.parametrize("name", sorted(UIDS))
def test_every_panel_queries_the_datasource_variable_with_a_unit(name: str) -> None:
    board = load(name)
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))
    cells: set[tuple[int, int]] = set()
    for p in board["panels"]:
        g = p["gridPos"]
        assert g["x"] >= 0 and g["x"] + g["w"] <= 24
        mine = {(x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])}
        assert not cells & mine, f"{p['title']!r} overlaps another panel"
        cells |= mine
    for p in panels(board):
        assert p["datasource"] == DS, p["title"]
        assert p["targets"], p["title"]
        for t in p["targets"]:
            assert t["datasource"] == DS, p["title"]
            assert "shadowproxy" in t["expr"], p["title"]
        assert p["fieldConfig"]["defaults"]["unit"] in UNITS, p["title"]
        if p["type"] == "heatmap":
            assert p["options"]["yAxis"]["unit"] == "s"
            assert p["targets"][0]["format"] == "heatmap"


def test_thresholds_sit_at_the_plan_limits() -> None:
    found = {0.01: 0, 0.05: 0, 0.5: 0}
    for name in UIDS:
        for p in panels(load(name)):
            title, unit, steps = p["title"].lower(), p["fieldConfig"]["defaults"]["unit"], red_steps(p)
            if p["type"] == "timeseries" and unit == "s" and not title.startswith("event loop"):
                assert steps == [0.5], title  # a backend's latency, against the plan's p95 limit
            elif unit == "percentunit" and ("error" in title or "mismatch" in title):
                assert steps == [0.01], title
            elif unit == "percentunit" and "500 ms" in title:
                assert steps == [0.05], title
            for v in steps:
                found[v] = found.get(v, 0) + 1
    assert all(found.values()), found


def test_the_panels_the_issue_asks_for_exist() -> None:
    def exprs(name: str) -> str:
        return "\n".join(t["expr"] for p in panels(load(name)) for t in p["targets"])

    overview, route = exprs("overview.json"), exprs("route.json")
    for needle in (
        "route:shadowproxy_mismatch_ratio:rate5m",
        "histogram_quantile(0.5,",
        "histogram_quantile(0.95,",
        "histogram_quantile(0.99,",
        'code="timeout"',
        "shadowproxy_shadow_skipped_total",
        "shadowproxy_shadow_in_flight",
        "shadowproxy_requests_total",
        "shadowproxy_verdict",
    ):
        assert needle in overview, needle
    for needle in ("shadowproxy_field_mismatches_total", "sum by (code)", 'le="0.5"', "sum by (le)"):
        assert needle in route, needle


def exported_names() -> set[str]:
    body = realistic_metrics().render()[0].decode()
    return {line.split()[2] for line in body.splitlines() if line.startswith("# TYPE")}


def test_every_metric_a_query_names_exists() -> None:
    histograms = {"shadowproxy_upstream_duration_seconds", "shadowproxy_event_loop_lag_seconds"}
    known = exported_names() | {f"{h}_{s}" for h in histograms for s in ("bucket", "count", "sum")}
    recorded = {
        r["record"] for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"] if "record" in r
    }
    for e in promql_expressions({"instance": "i", "route": "r"}):
        for name in re.findall(r"\b(?:[a-z_]+:)?shadowproxy_[a-z_]+(?::[a-z0-9_]+)?", e.promql):
            assert name in known | recorded, f"{e.where}: {name} is neither exported nor recorded"


@pytest.mark.parametrize(
    ("query", "promql"),
    [
        ("label_values(shadowproxy_build_info, instance)", "group by (instance) (shadowproxy_build_info)"),
        ('label_values(up{job="x"}, route)', 'group by (route) (up{job="x"})'),
        ("label_values(route)", 'group by (route) ({route!=""})'),
        ("up", "up"),
    ],
)
def test_variable_queries_become_promql(query: str, promql: str) -> None:
    assert variable_promql(query) == promql


def test_substitute_fills_grafana_variables_and_rejects_unknown_ones() -> None:
    got = substitute(
        'rate(x{route=~"$route",i="${instance}"}[$__rate_interval])', {"route": "a", "instance": "b"}
    )
    assert got == 'rate(x{route=~"a",i="b"}[1m])'
    with pytest.raises(KeyError, match="typo"):
        substitute("x{a=~'$typo'}", {})


# ------------------------------------------------------------------ against a real Prometheus


def record_batch(m: Metrics) -> None:
    """One scrape's worth of known traffic: healthy `pitches`; `user` with a slow, failing,
    differing shadow, so every alert expression has something to say."""
    primary = UpstreamResult("primary", 200, (), b"{}", 0.02)
    shadow = UpstreamResult("shadow", 200, (), b"{}", 0.03)
    differs = Comparison(False, ("body",), (FieldDiff("$.data[0].title", "changed"),))
    for route, n_slow, n_fail, n_diff in (("user", 10, 4, 8), ("pitches", 0, 0, 0)):
        req = RequestSnapshot("GET", "/api", "", (), b"", "rid", route)
        for i in range(100):
            m.request(route, "GET", 200)
            m.upstream("primary", route, "GET", 200, None, 0.02)
            failed = i < n_fail
            slow = n_fail <= i < n_fail + n_slow
            m.upstream("shadow", route, "GET", None if failed else 200, "timeout" if failed else None,
                       0.8 if slow or failed else 0.03)  # fmt: skip
            if not failed:
                m.exchange(
                    Exchange(req, primary, shadow, differs if i >= 100 - n_diff else Comparison.equal())
                )
        m.skipped(route, "sampled_out")
    m.skipped("user", "saturated")
    m.skipped("user", "compare_busy")
    m.skipped("user", "circuit_open")
    m.dropped("store_queue_full")
    m.task_failed(RuntimeError("boom"))
    for tick in range(100):  # 3 of 100 ticks over 25 ms late: the stall alert's share is 3 %
        m.loop_lag(0.03 if tick < 3 else 0.003)


@pytest.mark.prometheus
async def test_every_dashboard_and_rule_expression_returns_data(
    aiohttp_server: Callable[[web.Application], Awaitable[TestServer]],
) -> None:
    metrics = Metrics()
    metrics.shadow_in_flight(2)
    metrics.set_verdicts({"user": -1, "pitches": 1})

    async def scrape(_: web.Request) -> web.Response:
        record_batch(metrics)
        body, content_type = metrics.render()
        return web.Response(body=body, headers={"Content-Type": content_type})

    app = web.Application()
    app.router.add_get("/metrics", scrape)
    server = await aiohttp_server(app)
    instance = f"127.0.0.1:{server.port}"

    async with PromServer.run([instance]) as prom:
        # The last recording rule in the chain has data once two scrapes and an evaluation ran.
        await prom.wait_for('route:shadowproxy_mismatch_ratio:rate5m{route="user"}', finite)
        rules = await prom.rules()
        assert rules and all(r["health"] == "ok" for r in rules), [r for r in rules if r["health"] != "ok"]

        exprs = promql_expressions({"instance": instance, "route": "user"})
        assert {e.kind for e in exprs} == {"panel", "variable", "record", "alert"}
        for e in exprs:
            result = await prom.wait_for(e.promql, finite, timeout_s=10)
            assert result, e.where

        # The numbers themselves, as the rules see them (per scrape: 4 of 100 shadow calls
        # failed, 14 of 100 took over 0.5 s, 8 of 96 compared pairs differed).
        (err,) = await prom.query('route:shadowproxy_shadow_error_ratio:rate5m{route="user"}')
        assert err.value == pytest.approx(0.04)
        (slow,) = await prom.query(
            'route_backend:shadowproxy_upstream_over_slo_ratio:rate5m{route="user",backend="shadow"}'
        )
        assert slow.value == pytest.approx(0.14)
        (diff,) = await prom.query('route:shadowproxy_mismatch_ratio:rate5m{route="user"}')
        assert diff.value == pytest.approx(8 / 96)
        (healthy,) = await prom.query('route:shadowproxy_shadow_error_ratio:rate5m{route="pitches"}')
        assert healthy.value == 0


def test_promql_expressions_finds_every_target_and_rule() -> None:
    exprs = promql_expressions({"instance": "i", "route": "r"})
    n_targets = sum(len(p["targets"]) for name in UIDS for p in panels(load(name)))
    n_rules = sum(len(g["rules"]) for g in yaml.safe_load(Path(RULES).read_text())["groups"])
    assert len([e for e in exprs if e.kind == "panel"]) == n_targets
    assert len([e for e in exprs if e.kind in ("record", "alert")]) == n_rules
    assert not any("$" in e.promql for e in exprs)
