"""Behind the real proxy: differences are named, noise is not, secrets stay put, and the
admin API shows it all."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from shadowproxy import config
from tests.conftest import make_config

USER = {"id": 42, "name": "Ada", "plan": "pro", "updated_at": "2026-11-28T10:00:00Z", "tags": ["a", "b"]}


def json_handler(doc: dict[str, object], status: int = 200, content_type: str = "application/json"):
    async def handler(request: web.Request, up) -> web.Response:
        return web.Response(body=json.dumps(doc).encode(), status=status, content_type=content_type)

    return handler


async def settle(r) -> None:
    await r.sidecar.settle(10.0)
    await asyncio.to_thread(r.sidecar.store.flush)


async def admin_get(r, path: str):
    async with aiohttp.ClientSession() as s, s.get(r.admin_url + path) as resp:
        return resp.status, await resp.json()


async def one_exchange(make_upstream, sidecar, tmp_path, primary_doc, shadow_handler, **cfg_kw):
    primary = await make_upstream(json_handler(primary_doc))
    shadow = await make_upstream(shadow_handler)
    r = await sidecar(make_config(primary.url, shadow.url, tmp_path, **cfg_kw))
    async with aiohttp.ClientSession() as s, s.get(r.proxy_url + "/api/users/42") as resp:
        assert await resp.json() == primary_doc
    await settle(r)
    return r


async def test_a_changed_field_is_a_mismatch_naming_the_field(make_upstream, sidecar, tmp_path):
    r = await one_exchange(make_upstream, sidecar, tmp_path, USER, json_handler({**USER, "plan": "free"}))
    status, body = await admin_get(r, "/api/mismatches?route=/api/users/{id}")
    assert status == 200 and body["count"] == 1
    sample = body["mismatches"][0]
    assert sample["parts"] == ["body"]
    assert [(f["path"], f["kind"], f["primary"], f["shadow"]) for f in sample["fields"]] == [
        ("$.plan", "changed", "pro", "free")
    ]
    status, one = await admin_get(r, f"/api/mismatches/{sample['id']}")
    assert status == 200 and one["id"] == sample["id"] and one["explanation"]
    _, routes = await admin_get(r, "/api/routes")
    [route] = [x for x in routes["routes"] if x["route"] == "/api/users/{id}"]
    assert route["mismatches"] == 1 and route["requests"] == 1 and route["shadowed"] == 1
    assert route["top_fields"][0][0] == "$.plan"


async def test_a_status_difference_is_a_status_mismatch(make_upstream, sidecar, tmp_path):
    r = await one_exchange(make_upstream, sidecar, tmp_path, USER, json_handler(USER, status=404))
    _, body = await admin_get(r, "/api/mismatches")
    assert "status" in body["mismatches"][0]["parts"]


async def test_a_header_difference_is_a_header_mismatch(make_upstream, sidecar, tmp_path):
    r = await one_exchange(
        make_upstream, sidecar, tmp_path, USER, json_handler(USER, content_type="text/plain")
    )
    _, body = await admin_get(r, "/api/mismatches")
    sample = body["mismatches"][0]
    assert "headers" in sample["parts"]
    assert any(f["path"] == "header:content-type" for f in sample["fields"])


async def test_differences_only_in_ignored_or_normalised_parts_are_a_match(make_upstream, sidecar, tmp_path):
    noisy = {**USER, "updated_at": "2026-11-28T10:00:07.123Z", "tags": ["b", "a"]}
    rules = config.CompareRules(ignore=("$.updated_at",), unordered=(config.Unordered(path="$.tags"),))
    r = await one_exchange(make_upstream, sidecar, tmp_path, USER, json_handler(noisy), compare=rules)
    r.sidecar.metrics.flush()
    registry = r.sidecar.metrics.registry
    labels = {"route": "/api/users/{id}", "method": "GET"}
    assert registry.get_sample_value("shadowproxy_comparisons_total", {**labels, "result": "match"}) == 1
    _, body = await admin_get(r, "/api/mismatches")
    assert body["count"] == 0


async def test_admin_api_rejects_bad_arguments_with_a_message(make_upstream, sidecar, tmp_path):
    r = await one_exchange(make_upstream, sidecar, tmp_path, USER, json_handler(USER))
    async with aiohttp.ClientSession() as s:
        async with s.get(r.admin_url + "/api/mismatches?limit=lots") as resp:
            assert resp.status == 400 and "limit" in await resp.text()
        async with s.get(r.admin_url + "/api/mismatches/999999") as resp:
            assert resp.status == 404
        async with s.get(r.admin_url + "/healthz") as resp:
            assert resp.status == 200
        async with s.get(r.admin_url + "/readyz") as resp:
            assert resp.status == 200 and (await resp.json())["status"] == "ready"


PLANTED = "sk_live_PLANTED123"


async def test_a_planted_secret_reaches_no_stored_byte_log_line_or_api_answer(
    make_upstream, sidecar, tmp_path: Path, caplog
):
    caplog.set_level(logging.DEBUG)
    primary_doc = {"id": 1, "access_token": PLANTED, "profile": {"password": PLANTED, "bio": "hi"}}
    shadow_doc = {"id": 1, "access_token": PLANTED + "x", "profile": {"password": "other", "bio": "hello"}}
    primary = await make_upstream(json_handler(primary_doc))
    shadow = await make_upstream(json_handler(shadow_doc))
    r = await sidecar(make_config(primary.url, shadow.url, tmp_path))
    async with (
        aiohttp.ClientSession() as s,
        s.get(
            r.proxy_url + f"/api/me?access_token={PLANTED}&page=1",
            headers={
                "Authorization": f"Bearer {PLANTED}",
                "Cookie": f"session={PLANTED}",
                "X-Api-Key": PLANTED,
            },
        ) as resp,
    ):
        # The client itself gets the primary's answer untouched, secret and all.
        assert PLANTED in await resp.text()
    await settle(r)
    answers = []
    async with aiohttp.ClientSession() as s:
        for path in ("/api/routes", "/api/mismatches", "/api/mismatches?route=/api/me", "/metrics"):
            async with s.get(r.admin_url + path) as resp:
                answers.append(await resp.text())
        _, body = await admin_get(r, "/api/mismatches")
        assert body["count"] == 1
        async with s.get(r.admin_url + f"/api/mismatches/{body['mismatches'][0]['id']}") as resp:
            answers.append(await resp.text())
    assert "[REDACTED]" in answers[1]
    assert "hello" in answers[1]  # the sample is there, only the secret is gone
    for text in answers:
        assert PLANTED not in text
    for rec in caplog.records:
        assert PLANTED not in rec.getMessage()
    await r.sidecar.stop(1.0)  # closes the store: every byte is on disk
    stored = await asyncio.to_thread(lambda: {f.name: f.read_bytes() for f in tmp_path.glob("store.db*")})
    assert "store.db" in stored
    for name, data in stored.items():
        assert PLANTED.encode() not in data, name


async def test_the_store_keeps_counts_across_a_restart(make_upstream, sidecar, tmp_path):
    primary = await make_upstream(json_handler(USER))
    shadow = await make_upstream(json_handler({**USER, "plan": "free"}))
    cfg = make_config(primary.url, shadow.url, tmp_path)
    from shadowproxy.app import running

    for _ in range(2):
        async with running(cfg, _registry()) as r:
            async with aiohttp.ClientSession() as s, s.get(r.proxy_url + "/api/users/1") as resp:
                assert resp.status == 200
            await r.sidecar.settle(10.0)
    from shadowproxy.redact import Redactor
    from shadowproxy.store import Store

    store = Store(cfg.store.path, cfg.store, Redactor(cfg.redact), cfg.rules_for)
    [ev] = [e for e in store.evidence().routes if e.route == "/api/users/{id}"]
    assert (ev.requests, ev.compared, ev.mismatches) == (2, 2, 2)


def _registry():
    from prometheus_client import CollectorRegistry

    return CollectorRegistry()


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_log_lines_are_redacted(fmt, capsys):
    from shadowproxy.logs import setup_logging

    setup_logging(dataclasses.replace(config.Log(), format=fmt), config.Redact())
    logging.getLogger("shadowproxy.test").warning("upstream said Authorization: Bearer %s", PLANTED)
    err = capsys.readouterr().err
    assert "upstream said" in err and PLANTED not in err
    logging.getLogger().handlers.clear()


async def test_the_live_verdict_is_served_and_exported_as_a_gauge(make_upstream, sidecar, tmp_path):
    routes = (config.Route(name="user", match="/api/users/{id}"), config.Route(name="never", match="/never"))
    gate = config.Gate(min_samples=5)
    r = await one_exchange(
        make_upstream,
        sidecar,
        tmp_path,
        USER,
        json_handler({**USER, "plan": "free"}),
        routes=routes,
        gate=gate,
    )
    async with aiohttp.ClientSession() as s:
        for _ in range(11):
            async with s.get(r.proxy_url + "/api/users/42") as resp:
                assert resp.status == 200
    await settle(r)
    status, body = await admin_get(r, "/api/verdict")
    assert status == 200
    by_route = {x["route"]: x for x in body["routes"]}
    assert by_route["user"]["verdict"] == "NO-GO"
    assert by_route["never"]["verdict"] == "INCONCLUSIVE"
    assert body["verdict"] == "NO-GO"
    registry = r.sidecar.metrics.registry
    assert registry.get_sample_value("shadowproxy_verdict", {"route": "user"}) == -1
    assert registry.get_sample_value("shadowproxy_verdict", {"route": "never"}) == 0
    # No writer process, no verdict: said so, never judged in the proxy instead.
    await asyncio.to_thread(r.sidecar.store.close)
    status, body = await admin_get(r, "/api/verdict")
    assert (status, body) == (503, {"error": "no live verdict: the store is closed"})


async def test_noise_learned_from_a_secondary_is_suggested_never_applied(make_upstream, sidecar, tmp_path):
    """The primary asked twice differs in `generated_at` (noise); the shadow also differs in
    `plan` (a real difference). Only the noise becomes a suggested ignore rule."""
    counter = iter(range(10_000))

    async def noisy(request, up):
        return web.json_response({**USER, "generated_at": f"t{next(counter)}"})

    async def noisy_and_wrong(request, up):
        return web.json_response({**USER, "generated_at": f"s{next(counter)}", "plan": "free"})

    primary = await make_upstream(noisy)
    shadow = await make_upstream(noisy_and_wrong)
    cfg = make_config(
        primary.url,
        shadow.url,
        tmp_path,
        secondary=config.Secondary(repeat_primary=True),
        noise=config.Noise(enabled=True),
    )
    r = await sidecar(cfg)
    async with aiohttp.ClientSession() as s:
        for _ in range(30):
            async with s.get(r.proxy_url + "/api/users/42") as resp:
                assert resp.status == 200
    await settle(r)
    # The primary saw each request twice: once for the client, once as the secondary.
    assert len(primary.seen) == 60
    evidence = await asyncio.to_thread(r.sidecar.store.evidence, (), cfg.noise)
    suggested = {(x.route, x.path) for x in evidence.suggestions}
    assert suggested == {("/api/users/{id}", "$.generated_at")}
    # Never applied silently: the noisy field is still counted as a difference.
    [ev] = [e for e in evidence.routes if e.route == "/api/users/{id}"]
    assert ev.mismatches == 30 and {f.path for f in ev.fields} >= {"$.generated_at", "$.plan"}
