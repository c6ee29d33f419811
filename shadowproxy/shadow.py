"""Which requests are shadowed, and the bounded background work that shadows them.

Rule 1 lives here: nothing in this module may delay, fail or alter the primary response.
`ShadowDispatcher.try_start` never blocks and never raises into the caller; the shadow call,
the wait for the primary's answer and the comparison all run in a tracked background task
that records its outcome (failures included) as data.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import random
from collections.abc import Callable
from http.cookies import CookieError, SimpleCookie

from shadowproxy import config
from shadowproxy.breaker import Breaker
from shadowproxy.compare import compare
from shadowproxy.compare_process import CompareProcess
from shadowproxy.exchange import Comparison, Exchange, RequestSnapshot, SkipReason, UpstreamResult
from shadowproxy.recording import Recorder
from shadowproxy.tasks import TaskTracker
from shadowproxy.transport import Upstream

log = logging.getLogger("shadowproxy.shadow")


class ShadowPolicy:
    """Decides, per request, whether it may be shadowed (pure: no I/O)."""

    def __init__(self, cfg: config.Config, rng: random.Random | None = None) -> None:
        self._cfg = cfg
        self._rng = rng or random.Random()
        s = cfg.shadowing
        default_methods = frozenset(m.upper() for m in s.methods)
        self._methods: dict[str, frozenset[str]] = {}
        self._rates: dict[str, float] = {}
        self._disabled: set[str] = set()
        for r in cfg.routes:
            methods = r.shadow.methods
            self._methods[r.name] = frozenset(m.upper() for m in methods) if methods else default_methods
            self._rates[r.name] = s.sample_rate if r.shadow.sample_rate is None else r.shadow.sample_rate
            if not r.shadow.enabled:
                self._disabled.add(r.name)
        self._default_methods = default_methods
        self._default_rate = s.sample_rate
        self._sticky = s.sticky

    def decide(
        self, route: str, method: str, header: Callable[[str], str | None], websocket: bool = False
    ) -> SkipReason | None:
        """None when the request may be shadowed, else the reason it is not."""
        if websocket:
            return "websocket"
        if not self._cfg.shadowing.enabled or route in self._disabled:
            return "disabled"
        if method not in self._methods.get(route, self._default_methods):
            return "unsafe_method"
        rate = self._rates.get(route, self._default_rate)
        if rate >= 1.0:
            return None
        if self._draw(header) >= rate:
            return "sampled_out"
        return None

    def _draw(self, header: Callable[[str], str | None]) -> float:
        """A number in [0, 1): from the sticky key's hash, so one user is all in or all out."""
        key = self._sticky_key(header)
        if key is None:
            return self._rng.random()
        digest = hashlib.blake2b(key.encode(), digest_size=8).digest()
        return int.from_bytes(digest, "big") / 2**64

    def _sticky_key(self, header: Callable[[str], str | None]) -> str | None:
        st = self._sticky
        if st is None:
            return None
        if st.header is not None:
            return header(st.header)
        raw = header("Cookie")
        if raw is None or st.cookie is None:
            return None
        try:
            morsel = SimpleCookie(raw).get(st.cookie)
        except CookieError:
            return None
        return morsel.value if morsel is not None else None


