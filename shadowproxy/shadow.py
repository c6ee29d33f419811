"""Which requests are shadowed, and the bounded background work that shadows them.

Rule 1 lives here: nothing in this module may delay, fail or alter the primary response.
`ShadowDispatcher.try_start` never blocks and never raises into the caller. A shadowed
request is a `Shadowed`: its answers come in by callbacks (the shadow's from the pool, or
from a tracked task where the engine needs one; the primary's from the handler), and the
last one in compares and records the pair, failures included, as data.
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
from shadowproxy.fast.deadlines import Deadlines
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


class Shadowed:
    """One shadowed request until its pair is recorded: the answers as they come in.

    No task and no future of its own: on the fast engine both cost more than comparing an
    equal pair. To the dispatcher's deadline it looks like a future that can time out
    (`done`, `set_exception`): with no task whose `finally` would end it, the deadline is what
    guarantees that every pair ends, whatever answer never comes."""

    __slots__ = ("_owner", "client_host", "missing", "over", "primary", "req", "secondary", "shadow")

    def __init__(self, owner: ShadowDispatcher, req: RequestSnapshot, client_host: str | None) -> None:
        self._owner = owner
        self.req = req
        self.client_host = client_host
        self.primary: UpstreamResult | None = None
        self.shadow: UpstreamResult | None = None
        self.secondary: UpstreamResult | None = None
        self.missing = 2  # answers still to come: the primary's, the shadow's (a secondary's)
        self.over = False  # recorded, dropped or abandoned: late answers are ignored

    def done(self) -> bool:
        return self.over

    def primary_in(self, primary: UpstreamResult) -> None:
        """The primary's answer (forwarding.primary_done)."""
        if self.primary is None and not self.over:
            self.primary = primary
            self._owner._answer_in(self)

    def set_exception(self, exc: BaseException) -> None:
        """An answer did not come in time (the dispatcher's deadline)."""
        self._owner._expired(self)

    def shadow_in(self, result: UpstreamResult | None) -> None:
        self._owner._shadow_in(self, result)


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
        # Both calls run at once, each within its own timeout (a retried shadow call fails
        # fast the first time): a pair still waiting after both and a second is dropped.
        self._pair_timeout_s = cfg.primary.timeout_s + shadow.cfg.timeout_s + 1.0
        self._calls: set[Shadowed] = set()
        # Made on the loop, at the first pair (a dispatcher is built before the loop runs).
        self._loop: asyncio.AbstractEventLoop | None = None
        self._deadlines: Deadlines | None = None
        self._idle: asyncio.Future[None] | None = None
        self._breaker = Breaker(cfg.shadowing.breaker)
        self._rules = cfg.rules_by_route()

    @property
    def in_flight(self) -> int:
        return len(self._calls)

    def try_start(self, req: RequestSnapshot, client_host: str | None) -> Shadowed | SkipReason:
        """Start shadowing `req` (the result waits for the primary's answer); or say why not
        (nothing started): the in-flight cap is full or every shadow connection is busy, the
        comparison worker is behind, or the breaker is open because the shadow keeps failing."""
        if len(self._calls) >= self._max or self._sending >= self._max_sending:
            return "saturated"
        if self._comparer is not None and self._comparer.busy:
            # Shed here, before anyone knows whether the answers differ: dropping differing
            # pairs at the worker would bias the mismatch rate down. A reason of its own: the
            # cure is not a faster shadow but fewer (or smaller) differences to explain.
            return "compare_busy"
        if not self._breaker.allow():
            return "circuit_open"
        call = Shadowed(self, req, client_host)
        self._calls.add(call)
        self._watch(call)
        self._sending += 1
        self._rec.shadow_in_flight(1)
        secondary = self._secondary
        if (
            secondary is not None
            and req.method in config.SAFE_METHODS
            and self._secondary_sending < secondary.cfg.max_connections
        ):
            # Its evidence is optional: with its pool full, this pair goes without it.
            self._secondary_sending += 1
            call.missing += 1
            self._tracker.spawn(self._fetch_secondary(secondary, call), name=f"secondary {req.request_id}")
        if not self._shadow.begin_fetch(req, client_host, self._capture, call.shadow_in):
            self._tracker.spawn(self._fetch(call), name=f"shadow {req.request_id}")
        return call

    async def idle(self, timeout_s: float) -> int:
        """Wait up to `timeout_s` until no pair is in flight; abandon the rest (they will not
        be recorded) and return how many."""
        if self._calls:
            self._idle = asyncio.get_running_loop().create_future()
            try:
                await asyncio.wait_for(asyncio.shield(self._idle), timeout_s)
            except TimeoutError:
                pass
            finally:
                self._idle = None
        left = list(self._calls)
        for call in left:
            self._finish(call)
            self._rec.pair_lost(call.req.route, "pair_abandoned")
        if self._deadlines is not None:
            self._deadlines.close()  # nothing left to wait for; the next wait arms it again
        return len(left)

    # ---- the answers coming in

    async def _fetch(self, call: Shadowed) -> None:
        call.shadow_in(await self._shadow.fetch(call.req, call.client_host, self._capture))

    async def _fetch_secondary(self, secondary: Upstream, call: Shadowed) -> None:
        try:
            result = await secondary.fetch(call.req, call.client_host, self._capture)
        finally:
            self._secondary_sending -= 1
        if not call.over:
            call.secondary = result if result.ok else None
            self._answer_in(call)

    def _shadow_in(self, call: Shadowed, result: UpstreamResult | None) -> None:
        if call.over:
            return
        if result is None:  # the engine asks for fetch() instead (a dead idle connection)
            self._tracker.spawn(self._fetch(call), name=f"shadow {call.req.request_id}")
            return
        self._sending -= 1
        self._breaker.record(result.error is not None)
        self._rec.upstream(call.req.route, call.req.method, result)
        call.shadow = result
        self._answer_in(call)

    def _watch(self, call: Shadowed) -> None:
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        deadlines = self._deadlines
        if deadlines is None:
            deadlines = self._deadlines = Deadlines(loop)
        deadlines.watch(call, loop.time() + self._pair_timeout_s)

    def _expired(self, call: Shadowed) -> None:
        if call.primary is None:
            log.warning("primary answer for %s never completed; shadow result dropped", call.req.request_id)
        else:  # the shadow's own timeout should have answered long before: a bug
            log.error("shadow answer for %s never came; pair dropped", call.req.request_id)
        self._finish(call)
        self._rec.pair_lost(call.req.route, "pair_expired")

    def _answer_in(self, call: Shadowed) -> None:
        call.missing -= 1
        if call.missing == 0 and not call.over:
            self._conclude(call)

    # ---- the pair

    def _conclude(self, call: Shadowed) -> None:
        """Compare and record the pair: here, or in a task when the comparison worker
        takes it. Runs in whatever answered last, so it must not raise."""
        p, s, second = call.primary, call.shadow, call.secondary
        assert p is not None and s is not None
        if self._deadlines is not None:
            # Every answer is in; a comparison in the worker has a bound of its own.
            self._deadlines.forget(call)
        try:
            rules = self._rules.get(call.req.route, self._cfg.compare)
            both = p.ok and s.ok
            if (both and self._offloads(p, s)) or (second is not None and p.ok and self._offloads(p, second)):
                self._tracker.spawn(
                    self._conclude_offloaded(call, rules), name=f"compare {call.req.request_id}"
                )
                return
            comparison = compare(p, s, rules) if both else None
            noise = compare(p, second, rules).paths if second is not None and p.ok else ()
            self._rec.exchange(_exchange(call, comparison, noise))
        except Exception as e:
            self._tracker.failed(e, f"compare {call.req.request_id}")
        self._finish(call)

    async def _conclude_offloaded(self, call: Shadowed, rules: config.CompareRules) -> None:
        p, s, second = call.primary, call.shadow, call.secondary
        assert p is not None and s is not None
        try:
            comparison = await self._compare(call.req.route, p, s, rules) if p.ok and s.ok else None
            noise: tuple[str, ...] = ()
            if second is not None and p.ok:
                noise = (await self._compare(call.req.route, p, second, rules)).paths
            if not call.over:
                self._rec.exchange(_exchange(call, comparison, noise))
        finally:
            self._finish(call)

    def _offloads(self, a: UpstreamResult, b: UpstreamResult) -> bool:
        """Equal bodies (the usual case) and small ones compare on the loop, cheaply; larger
        ones that differ in the worker process."""
        return (
            self._comparer is not None
            and len(a.body) + len(b.body) >= self._offload_bytes
            and a.body != b.body
        )

    async def _compare(
        self, route: str, a: UpstreamResult, b: UpstreamResult, rules: config.CompareRules
    ) -> Comparison:
        """In the worker when it should and can take it, else here."""
        comparer = self._comparer
        if comparer is not None and self._offloads(a, b):
            answer = comparer.compare(route, a, b)
            got = None if answer is None else await answer
            if got is not None:
                return got
        return compare(a, b, rules)

    def _finish(self, call: Shadowed) -> None:
        """The pair ends: recorded, dropped or abandoned. Late answers are ignored."""
        if call.over:
            return
        call.over = True
        if call.shadow is None:
            self._sending -= 1  # abandoned mid-call: its connection is the pool's to drop
        self._calls.discard(call)
        self._rec.shadow_in_flight(-1)
        idle = self._idle
        if idle is not None and not self._calls and not idle.done():
            idle.set_result(None)


def _exchange(call: Shadowed, comparison: Comparison | None, noise: tuple[str, ...]) -> Exchange:
    assert call.primary is not None and call.shadow is not None
    return Exchange(
        request=call.req,
        primary=call.primary,
        shadow=call.shadow,
        comparison=comparison,
        secondary=call.secondary,
        noise_paths=noise,
    )
