"""The whole chain against a real Prometheus: proxy -> /metrics -> scrape -> every dashboard
and rule expression; and `report --prometheus` agreeing with `report --store`."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import subprocess
import sys
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from shadowproxy import config
from shadowproxy.promsource import evidence_from_prometheus
from shadowproxy.report import render
from tests.conftest import make_config
from tests.promserver import PROMTOOL, PromServer, finite, promql_expressions

pytestmark = pytest.mark.prometheus

DOC = {"id": 7, "title": "Night Train", "budget": 1200000, "tags": ["drama"]}
ROUTES = (
    config.Route(name="good", match="/good/**"),
    config.Route(name="diff", match="/diff/**"),
    config.Route(name="slow", match="/slow/**"),
    config.Route(name="fail", match="/fail/**"),
)
# Decisive on 40 pairs a route: limits at 10%, and a ratio limit wide enough that the
# Prometheus source (buckets, no pairs) can prove it for two equally fast backends.
GATE = config.Gate(
    min_samples=30, max_mismatch_rate=0.1, max_shadow_error_rate=0.1, max_latency_ratio=10.0, confidence=0.95
)


async def primary_handler(request: web.Request, up) -> web.Response:
    # A few ms of the backend's own latency keeps its p95 out of the first bucket (0-1 ms),
    # where a bucket ratio has no lower bound and so can never be proven.
    await asyncio.sleep(0.003)
    return web.json_response(DOC)


PER_ROUTE = 120
IN_FLIGHT = 100  # the slow route's burst fills it: the last 20 are skipped as saturated
ALL = ("good", "diff", "slow", "fail")


class Shadow:
    """The Workers stand-in: equal on /good, a changed field on /diff, 500 on /fail, and on
    /slow 0.55 s (its own latency), held first while `release` is clear."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.release.set()

    async def __call__(self, request: web.Request, up: Any) -> web.Response:
        path = request.path
        if path.startswith("/diff"):
            return web.json_response({**DOC, "budget": "1200000"})
        if path.startswith("/slow"):
            await self.release.wait()
            await asyncio.sleep(0.55)
        if path.startswith("/fail"):
            return web.json_response({"error": "boom"}, status=500)
        await asyncio.sleep(0.003)
        return web.json_response(DOC)


async def send(proxy_url: str, routes: tuple[str, ...], n: int, writes: int = 0) -> None:
    async with aiohttp.ClientSession() as s:
        for route in routes:
            for i in range(writes):  # never shadowed: skipped as unsafe_method
                async with s.post(f"{proxy_url}/{route}/{i}", data=b"{}") as resp:
                    assert resp.status == 200
            for i in range(n):
                async with s.get(f"{proxy_url}/{route}/{i}") as resp:
                    assert resp.status == 200
                    assert await resp.json() == DOC