class ShadowDispatcher:
    """Bounded concurrent shadow calls; the outcome of each goes to the recorder."""

    def __init__(
        self,
        cfg: config.Config,
        shadow: Upstream,
        tracker: TaskTracker,
        recorder: Recorder,
        secondary: Upstream | None = None,
        comparer: CompareProcess | None = None,
    ) -> None:
        self._cfg = cfg
        self._comparer = comparer
        self._offload_bytes = cfg.shadowing.compare_process_min_bytes
        self._shadow = shadow
        self._secondary = secondary
        self._tracker = tracker
        self._rec = recorder
        self._max = cfg.shadowing.max_in_flight
        # A shadow call never queues for a connection: the wait would count in the shadow's
        # latency (a 200 ms shadow measured 500 ms behind a full pool), and a queue that
        # sends as each answer lands keeps answers arriving in bursts that stall the primary.
        # The dispatcher is the only user of these pools, so counting its calls is exact.
        self._sending = 0
        self._max_sending = shadow.cfg.max_connections
        self._secondary_sending = 0
        self._capture = cfg.shadowing.max_response_bytes
        # The primary's answer can take its own timeout; a shadow task never outlives both.
        self._primary_wait_s = cfg.primary.timeout_s + 1.0
        self.in_flight = 0
        self._breaker = Breaker(cfg.shadowing.breaker)
        self._rules = cfg.rules_by_route()

    def try_start(
        self,
        req: RequestSnapshot,
        client_host: str | None,
        primary: asyncio.Future[UpstreamResult],
    ) -> SkipReason | None:
        """Start shadowing `req`; or say why not (nothing started): the in-flight cap is
        full or every shadow connection is busy, or the breaker is open because the shadow
        keeps failing."""
        if self.in_flight >= self._max or self._sending >= self._max_sending:
            return "saturated"
        if self._comparer is not None and self._comparer.busy:
            # Shed here, before anyone knows whether the answers differ: dropping differing
            # pairs at the worker would bias the mismatch rate down.
            return "saturated"
        if not self._breaker.allow():
            return "circuit_open"
        self.in_flight += 1
        self._sending += 1
        self._rec.shadow_in_flight(1)
        self._tracker.spawn(self._run(req, client_host, primary), name=f"shadow {req.request_id}")
        return None

    async def _run(
        self, req: RequestSnapshot, client_host: str | None, primary_fut: asyncio.Future[UpstreamResult]
    ) -> None:
        try:
            secondary_task = None
            secondary = self._secondary
            if (
                secondary is not None
                and req.method in config.SAFE_METHODS
                and self._secondary_sending < secondary.cfg.max_connections
            ):
                # Its evidence is optional: with its pool full, this pair goes without it.
                self._secondary_sending += 1
                secondary_task = self._tracker.spawn(
                    self._fetch_secondary(secondary, req, client_host), name=f"secondary {req.request_id}"
                )
            try:
                shadow = await self._shadow.fetch(req, client_host, self._capture)
            finally:
                self._sending -= 1
            self._breaker.record(shadow.error is not None)
            self._rec.upstream(req.route, req.method, shadow)
            if primary_fut.done():  # the usual case: no need for wait_for's timer and shield
                primary = primary_fut.result()
            else:
                try:
                    primary = await asyncio.wait_for(asyncio.shield(primary_fut), self._primary_wait_s)
                except TimeoutError:
                    log.warning(
                        "primary answer for %s never completed; shadow result dropped", req.request_id
                    )
                    return
            second = await secondary_task if secondary_task is not None else None
            self._rec.exchange(await self._judge(req, primary, shadow, second))
        finally:
            self.in_flight -= 1
            self._rec.shadow_in_flight(-1)

    async def _fetch_secondary(
        self, secondary: Upstream, req: RequestSnapshot, client_host: str | None
    ) -> UpstreamResult:
        try:
            return await secondary.fetch(req, client_host, self._capture)
        finally:
            self._secondary_sending -= 1

    async def _judge(
        self,
        req: RequestSnapshot,
        primary: UpstreamResult,
        shadow: UpstreamResult,
        secondary: UpstreamResult | None,
    ) -> Exchange:
        rules = self._rules.get(req.route, self._cfg.compare)
        comparison = (
            await self._compare(req.route, primary, shadow, rules) if primary.ok and shadow.ok else None
        )
        noise: tuple[str, ...] = ()
        if secondary is not None and primary.ok and secondary.ok:
            noise = (await self._compare(req.route, primary, secondary, rules)).paths
        return Exchange(
            request=req,
            primary=primary,
            shadow=shadow,
            comparison=comparison,
            secondary=secondary if secondary is not None and secondary.ok else None,
            noise_paths=noise,
        )

    async def _compare(
        self, route: str, a: UpstreamResult, b: UpstreamResult, rules: config.CompareRules
    ) -> Comparison:
        """Equal bodies (the usual case) and small ones compare here, cheaply; larger ones
        that differ in the worker process, unless it cannot take or answer them."""
        comparer = self._comparer
        if comparer is not None and len(a.body) + len(b.body) >= self._offload_bytes and a.body != b.body:
            answer = comparer.compare(route, a, b)
            got = None if answer is None else await answer
            if got is not None:
                return got
        return compare(a, b, rules)
