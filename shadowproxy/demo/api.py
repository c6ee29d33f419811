"""The platform's API slice as aiohttp handlers: what each endpoint answers.

How a backend *behaves* (latency, shedding, its headers) is the middleware's business in
`backends.py`; the few ways the Workers port answers differently come from its Profile.
"""

from __future__ import annotations

import uuid
from collections import OrderedDict
from datetime import UTC, datetime
from typing import Any

import brotli
import orjson
from aiohttp import web
from aiohttp.web_response import ContentCoding

from shadowproxy.demo import data, tokens
from shadowproxy.demo.profiles import Profile

MAX_CREATED_PITCHES = 1_000
MAX_SEEN_EVENTS = 10_000
MAX_LIMIT = 100
WS_EVENTS = 3
WS_AUTH_TIMEOUT_S = 5.0
# Brotli pays off on larger bodies; small ones get gzip, tiny ones nothing (like Cloudflare).
BROTLI_MIN_BYTES = 2048
GZIP_MIN_BYTES = 256


def _accepts(request: web.Request, coding: str) -> bool:
    offered = request.headers.get("Accept-Encoding", "")
    for item in offered.split(","):
        name, _, params = item.strip().partition(";")
        if name.strip().lower() == coding:
            return params.replace(" ", "") not in ("q=0", "q=0.0")
    return False


def respond(
    request: web.Request, profile: Profile, payload: dict[str, Any], status: int = 200
) -> web.Response:
    """JSON with the backend's own volatile `meta`, compressed the way the backend does it."""
    meta = {
        "request_id": str(uuid.uuid4()),
        "generated_at": data.iso(datetime.now(UTC)),
        "served_by": profile.served_by,
    }
    body = orjson.dumps({**payload, "meta": meta})
    if profile.compress and len(body) >= BROTLI_MIN_BYTES and _accepts(request, "br"):
        # aiohttp's server compresses gzip/deflate only; br is encoded here. Quality 4 as
        # Cloudflare does for dynamic content: the default (11) costs ~37 ms per 15 KB list.
        packed = brotli.compress(body, quality=4)
        resp = web.Response(body=packed, status=status, content_type="application/json")
        resp.headers["Content-Encoding"] = "br"
        return resp
    resp = web.Response(body=body, status=status, content_type="application/json")
    if profile.compress and len(body) >= GZIP_MIN_BYTES and _accepts(request, "gzip"):
        resp.enable_compression(ContentCoding.gzip)
    return resp


def error(request: web.Request, profile: Profile, status: int, message: str) -> web.Response:
    resp = respond(request, profile, {"error": message}, status)
    if status == 401:
        resp.headers["WWW-Authenticate"] = 'Bearer realm="api"'
    return resp


