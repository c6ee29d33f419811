"""A store that already holds evidence for many routes, for the scenario that asks what a
live verdict refresh costs the primary (`shadowproxy-61-routes`).

Written through shadowproxy's own Store, so the bench knows nothing of its schema: equal
pairs with latencies drawn around 0.2 ms, a full latency-pair reservoir per route (the
default 20,000), which is what the gate reads and ranks at every refresh.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from shadowproxy import config
from shadowproxy.exchange import Comparison, Exchange, RequestSnapshot, UpstreamResult
from shadowproxy.redact import Redactor
from shadowproxy.store import Store

JSON = (("Content-Type", "application/json"),)
_RULES = config.Config(
    primary=config.Backend(url="http://127.0.0.1:9"), shadow=config.Backend(url="http://127.0.0.1:9")
).rules_for


def seed(path: str, routes: Sequence[str], pairs: int = config.Store().latency_pairs_per_route) -> None:
    """Record `pairs` shadowed, equal requests on each route into the store at `path`."""
    rng = random.Random(7)
    store = Store(path, config.Store(flush_interval_s=3600.0), Redactor(config.Redact()), _RULES)
    store.start()
    try:
        equal = Comparison.equal("json")
        for route in routes:
            req = RequestSnapshot("GET", f"/api/{route}/1", "", (), b"", "seed", route)
            for _ in range(pairs):
                p = rng.lognormvariate(-8.5, 0.3)  # about 0.2 ms
                s = p * rng.lognormvariate(0.0, 0.1)
                store.record_request(route)
                store.record_exchange(
                    Exchange(
                        request=req,
                        primary=UpstreamResult("primary", 200, JSON, b"{}", p, 2),
                        shadow=UpstreamResult("shadow", 200, JSON, b"{}", s, 2),
                        comparison=equal,
                    )
                )
            store.flush()
    finally:
        store.close()
