"""Demo traffic: a bounded, realistic mix of the platform's calls against one loopback URL.

`total` HTTP requests are split over `concurrency` virtual users by a fixed mix (reads
dominate); every virtual user signs in first, on its own portal, and uses its token after.
The split is exact, so a run's counts per route are known in advance (`plan`).
"""

from __future__ import annotations

import asyncio
import ipaddress
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson
from yarl import URL

from shadowproxy.demo import data, tokens

# Share of the requests per route label (the demo config's route names). At total=3000
# every gated route gets >= 300 requests: with zero mismatches a 1% limit needs n >= 268.
MIX: tuple[tuple[str, int], ...] = (
    ("auth_login", 10),
    ("auth_me", 12),
    ("user", 14),
    ("pitch_list", 20),
    ("pitch_detail", 18),
    ("notifications", 14),
    ("pitch_create", 6),
    ("stripe_webhook", 6),
)
MAX_ERROR_EXAMPLES = 10
_RECEIVE_TIMEOUT_S = 10.0
_EVENT_TYPES = ("payment_intent.succeeded", "checkout.session.completed", "customer.subscription.updated")


@dataclass(frozen=True, slots=True)
class RouteCount:
    route: str
    status: int  # 101 for a WebSocket handshake
    count: int


@dataclass(frozen=True, slots=True)
class TrafficSummary:
    requests: int  # HTTP requests sent (WebSocket sessions not included)
    counts: tuple[RouteCount, ...]  # answers by route label and status, sorted
    errors: int  # requests or sessions that got no usable answer
    error_examples: tuple[str, ...]  # the first few; never carries a token
    ws_sessions: int  # sessions that completed: connected, events, ping answered
    ws_events: int  # notification events received over them
    elapsed_s: float

    def count(self, route: str | None = None, status: int | None = None) -> int:
        return sum(
            c.count
            for c in self.counts
            if (route is None or c.route == route) and (status is None or c.status == status)
        )

    def render(self) -> str:
        by_route: dict[str, list[str]] = {}
        for c in self.counts:
            by_route.setdefault(c.route, []).append(f"{c.status}x{c.count}")
        lines = [f"{r:<16} {' '.join(s)}" for r, s in by_route.items()]
        lines.append(
            f"{self.requests} requests, {self.ws_sessions} WebSocket sessions ({self.ws_events} events), "
            f"{self.errors} errors, {self.elapsed_s:.1f} s"
        )
        return "\n".join(lines)


def split(total: int) -> dict[str, int]:
    """Exact counts per route label summing to `total` (largest remainder; at least one login)."""
    weight = sum(w for _, w in MIX)
    exact = {label: total * w / weight for label, w in MIX}
    counts = {label: int(v) for label, v in exact.items()}
    by_remainder = sorted(MIX, key=lambda lw: (exact[lw[0]] - counts[lw[0]], lw[1]), reverse=True)
    for label, _ in by_remainder[: total - sum(counts.values())]:
        counts[label] += 1
    if total > 0 and counts["auth_login"] == 0:
        # Every virtual user signs in first; take the login from the largest share.
        biggest = max(counts, key=lambda k: counts[k])
        counts[biggest] -= 1
        counts["auth_login"] += 1
    return counts


def portal_of(worker: int) -> data.Portal:
    return data.PORTALS[worker % len(data.PORTALS)]


def plan(total: int, concurrency: int, seed: int) -> tuple[tuple[str, ...], ...]:
    """Each virtual user's operations in order; the first is always its login.

    Pitch creation goes to creator users only (other portals are refused with 403).
    """
    counts = split(total)
    n = min(concurrency, counts["auth_login"])
    if n <= 0:
        return ()
    ops: list[list[str]] = [["auth_login"] for _ in range(n)]
    creators = [i for i in range(n) if portal_of(i) == "creator"]
    rest: list[str] = ["auth_login"] * (counts["auth_login"] - n)
    for label, _ in MIX:
        if label not in ("auth_login", "pitch_create"):
            rest += [label] * counts[label]
    for i in range(counts["pitch_create"]):
        ops[creators[i % len(creators)]].append("pitch_create")
    for i, label in enumerate(rest):
        ops[i % n].append(label)
    plans = []
    for i, mine in enumerate(ops):
        tail = mine[1:]
        random.Random(f"{seed}:{i}").shuffle(tail)
        plans.append((mine[0], *tail))
    return tuple(plans)