class DemoApi:
    def __init__(self, profile: Profile, dataset: data.Dataset) -> None:
        self.profile = profile
        self.db = dataset
        # Bounded: a long demo run must not grow memory without limit.
        self._created: OrderedDict[int, data.Pitch] = OrderedDict()
        self._next_pitch_id = data.FIRST_CREATED_PITCH_ID
        self._seen_events: OrderedDict[str, None] = OrderedDict()

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/health", self.health, name="health"),
            web.post("/api/auth/{portal}/login", self.login, name="auth_login"),
            web.get("/api/auth/me", self.me, name="auth_me"),
            web.get(r"/api/users/{id:\d+}", self.user, name="user"),
            web.get("/api/pitches", self.pitch_list, name="pitch_list"),
            web.post("/api/pitches", self.pitch_create, name="pitch_create"),
            web.get(r"/api/pitches/{id:\d+}", self.pitch_detail, name="pitch_detail"),
            web.get("/api/notifications", self.notifications, name="notifications"),
            web.post("/api/stripe/webhook", self.stripe_webhook, name="stripe_webhook"),
            web.get("/ws", self.ws, name="ws"),
        ]

    def _json(self, request: web.Request, payload: dict[str, Any], status: int = 200) -> web.Response:
        return respond(request, self.profile, payload, status)

    def _error(self, request: web.Request, status: int, message: str) -> web.Response:
        return error(request, self.profile, status, message)

    def _bearer(self, request: web.Request) -> tokens.Claims | None:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token:
            return None
        return tokens.verify(token.strip(), data.JWT_SECRET)

    async def health(self, request: web.Request) -> web.Response:
        return self._json(request, {"status": "ok"})

    async def login(self, request: web.Request) -> web.Response:
        portal = request.match_info["portal"]
        if portal not in data.PORTALS:
            return self._error(request, 404, f"unknown portal {portal!r}")
        try:
            body = await request.json(loads=orjson.loads)
        except ValueError:
            return self._error(request, 400, "body must be JSON")
        if not isinstance(body, dict) or not isinstance(body.get("email"), str):
            return self._error(request, 400, "email and password are required")
        user = self.db.login(body["email"])
        if user is None or body.get("password") != data.DEMO_PASSWORD:
            return self._error(request, 401, "invalid credentials")
        if user.account.portal != portal:
            return self._error(request, 403, f"this account signs in on the {user.account.portal} portal")
        token, claims = tokens.issue(user.id, portal, data.JWT_SECRET)
        expires = data.iso(datetime.fromtimestamp(claims.expires, UTC))
        return self._json(
            request, {"data": {"token": token, "expires_at": expires, "user": data.user_json(user)}}
        )

    async def me(self, request: web.Request) -> web.Response:
        claims = self._bearer(request)
        user = None if claims is None else self.db.users.get(claims.user_id)
        if claims is None or user is None:
            return self._error(request, 401, "unauthorized")
        return self._json(request, {"data": {**data.user_json(user), "portal": claims.portal}})

    async def user(self, request: web.Request) -> web.Response:
        user = self.db.users.get(int(request.match_info["id"]))
        if user is None:
            return self._error(request, 404, "user not found")
        return self._json(request, {"data": data.user_json(user)})

    async def pitch_list(self, request: web.Request) -> web.Response:
        q = request.query
        try:
            page, limit = int(q.get("page", "1")), int(q.get("limit", "20"))
        except ValueError:
            return self._error(request, 400, "page and limit must be whole numbers")
        if page < 1 or not 1 <= limit <= MAX_LIMIT:
            return self._error(request, 400, f"page must be >= 1 and limit between 1 and {MAX_LIMIT}")
        genre, status = q.get("genre"), q.get("status")
        hits = [p for p in self.db.pitches if genre in (None, p.genre) and status in (None, p.status)]
        rows = hits[(page - 1) * limit : page * limit]
        users = self.db.users
        return self._json(
            request,
            {
                "data": [data.pitch_summary(p, users.get(p.creator_id)) for p in rows],
                "pagination": {
                    "page": page,
                    "limit": limit,
                    "total": len(hits),
                    "total_pages": -(-len(hits) // limit),
                },
            },
        )

    async def pitch_detail(self, request: web.Request) -> web.Response:
        pid = int(request.match_info["id"])
        pitch = self.db.pitch_by_id.get(pid) or self._created.get(pid)
        if pitch is None:
            return self._error(request, 404, "pitch not found")
        return self._json(request, {"data": self._detail(pitch)})

    def _detail(self, pitch: data.Pitch) -> dict[str, Any]:
        out = data.pitch_detail(pitch, self.db.users.get(pitch.creator_id))
        if self.profile.budget_as_string:
            # The planted regression: the port serialises Postgres NUMERIC as a string.
            out["budget"] = f"{pitch.budget:.2f}"
        return out

    async def pitch_create(self, request: web.Request) -> web.Response:
        claims = self._bearer(request)
        if claims is None:
            return self._error(request, 401, "unauthorized")
        if claims.portal != "creator":
            return self._error(request, 403, "only creators can pitch")
        try:
            body = await request.json(loads=orjson.loads)
        except ValueError:
            return self._error(request, 400, "body must be JSON")
        problem = _invalid_pitch(body)
        if problem:
            return self._error(request, 422, problem)
        now = datetime.now(UTC)
        pitch = data.Pitch(
            id=self._next_pitch_id,
            creator_id=claims.user_id,
            title=body["title"],
            logline=body["logline"],
            synopsis=str(body.get("synopsis", "")),
            genre=body["genre"],
            format=body["format"],
            status="draft",
            budget=body["budget"],
            investor_count=0,
            view_count=0,
            like_count=0,
            tags=(),
            created_at=now,
            updated_at=now,
        )
        self._next_pitch_id += 1
        self._created[pitch.id] = pitch
        if len(self._created) > MAX_CREATED_PITCHES:
            self._created.popitem(last=False)
        resp = self._json(request, {"data": self._detail(pitch)}, status=201)
        resp.headers["Location"] = f"/api/pitches/{pitch.id}"
        return resp

    async def notifications(self, request: web.Request) -> web.Response:
        claims = self._bearer(request)
        if claims is None:
            return self._error(request, 401, "unauthorized")
        notes = self.db.notifications.get(claims.user_id, ())
        if not self.profile.notifications_newest_first:
            notes = tuple(sorted(notes, key=lambda n: n.id))
        return self._json(
            request,
            {
                "data": [data.notification_json(n) for n in notes],
                "unread_count": sum(not n.read for n in notes),
            },
        )

    async def stripe_webhook(self, request: web.Request) -> web.Response:
        raw = await request.read()  # the signature covers these exact bytes
        header = request.headers.get("Stripe-Signature", "")
        if not tokens.stripe_verify(raw, header, data.STRIPE_WEBHOOK_SECRET):
            return self._error(request, 400, "invalid signature")
        try:
            event = orjson.loads(raw)
            event_id, event_type = str(event["id"]), str(event["type"])
        except (ValueError, KeyError, TypeError):
            return self._error(request, 400, "not a Stripe event")
        # Stripe retries deliveries; a replay is acknowledged but not processed again.
        duplicate = event_id in self._seen_events
        self._seen_events[event_id] = None
        if len(self._seen_events) > MAX_SEEN_EVENTS:
            self._seen_events.popitem(last=False)
        return self._json(
            request, {"received": True, "id": event_id, "type": event_type, "duplicate": duplicate}
        )

    async def ws(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(max_msg_size=64 * 1024)
        await ws.prepare(request)
        token = request.query.get("token")
        if token is None:
            # No token in the URL: the first message must carry it (browsers cannot set headers).
            try:
                first = await ws.receive_json(timeout=WS_AUTH_TIMEOUT_S)
            except (TimeoutError, TypeError, ValueError):
                first = None
            token = first.get("token") if isinstance(first, dict) and first.get("type") == "auth" else None
        claims = tokens.verify(str(token), data.JWT_SECRET) if token else None
        if claims is None:
            await ws.send_json({"type": "error", "error": "unauthorized"})
            await ws.close(code=4401, message=b"unauthorized")
            return ws
        await ws.send_json(
            {"type": "connected", "user_id": claims.user_id, "served_by": self.profile.served_by}
        )
        for note in self.db.notifications.get(claims.user_id, ())[:WS_EVENTS]:
            await ws.send_json({"type": "notification", "data": data.notification_json(note)})
        async for msg in ws:
            if msg.type is not web.WSMsgType.TEXT:
                continue
            try:
                kind = orjson.loads(msg.data).get("type")
            except (ValueError, AttributeError):
                kind = None
            if kind == "ping":
                await ws.send_json({"type": "pong"})
            else:
                await ws.send_json({"type": "error", "error": "unknown message"})
        return ws


def _invalid_pitch(body: Any) -> str | None:
    if not isinstance(body, dict):
        return "body must be a JSON object"
    title = body.get("title")
    if not isinstance(title, str) or not 1 <= len(title) <= 200:
        return "title: 1 to 200 characters"
    if not isinstance(body.get("logline"), str):
        return "logline: required"
    if body.get("genre") not in data.GENRES:
        return f"genre: one of {', '.join(data.GENRES)}"
    if body.get("format") not in data.FORMATS:
        return f"format: one of {', '.join(data.FORMATS)}"
    budget = body.get("budget")
    if isinstance(budget, bool) or not isinstance(budget, int) or budget < 0:
        return "budget: a whole number of dollars, >= 0"
    return None
