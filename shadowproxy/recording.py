"""Where the request path reports what happened: each event goes to the metrics (cheap
counters) and the store (in-memory aggregation, written off the loop).

A class of its own, not methods of app.Sidecar, so the compiled build compiles it: the
engines call it three to five times per shadowed request.
"""

from __future__ import annotations

from shadowproxy.exchange import Exchange, SkipReason, UpstreamResult
from shadowproxy.metrics import Metrics
from shadowproxy.store import Store


class Recorder:
    def __init__(self, metrics: Metrics, store: Store) -> None:
        self._metrics = metrics
        self._store = store

    def request(self, route: str, method: str, code: int) -> None:
        self._metrics.request(route, method, code)
        self._store.record_request(route)

    def upstream(self, route: str, method: str, result: UpstreamResult) -> None:
        self._metrics.upstream(result.backend, route, method, result.status, result.error, result.latency_s)

    def skipped(self, route: str, method: str, reason: SkipReason) -> None:
        self._metrics.skipped(route, reason)
        self._store.record_skip(route, reason)

    def exchange(self, ex: Exchange) -> None:
        self._metrics.exchange(ex)
        self._store.record_exchange(ex)

    def pair_lost(self, route: str, reason: str) -> None:
        """A shadowed pair dropped before it was recorded: counted as dropped, and in the
        store under its route, so that the route's requests still add up."""
        self._metrics.dropped(reason)
        self._store.record_lost(route, reason)

    def shadow_in_flight(self, delta: int) -> None:
        self._metrics.shadow_in_flight(delta)