def _check_loopback(base_url: str) -> URL:
    url = URL(base_url)
    host = url.host or ""
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = host == "localhost"
    # The demo posts webhooks and creates pitches: it must never reach a real deployment.
    if url.scheme not in ("http", "https") or not loopback or url.path not in ("", "/"):
        raise ValueError(
            f"demo traffic goes to a loopback base URL like http://127.0.0.1:8080, not {base_url!r}"
        )
    return url.with_path("/")


@dataclass(slots=True)
class _Tally:
    total: int
    progress: Callable[[int, int], None] | None
    counts: Counter[tuple[str, int]] = field(default_factory=Counter)
    errors: int = 0
    examples: list[str] = field(default_factory=list)
    done: int = 0
    ws_sessions: int = 0
    ws_events: int = 0

    def answered(self, route: str, status: int) -> None:
        self.counts[(route, status)] += 1

    def failed(self, route: str, what: str) -> None:
        self.errors += 1
        if len(self.examples) < MAX_ERROR_EXAMPLES:
            self.examples.append(f"{route}: {what}")

    def step(self) -> None:
        self.done += 1
        if self.progress is not None:
            self.progress(self.done, self.total)


@dataclass(slots=True)
class _User:
    portal: data.Portal
    rng: random.Random
    token: str | None = None


@dataclass(frozen=True, slots=True)
class _Call:
    method: str
    path: str
    params: dict[str, str] = field(default_factory=dict)
    json: Any = None
    body: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)


def _call_for(op: str, user: _User) -> _Call:
    rng = user.rng
    auth = {"Authorization": f"Bearer {user.token}"} if user.token else {}
    if op == "auth_login":
        account = rng.choice([a for a in data.accounts() if a.portal == user.portal])
        creds = {"email": account.email, "password": data.DEMO_PASSWORD}
        return _Call("POST", f"/api/auth/{user.portal}/login", json=creds)
    if op == "auth_me":
        return _Call("GET", "/api/auth/me", headers=auth)
    if op == "user":
        return _Call("GET", f"/api/users/{rng.randint(1, data.USERS)}")
    if op == "pitch_list":
        params = {"page": str(rng.randint(1, 4)), "limit": str(rng.choice((10, 20, 50)))}
        if rng.random() < 0.5:
            params["genre"] = rng.choice(data.GENRES)
        if rng.random() < 0.3:
            params["status"] = rng.choice(("published", "in_review", "funded"))
        return _Call("GET", "/api/pitches", params=params)
    if op == "pitch_detail":
        # A few ids past the end: browsers follow stale links, both backends must 404 alike.
        return _Call("GET", f"/api/pitches/{rng.randint(1, data.PITCHES + 4)}")
    if op == "notifications":
        return _Call("GET", "/api/notifications", headers=auth)
    if op == "pitch_create":
        pitch = {
            "title": f"Untitled {rng.choice(data.GENRES)} #{rng.randint(1, 9999)}",
            "logline": "A first draft, pitched from the demo.",
            "genre": rng.choice(data.GENRES),
            "format": rng.choice(data.FORMATS),
            "budget": rng.randrange(100_000, 5_000_000, 10_000),
        }
        return _Call("POST", "/api/pitches", json=pitch, headers=auth)
    if op == "stripe_webhook":
        event = {
            "id": f"evt_{rng.getrandbits(64):016x}",
            "type": rng.choice(_EVENT_TYPES),
            "data": {"object": {"amount": rng.randrange(500, 50_000, 100), "currency": "usd"}},
        }
        body = orjson.dumps(event)
        sig = tokens.stripe_signature(body, data.STRIPE_WEBHOOK_SECRET)
        return _Call("POST", "/api/stripe/webhook", body=body, headers={"Stripe-Signature": sig})
    raise ValueError(f"unknown operation {op!r}")


