"""The proxy's own stalls during a measured run, from its event-loop lag histogram
(`shadowproxy_event_loop_lag_seconds`, a 10 ms timer's lateness, summed over workers).

A p99 on this 2-core machine moves from run to run by more than most changes move it; how
often the proxy's loop was late by more than STALL_S says whether the proxy (and not the
machine, or wrk) put the tail there.
"""

from __future__ import annotations

import urllib.request

from prometheus_client.parser import text_string_to_metric_families

METRIC = "shadowproxy_event_loop_lag_seconds"
# The histogram's bucket edges are 2, 5, 10 ms...: late by more than 2 ms is a stall that a
# request arriving then waits through, longer than a whole request takes at p50.
STALL_S = 0.002
_LOCAL = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def stall_count(text: str) -> int:
    """Ticks later than STALL_S so far, from a /metrics page (0 when the metric is absent)."""
    total = within = 0.0
    for family in text_string_to_metric_families(text):
        if family.name != METRIC:
            continue
        for s in family.samples:
            if s.name == METRIC + "_count":
                total += s.value
            elif s.name == METRIC + "_bucket" and float(s.labels["le"]) == STALL_S:
                within += s.value
    return round(total - within)


def scrape(admin_url: str) -> int | None:
    """The stall count now; None when the admin port does not answer."""
    try:
        with _LOCAL.open(f"{admin_url}/metrics", timeout=5.0) as resp:
            return stall_count(resp.read().decode())
    except OSError:
        return None
