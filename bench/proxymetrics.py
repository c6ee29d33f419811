"""What the proxy itself counted during a measured row, from its /metrics before and after.

- Stalls: how often its event loop was late by more than STALL_S
  (`shadowproxy_event_loop_lag_seconds`, a 10 ms timer's lateness, summed over workers). A
  p99 on this 2-core machine moves from run to run by more than most changes move it; the
  stalls say whether the proxy (and not the machine, or wrk) put the tail there.
- Pairs compared: `shadowproxy_comparisons_total` over `shadowproxy_requests_total`, the
  share of client requests whose shadow answer was compared. A shadow that is slow or hangs
  makes the proxy skip (saturated) or give up (timeout) on most of them: its req/s are then
  those of a proxy that compares little, and the table should say so.
"""

from __future__ import annotations

import urllib.request
from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families

LAG = "shadowproxy_event_loop_lag_seconds"
REQUESTS = "shadowproxy_requests"
COMPARISONS = "shadowproxy_comparisons"
# The histogram's bucket edges are 2, 5, 10 ms...: late by more than 2 ms is a stall that a
# request arriving then waits through, longer than a whole request takes at p50.
STALL_S = 0.002
_LOCAL = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@dataclass(frozen=True, slots=True)
class Snapshot:
    stalls: int = 0  # loop ticks later than STALL_S so far
    requests: float = 0.0  # responses given to clients so far
    compared: float = 0.0  # shadow answers compared so far


def snapshot(text: str) -> Snapshot:
    """The counts on a /metrics page (0 for a metric that is absent)."""
    lag_total = lag_within = requests = compared = 0.0
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if family.name == LAG:
                if s.name == LAG + "_count":
                    lag_total += s.value
                elif s.name == LAG + "_bucket" and float(s.labels["le"]) == STALL_S:
                    lag_within += s.value
            elif family.name == REQUESTS and s.name == REQUESTS + "_total":
                requests += s.value
            elif family.name == COMPARISONS and s.name == COMPARISONS + "_total":
                compared += s.value
    return Snapshot(round(lag_total - lag_within), requests, compared)


def compared_share(before: Snapshot, after: Snapshot) -> float | None:
    """Pairs compared per client request between two snapshots; None without requests."""
    requests = after.requests - before.requests
    return (after.compared - before.compared) / requests if requests > 0 else None


def scrape(admin_url: str) -> Snapshot | None:
    """The counts now; None when the admin port does not answer."""
    try:
        with _LOCAL.open(f"{admin_url}/metrics", timeout=5.0) as resp:
            return snapshot(resp.read().decode())
    except OSError:
        return None