async def _run_user(
    session: aiohttp.ClientSession,
    ops: tuple[str, ...],
    user: _User,
    tally: _Tally,
    first_token: asyncio.Future[str | None],
) -> None:
    for op in ops:
        call = _call_for(op, user)
        try:
            async with session.request(
                call.method,
                call.path,
                params=call.params,
                json=call.json,
                data=call.body,
                headers=call.headers,
            ) as resp:
                body = await resp.read()
                tally.answered(op, resp.status)
                if op == "auth_login" and resp.status == 200:
                    user.token = orjson.loads(body)["data"]["token"]
                    if not first_token.done():
                        first_token.set_result(user.token)
        except (aiohttp.ClientError, TimeoutError, ValueError, KeyError) as e:
            # Request URLs carry no secrets (WebSocket ones do, and are reported apart).
            tally.failed(op, f"{type(e).__name__}: {e}")
        tally.step()


async def _ws_session(
    session: aiohttp.ClientSession, index: int, tally: _Tally, first_token: asyncio.Future[str | None]
) -> None:
    token = await first_token
    if token is None:
        tally.failed("ws", "no session: every login failed")
        return
    # Both ways the platform accepts: token in the query (even sessions) or in the first message.
    in_query = index % 2 == 0
    events = 0
    try:
        async with session.ws_connect("/ws", params={"token": token} if in_query else None) as ws:
            tally.answered("ws", 101)
            if not in_query:
                await ws.send_json({"type": "auth", "token": token})
            await ws.send_json({"type": "ping"})
            while True:
                msg = await ws.receive(timeout=_RECEIVE_TIMEOUT_S)
                if msg.type is not aiohttp.WSMsgType.TEXT:
                    tally.failed("ws", f"closed before pong ({msg.type.name}, code {ws.close_code})")
                    return
                kind = orjson.loads(msg.data).get("type")
                if kind == "notification":
                    events += 1
                elif kind == "pong":
                    break
                elif kind == "error":
                    tally.failed("ws", "server refused the session")
                    return
    except (aiohttp.ClientError, TimeoutError, ValueError) as e:
        # The type only: a handshake error's text would carry the URL, token included.
        tally.failed("ws", type(e).__name__)
        return
    tally.ws_sessions += 1
    tally.ws_events += events


async def drive(
    base_url: str,
    total: int,
    *,
    concurrency: int = 16,
    seed: int = 7,
    progress: Callable[[int, int], None] | None = None,
    ws_sessions: int = 1,
) -> TrafficSummary:
    """Send `total` HTTP requests (and `ws_sessions` WebSocket sessions) to a loopback `base_url`."""
    base = _check_loopback(base_url)
    if total < 0 or concurrency < 1 or ws_sessions < 0:
        raise ValueError("total and ws_sessions must be >= 0, concurrency >= 1")
    plans = plan(total, concurrency, seed)
    tally = _Tally(total=total, progress=progress)
    started = time.perf_counter()
    first_token: asyncio.Future[str | None] = asyncio.get_running_loop().create_future()
    connector = aiohttp.TCPConnector(limit=len(plans) + ws_sessions or 1)
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(base_url=base, connector=connector, timeout=timeout) as session:

        async def http_part() -> None:
            try:
                async with asyncio.TaskGroup() as tg:
                    for i, ops in enumerate(plans):
                        user = _User(portal=portal_of(i), rng=random.Random(f"{seed}:user:{i}"))
                        tg.create_task(_run_user(session, ops, user, tally, first_token))
            finally:
                if not first_token.done():
                    first_token.set_result(None)

        async with asyncio.TaskGroup() as tg:
            tg.create_task(http_part())
            for j in range(ws_sessions):
                tg.create_task(_ws_session(session, j, tally, first_token))
    return TrafficSummary(
        requests=total,
        counts=tuple(RouteCount(r, s, n) for (r, s), n in sorted(tally.counts.items())),
        errors=tally.errors,
        error_examples=tuple(tally.examples),
        ws_sessions=tally.ws_sessions,
        ws_events=tally.ws_events,
        elapsed_s=time.perf_counter() - started,
    )
