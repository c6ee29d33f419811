"""Demo traffic against real backends on loopback, and the demo/staging configs it goes with."""

from __future__ import annotations

import socket
from collections import Counter
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.typedefs import Handler
from pytest_aiohttp import AiohttpServer

from shadowproxy import config, routes
from shadowproxy.demo import data, drive, make_app
from shadowproxy.demo.traffic import MIX, plan, portal_of, split

ROOT = Path(__file__).resolve().parent.parent
DEMO_ENV = {"DEMO_PRIMARY_URL": "http://127.0.0.1:18001", "DEMO_SHADOW_URL": "http://127.0.0.1:18002"}
GATED = ("auth_login", "auth_me", "user", "pitch_list", "pitch_detail", "notifications")


# --------------------------------------------------------------------------- the plan (pure)


@pytest.mark.parametrize("total", [0, 1, 2, 7, 99, 100, 3000, 3001])
def test_split_is_exact_and_always_signs_in(total: int) -> None:
    counts = split(total)
    assert set(counts) == {label for label, _ in MIX}
    assert sum(counts.values()) == total
    assert all(n >= 0 for n in counts.values())
    assert counts["auth_login"] >= min(total, 1)


def test_a_demo_sized_run_gives_every_gated_route_enough_samples() -> None:
    counts = split(3000)
    # 268 compared pairs with zero mismatches is the least that can pass a 1% limit.
    assert all(counts[r] >= 300 for r in GATED)
    reads = sum(counts[r] for r in ("auth_me", "user", "pitch_list", "pitch_detail", "notifications"))
    assert reads > 0.7 * 3000


@pytest.mark.parametrize(("total", "concurrency"), [(1, 16), (5, 16), (300, 8), (3000, 16), (50, 1)])
def test_plan_signs_in_first_and_only_creators_create(total: int, concurrency: int) -> None:
    plans = plan(total, concurrency, seed=7)
    assert 1 <= len(plans) <= concurrency
    assert all(ops[0] == "auth_login" for ops in plans)
    for i, ops in enumerate(plans):
        if portal_of(i) != "creator":
            assert "pitch_create" not in ops
    assert Counter(op for ops in plans for op in ops) == Counter({k: v for k, v in split(total).items() if v})
    assert plan(total, concurrency, seed=7) == plans


# --------------------------------------------------------------------------- drive() on real servers


def recording(seen: list[str]) -> web.Application:
    """A real Deno backend that also notes each path it served."""
    app = make_app("deno", latency_scale=0)

    @web.middleware
    async def note(request: web.Request, handler: Handler) -> web.StreamResponse:
        seen.append(f"{request.method} {request.path_qs}")
        return await handler(request)

    app.middlewares.insert(0, note)
    return app


async def test_drive_sends_the_planned_mix(aiohttp_server: AiohttpServer) -> None:
    seen: list[str] = []
    server = await aiohttp_server(recording(seen))
    ticks: list[tuple[int, int]] = []
    summary = await drive(
        str(server.make_url("/")),
        400,
        concurrency=8,
        ws_sessions=2,
        progress=lambda done, total: ticks.append((done, total)),
    )
    assert summary.errors == 0, summary.error_examples
    assert summary.requests == 400
    for label, n in split(400).items():
        assert summary.count(label) == n, label
    want = split(400)
    answered = {"auth_login": 200, "auth_me": 200, "notifications": 200, "pitch_create": 201}
    answered |= {"stripe_webhook": 200, "user": 200, "pitch_list": 200}
    for label, status in answered.items():
        assert summary.count(label, status) == want[label], label
    # A few detail ids are past the end on purpose.
    assert summary.count("pitch_detail", 200) + summary.count("pitch_detail", 404) == want["pitch_detail"]
    assert summary.count("ws", 101) == 2 and summary.ws_sessions == 2
    assert summary.ws_events == 6  # three notification events per session
    assert ticks[-1] == (400, 400) and len(ticks) == 400
    assert len(seen) == 402  # every request, plus two WebSocket handshakes
    assert "requests" in summary.render()


async def test_drive_against_workers_sees_its_planted_failures(aiohttp_server: AiohttpServer) -> None:
    server = await aiohttp_server(make_app("workers", latency_scale=0))
    summary = await drive(str(server.make_url("/")), 1200, concurrency=16, ws_sessions=0)
    assert summary.errors == 0
    failed = summary.count("notifications", 503)
    assert 0 < failed < 0.1 * summary.count("notifications")
    assert summary.count(status=503) == failed  # no other route sheds load


