"""The two simulated backends: `make_app("deno")` and `make_app("workers")`.

Same handlers, same data from the same seed; a middleware gives each backend its
behaviour (latency, load shedding, its own headers) from its Profile.
"""

from __future__ import annotations

import asyncio
import secrets
import uuid

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from shadowproxy.demo import data
from shadowproxy.demo.api import DemoApi, error
from shadowproxy.demo.profiles import PROFILES, Behaviour, Flavor, Profile

API = web.AppKey("demo_api", DemoApi)
BEHAVIOUR = web.AppKey("demo_behaviour", Behaviour)


def make_app(flavor: Flavor, *, seed: int = 7, latency_scale: float = 1.0) -> web.Application:
    """A backend serving the demo API; `latency_scale` shrinks its simulated latencies (tests)."""
    profile = PROFILES[flavor]
    behaviour = Behaviour(profile, seed, latency_scale)
    api = DemoApi(profile, data.build(seed))
    app = web.Application(middlewares=[_behave(profile, behaviour)])
    app[API] = api
    app[BEHAVIOUR] = behaviour
    app.router.add_routes(api.routes())
    return app


def _behave(profile: Profile, behaviour: Behaviour) -> Middleware:
    @web.middleware
    async def behave(request: web.Request, handler: Handler) -> web.StreamResponse:
        route = request.match_info.route.name or "unrouted"
        delay = behaviour.delay_s(route)
        # The backend's own latency, simulated; this is what the demo measures.
        await asyncio.sleep(delay)
        if behaviour.fails(route):
            resp: web.StreamResponse = error(request, profile, 503, "notification service unavailable")
            resp.headers["Retry-After"] = "1"
        else:
            resp = await handler(request)
        if resp.prepared:  # a WebSocket: its headers are gone already
            return resp
        resp.headers["Server"] = profile.server_header
        resp.headers["X-Request-Id"] = str(uuid.uuid4())
        # The simulated time, declared the standard way; tests read it instead of timing requests.
        resp.headers["Server-Timing"] = f"app;dur={delay * 1000:.3f}"
        if profile.cloudflare_headers:
            resp.headers["CF-Ray"] = f"{secrets.token_hex(8)}-AMS"
            resp.headers["CF-Cache-Status"] = "DYNAMIC"
        return resp

    return behave
