"""The admin port: health, metrics, and the JSON API over the store and the live verdict.

Store reads are SQLite queries: they run in a thread so the proxy's event loop (same
process) never waits on disk.
"""

from __future__ import annotations

import asyncio
import dataclasses
from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import web

from shadowproxy.gate import Decision
from shadowproxy.store import StoreError

if TYPE_CHECKING:
    from shadowproxy.app import Sidecar

SIDECAR: web.AppKey[Sidecar] = web.AppKey("sidecar")
MAX_LIMIT = 500


def _json(data: Any, status: int = 200) -> web.Response:
    body = orjson.dumps(data, default=_default, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS)
    return web.Response(body=body, status=status, content_type="application/json")


def _default(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return dataclasses.asdict(obj)
    if isinstance(obj, frozenset | set | tuple):
        return list(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


async def healthz(request: web.Request) -> web.Response:
    return _json({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    sc = request.app[SIDECAR]
    checks = {
        "primary_session": sc.primary.ready,
        "shadow_session": sc.shadow.ready,
        "accepting": sc.ready,
    }
    ok = all(checks.values())
    return _json({"status": "ready" if ok else "not ready", "checks": checks}, 200 if ok else 503)


async def metrics(request: web.Request) -> web.Response:
    body, content_type = request.app[SIDECAR].metrics.render()
    resp = web.Response(body=body)
    resp.headers["Content-Type"] = content_type
    return resp


async def routes(request: web.Request) -> web.Response:
    sc = request.app[SIDECAR]
    await asyncio.to_thread(sc.store.flush)
    summaries = await asyncio.to_thread(sc.store.route_summaries)
    return _json({"routes": summaries})


def _limit(request: web.Request) -> int:
    raw = request.query.get("limit", "20")
    try:
        value = int(raw)
    except ValueError:
        raise web.HTTPBadRequest(text=f"limit must be a whole number, not {raw!r}") from None
    if not 1 <= value <= MAX_LIMIT:
        raise web.HTTPBadRequest(text=f"limit must be between 1 and {MAX_LIMIT}")
    return value


async def mismatches(request: web.Request) -> web.Response:
    sc = request.app[SIDECAR]
    route = request.query.get("route") or None
    limit = _limit(request)
    await asyncio.to_thread(sc.store.flush)
    samples = await asyncio.to_thread(sc.store.samples, route, limit)
    return _json({"route": route, "count": len(samples), "mismatches": [s.to_json() for s in samples]})


async def mismatch(request: web.Request) -> web.Response:
    sc = request.app[SIDECAR]
    raw = request.match_info["id"]
    if not raw.isdigit():
        raise web.HTTPBadRequest(text=f"mismatch id must be a number, not {raw!r}")
    sample = await asyncio.to_thread(sc.store.sample, int(raw))
    if sample is None:
        return _json({"error": f"no mismatch sample with id {raw}"}, 404)
    return _json(sample.to_json())


async def verdict(request: web.Request) -> web.Response:
    """The live verdict over this instance's store, also exported as shadowproxy_verdict."""
    sc = request.app[SIDECAR]
    await asyncio.to_thread(sc.store.flush)
    try:
        decision = await asyncio.to_thread(sc.judge)
    except StoreError as e:  # the writer process judges; without one there is no verdict
        return _json({"error": str(e)}, 503)
    return _json(decision_json(decision))


def decision_json(d: Decision) -> dict[str, Any]:
    return {
        "verdict": d.verdict,
        "reasons": list(d.reasons),
        "routes": [
            {
                "route": r.route,
                "verdict": r.verdict,
                "critical": r.critical,
                "declared": r.declared,
                "reasons": list(r.reasons),
                "checks": [
                    {
                        "name": c.name,
                        "outcome": c.outcome,
                        "k": c.k,
                        "n": c.n,
                        "estimate": c.estimate,
                        "low": c.low,
                        "high": c.high,
                        "limit": c.limit,
                        "reason": c.reason,
                    }
                    for c in r.checks
                ],
            }
            for r in d.routes
        ],
        "coverage": d.coverage,
        "family": d.family,
    }


def build_admin(sidecar: Sidecar) -> web.Application:
    app = web.Application()
    app[SIDECAR] = sidecar
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/api/routes", routes)
    app.router.add_get("/api/mismatches", mismatches)
    app.router.add_get("/api/mismatches/{id}", mismatch)
    app.router.add_get("/api/verdict", verdict)
    return app