async def test_drive_counts_errors_when_nothing_listens() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # The port is closed again: every connection is refused.
    summary = await drive(f"http://127.0.0.1:{port}", 20, concurrency=4, ws_sessions=1)
    assert summary.requests == 20
    assert summary.errors == 21  # 20 requests and the session that never got a token
    assert summary.counts == ()
    assert summary.ws_sessions == 0
    assert all("ClientConnectorError" in e or e.startswith("ws:") for e in summary.error_examples)


@pytest.mark.parametrize(
    "url", ["http://example.com", "http://10.0.0.1:8080", "http://127.0.0.1:8080/api", "ftp://127.0.0.1"]
)
async def test_drive_only_goes_to_loopback(url: str) -> None:
    with pytest.raises(ValueError, match="loopback"):
        await drive(url, 1)


# --------------------------------------------------------------------------- the configs


def test_demo_config_loads_and_routes_every_traffic_path(tmp_path: Path) -> None:
    cfg = config.load(ROOT / "config/demo.yaml", env={**DEMO_ENV, "DEMO_STORE": str(tmp_path / "d.db")})
    assert cfg.primary.url == DEMO_ENV["DEMO_PRIMARY_URL"] and cfg.shadow.url == DEMO_ENV["DEMO_SHADOW_URL"]
    assert cfg.listen.port == 0 and cfg.admin.port == 0
    assert cfg.store.path == str(tmp_path / "d.db")
    names = {r.name for r in cfg.routes}
    assert names == {*GATED, "pitch_create", "stripe_webhook", "ws"}
    assert cfg.gate_for("auth_login").critical and cfg.gate_for("auth_me").critical
    assert not cfg.gate_for("user").critical
    # Writes stay unshadowed: only login is opted in to POST.
    assert "POST" not in cfg.shadowing.methods
    assert [r.name for r in cfg.routes if r.shadow.methods and "POST" in r.shadow.methods] == ["auth_login"]
    assert not cfg.route("stripe_webhook").shadow.enabled and not cfg.route("ws").shadow.enabled  # type: ignore[union-attr]
    assert cfg.rules_for("notifications").unordered == (config.Unordered(path="$.data", key="id"),)
    assert "$.data.token" in cfg.rules_for("auth_login").ignore
    assert {"$.meta.generated_at", "$.meta.served_by"} <= set(cfg.rules_for("user").ignore)
    assert cfg.gate.min_samples == 200 and cfg.gate.max_mismatch_rate == 0.01


async def test_demo_traffic_lands_on_the_demo_routes(aiohttp_server: AiohttpServer) -> None:
    """Traffic labels are the config's route names (pitch_create and pitch_list share a path,
    told apart by method)."""
    seen: list[str] = []
    server = await aiohttp_server(recording(seen))
    summary = await drive(str(server.make_url("/")), 300, concurrency=6, ws_sessions=1)
    cfg = config.load(ROOT / "config/demo.yaml", env=DEMO_ENV)
    router = routes.Router(cfg.routes, cfg.routing)
    landed = Counter(router.resolve(p, m) for m, _, p in (s.partition(" ") for s in seen))
    expected = Counter({c.route: 0 for c in summary.counts})
    for c in summary.counts:
        expected[c.route] += c.count
    assert landed == expected


def test_staging_config_loads_with_the_migration_plans_gate() -> None:
    cfg = config.load(
        ROOT / "config/staging.yaml", env={"WORKERS_URL": "https://pitch-api.example.workers.dev"}
    )
    assert cfg.primary.url == "http://127.0.0.1:8001"
    assert cfg.shadow.url == "https://pitch-api.example.workers.dev" and cfg.shadow.host_header == "backend"
    g = cfg.gate
    assert (g.min_samples, g.max_mismatch_rate, g.max_shadow_error_rate) == (300, 0.001, 0.01)
    assert (g.latency_slo_s, g.latency_quantile, g.max_latency_ratio) == (0.5, 0.95, 1.2)
    names = {r.name for r in cfg.routes}
    assert {f"auth_login_{p}" for p in data.PORTALS} <= names
    assert {"auth_me", "user", "pitch_list", "pitch_detail", "notifications", "stripe_webhook", "ws"} <= names
    assert not cfg.route("stripe_webhook").shadow.enabled  # type: ignore[union-attr]
    expected = {r.name: r.expected.p50_s for r in cfg.routes if r.expected}
    assert expected["user"] == 0.005 and expected["pitch_list"] == 0.030
    router = routes.Router(cfg.routes, cfg.routing)
    assert router.resolve("/api/auth/investor/login") == "auth_login_investor"
    assert router.resolve("/api/pitches?page=2&genre=drama") == "pitch_list"
    assert router.resolve("/api/pitches/12") == "pitch_detail"


def test_staging_config_needs_the_workers_url() -> None:
    with pytest.raises(config.ConfigError, match="WORKERS_URL"):
        config.load(ROOT / "config/staging.yaml", env={})