async def test_every_query_returns_data_and_both_report_sources_agree(make_upstream, sidecar, tmp_path):
    primary = await make_upstream(primary_handler)
    shadow = Shadow()
    shadow_up = await make_upstream(shadow)
    cfg = make_config(primary.url, shadow_up.url, tmp_path, routes=ROUTES, gate=GATE)
    cfg = dataclasses.replace(cfg, shadowing=dataclasses.replace(cfg.shadowing, max_in_flight=IN_FLIGHT))
    r = await sidecar(cfg)
    instance = r.admin_url.removeprefix("http://")

    async with PromServer.run([instance]) as prom:
        # One request per route first, and a scrape of it: a series Prometheus first sees at
        # a value above zero hides that value from increase(). The store counts these too.
        await send(r.proxy_url, ALL, 1, writes=1)
        await r.sidecar.settle(10.0)
        await prom.wait_for("sum(shadowproxy_comparisons_total)", lambda res: bool(res) and res[0].value >= 4)
        await send(r.proxy_url, ("good", "diff", "fail"), PER_ROUTE)
        shadow.release.clear()
        await send(r.proxy_url, ("slow",), PER_ROUTE)
        shadow.release.set()
        await r.sidecar.settle(10.0)
        shadowed = 3 * (PER_ROUTE + 1) + 1 + IN_FLIGHT
        await prom.wait_for(
            "sum(shadowproxy_upstream_requests_total{backend='shadow'})",
            lambda res: bool(res) and res[0].value == shadowed,
            timeout_s=20,
        )
        await prom.wait_for('route:shadowproxy_mismatch_ratio:rate5m{route="diff"}', finite, timeout_s=20)

        # Every expression the dashboards and rules contain parses and returns data; the
        # alerts for drops, task failures, an open breaker and a comparison worker behind parse
        # and, rightly, find nothing.
        exprs = promql_expressions({"instance": instance, "route": "diff"})
        assert {e.kind for e in exprs} == {"panel", "variable", "record", "alert"}
        quiet = (
            "ShadowWorkDropped",
            "ShadowproxyBackgroundTaskFailures",
            "ShadowCircuitOpen",
            "ShadowComparisonBehind",
        )
        for e in exprs:
            if e.kind == "alert" and e.where.endswith(quiet):
                assert await prom.query(e.promql) == [], e.where
                continue
            if e.kind == "alert" and e.where.endswith("ShadowproxyEventLoopStalled"):
                # How late this loop ran depends on the test machine: the share of late ticks
                # must have data; promtool's unit test checks the threshold.
                share = e.promql.replace(") > 0.01", ") >= 0")
                assert share != e.promql
                assert await prom.wait_for(share, finite, timeout_s=10), e.where
                continue
            assert await prom.wait_for(e.promql, finite, timeout_s=10), e.where
        expected = {
            "ShadowErrorRateHigh",
            "ShadowLatencyOverSLO",
            "ShadowMismatchRateHigh",
            "ShadowSaturated",
        }
        await prom.wait_for("ALERTS", lambda res: expected <= {s.labels.get("alertname") for s in res})

        # The counters and the 0.5 s bucket are exact.
        (good,) = await prom.query('sum(shadowproxy_requests_total{route="good"})')
        assert good.value == PER_ROUTE + 2
        (count,) = await prom.query(
            'shadowproxy_upstream_duration_seconds_count{route="slow",backend="shadow"}'
        )
        (fast,) = await prom.query(
            'shadowproxy_upstream_duration_seconds_bucket{route="slow",backend="shadow",le="0.5"}'
        )
        assert (count.value, fast.value) == (1 + IN_FLIGHT, 0)
        (saturated,) = await prom.query('shadowproxy_shadow_skipped_total{route="slow",reason="saturated"}')
        assert saturated.value == PER_ROUTE - IN_FLIGHT

        # The same verdicts from every instance's counters as from this instance's store.
        from_prom = await asyncio.to_thread(evidence_from_prometheus, prom.url, "5m", cfg)
    await asyncio.to_thread(r.sidecar.store.flush)
    from_store = await asyncio.to_thread(r.sidecar.store.evidence, [x.name for x in ROUTES], cfg.noise)
    verdicts = {}
    for name, evidence in (("prometheus", from_prom), ("store", from_store)):
        text, overall = render(cfg, evidence, "json")
        doc = json.loads(text)
        verdicts[name] = (overall, {x["route"]: x["verdict"] for x in doc["routes"]})
    assert verdicts["store"] == (
        "NO-GO",
        {"good": "GO", "diff": "NO-GO", "slow": "NO-GO", "fail": "NO-GO"},
    )
    assert verdicts["prometheus"] == verdicts["store"]


async def test_promtool_finds_no_problem_in_the_scraped_metrics(make_upstream, sidecar, tmp_path):
    primary = await make_upstream(primary_handler)
    shadow = await make_upstream(Shadow())
    r = await sidecar(make_config(primary.url, shadow.url, tmp_path, routes=ROUTES))
    await send(r.proxy_url, ("good", "diff", "fail"), 3)
    await r.sidecar.settle(10.0)
    async with aiohttp.ClientSession() as s, s.get(r.admin_url + "/metrics") as resp:
        text = await resp.read()
    assert b"shadowproxy_field_mismatches_total" in text
    out = await asyncio.to_thread(
        subprocess.run, [PROMTOOL, "check", "metrics"], input=text, capture_output=True, check=False
    )
    assert out.returncode == 0 and out.stdout + out.stderr == b"", (out.stdout, out.stderr)


def test_the_report_command_exits_2_when_prometheus_is_unreachable(tmp_path, unused_tcp_port):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("primary: {url: 'http://127.0.0.1:1'}\nshadow: {url: 'http://127.0.0.1:2'}\n")
    out = subprocess.run(
        [sys.executable, "-m", "shadowproxy", "report", "-c", str(cfg), "--prometheus",
         f"http://127.0.0.1:{unused_tcp_port}"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "shadowproxy report:" in out.stderr
