"""Evidence from Prometheus: the store's counts, summed across every sidecar instance.

One instant query per metric, `sum by (route, ...) (increase(metric[window]))`. increase()
extrapolates to the window's edges, so values are rounded to whole numbers and made
consistent (mismatches never exceed compared pairs, buckets never decrease). Prometheus
holds no paired latencies and no samples: the gate then compares the two histograms'
quantile buckets and says so, and the report has no examples.

A CLI call, so plain blocking urllib is enough.
"""

from __future__ import annotations

import json
import math
import re
import urllib.error
import urllib.parse
import urllib.request
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from shadowproxy.config import Config
from shadowproxy.evidence import LATENCY_BUCKETS, Evidence, FieldCount, Histogram, RouteEvidence

MAX_FIELDS = 20
# Prometheus durations: 1h, 30m, 1h30m, 7d ... Checked because it is pasted into PromQL.
_DURATION = re.compile(r"(?:[0-9]+(?:ms|s|m|h|d|w|y))+")
_SIDES = 'backend=~"primary|shadow"'


class PrometheusError(Exception):
    """Prometheus could not be asked, or did not answer with a vector."""


@dataclass(frozen=True, slots=True)
class Point:
    labels: dict[str, str]
    value: float  # increase(), extrapolated, so not a whole number


def queries(window: str) -> dict[str, str]:
    """The PromQL per purpose; `window` must be a Prometheus duration (ValueError otherwise)."""
    if not _DURATION.fullmatch(window):
        raise ValueError(f"--window {window!r} is not a Prometheus duration (like 1h, 30m, 1h30m, 7d)")

    def inc(by: str, metric: str) -> str:
        return f"sum by ({by}) (increase({metric}[{window}]))"

    return {
        "requests": inc("route", "shadowproxy_requests_total"),
        "shadow_calls": inc("route, code", 'shadowproxy_upstream_requests_total{backend="shadow"}'),
        "comparisons": inc("route, result", "shadowproxy_comparisons_total"),
        "parts": inc("route, part", "shadowproxy_mismatches_total"),
        "fields": inc("route, field", "shadowproxy_field_mismatches_total"),
        "skipped": inc("route, reason", "shadowproxy_shadow_skipped_total"),
        "hashed_only": inc("route", "shadowproxy_hashed_only_total"),
        "buckets": inc("route, backend, le", f"shadowproxy_upstream_duration_seconds_bucket{{{_SIDES}}}"),
        "latency_sum": inc("route, backend", f"shadowproxy_upstream_duration_seconds_sum{{{_SIDES}}}"),
    }


def evidence_from_prometheus(base_url: str, window: str, cfg: Config, timeout_s: float = 30.0) -> Evidence:
    """Evidence over the last `window` from the Prometheus at `base_url`.

    Declared routes without any series are still judged (as unseen) because the gate reads
    them from `cfg`; raises ValueError for a bad window, PrometheusError when Prometheus fails.
    """
    plan = queries(window)
    url, opener = _opener(base_url)
    results = {name: query(url, q, timeout_s, opener) for name, q in plan.items()}
    routes = sorted({p.labels["route"] for pts in results.values() for p in pts if "route" in p.labels})
    built = tuple(_route(name, results) for name in routes)
    declared = ", ".join(r.name for r in cfg.routes if r.name not in routes)
    note = f"; no series for declared {declared}" if declared else ""
    return Evidence(
        routes=built,
        source=f"prometheus:{url}",
        window=f"last {window} (increase() summed over every instance){note}",
    )


def _opener(base_url: str) -> tuple[str, urllib.request.OpenerDirector]:
    """The URL without credentials (it is shown in the report) and an opener that sends them."""
    parts = urllib.parse.urlsplit(base_url)
    if parts.username is None:
        return base_url, urllib.request.build_opener()
    clean = urllib.parse.urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))
    passwords = urllib.request.HTTPPasswordMgrWithPriorAuth()
    user, password = urllib.parse.unquote(parts.username), urllib.parse.unquote(parts.password or "")
    passwords.add_password(None, clean, user, password, is_authenticated=True)
    return clean, urllib.request.build_opener(urllib.request.HTTPBasicAuthHandler(passwords))


def query(
    base_url: str, promql: str, timeout_s: float = 30.0, opener: urllib.request.OpenerDirector | None = None
) -> list[Point]:
    """One instant query: the vector's points (NaN and negative values read as 0)."""
    url = f"{base_url.rstrip('/')}/api/v1/query?{urllib.parse.urlencode({'query': promql})}"
    try:
        with (opener or urllib.request.build_opener()).open(url, timeout=timeout_s) as resp:
            payload = json.loads(resp.read())
    except urllib.error.HTTPError as e:
        raise PrometheusError(f"Prometheus refused {promql!r}: HTTP {e.code} {_error_text(e)}") from None
    except (urllib.error.URLError, TimeoutError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise PrometheusError(f"cannot reach Prometheus at {base_url}: {reason}") from None
    except ValueError:
        raise PrometheusError(f"Prometheus at {base_url} did not answer JSON") from None
    data = payload.get("data") if isinstance(payload, dict) else None
    if not isinstance(data, dict) or payload.get("status") != "success" or data.get("resultType") != "vector":
        raise PrometheusError(f"unexpected answer to {promql!r}: {str(payload)[:200]}")
    return [Point(dict(item.get("metric", {})), _count(item.get("value"))) for item in data.get("result", [])]


def _error_text(e: urllib.error.HTTPError) -> str:
    try:
        body = json.loads(e.read())
        return str(body.get("error", ""))[:300]
    except (ValueError, OSError, AttributeError):
        return str(e.reason)


def _count(value: Any) -> float:
    try:
        x = float(value[1])
    except (TypeError, ValueError, IndexError):
        return 0.0
    return 0.0 if math.isnan(x) or math.isinf(x) or x <= 0 else x


def _by(points: list[Point], route: str, label: str) -> dict[str, float]:
    out: dict[str, float] = defaultdict(float)
    for p in points:
        if p.labels.get("route") == route:
            out[p.labels.get(label, "")] += p.value
    return dict(out)


def _counts(values: dict[str, float]) -> dict[str, int]:
    """Whole counts, rounded once after summing; zeros dropped."""
    return {k: n for k, v in sorted(values.items()) if (n := round(v)) > 0}


def _total(points: list[Point], route: str) -> int:
    return round(sum(p.value for p in points if p.labels.get("route") == route))


def _route(route: str, r: dict[str, list[Point]]) -> RouteEvidence:
    codes = _by(r["shadow_calls"], route, "code")
    shadowed = round(sum(codes.values()))
    errors = round(sum(v for code, v in codes.items() if code in ("error", "timeout") or _is_5xx(code)))
    results = _by(r["comparisons"], route, "result")
    compared = round(sum(results.values()))
    fields = sorted(_counts(_by(r["fields"], route, "field")).items(), key=lambda x: (-x[1], x[0]))
    return RouteEvidence(
        route=route,
        requests=_total(r["requests"], route),
        shadowed=shadowed,
        compared=compared,
        mismatches=min(round(results.get("mismatch", 0.0)), compared),
        mismatches_by_part=_counts(_by(r["parts"], route, "part")),
        shadow_errors=min(errors, shadowed),
        shadow_timeouts=round(codes.get("timeout", 0.0)),
        skipped=_counts(_by(r["skipped"], route, "reason")),
        primary_latency=_histogram(r, route, "primary"),
        shadow_latency=_histogram(r, route, "shadow"),
        fields=tuple(FieldCount(path=f, raw=n) for f, n in fields[:MAX_FIELDS]),
        hashed_only=_total(r["hashed_only"], route),
    )


def _is_5xx(code: str) -> bool:
    return code.isdigit() and 500 <= int(code) <= 599


def _histogram(r: dict[str, list[Point]], route: str, backend: str) -> Histogram:
    mine = [p for p in r["buckets"] if p.labels.get("route") == route and p.labels.get("backend") == backend]
    by_le: dict[float, int] = {}
    for p in mine:
        try:
            by_le[float(p.labels.get("le", "nan"))] = round(p.value)
        except ValueError:
            continue
    counts: list[int] = []
    running = 0
    for bound in LATENCY_BUCKETS:
        # Rounding can make a cumulative bucket dip below the previous one.
        hit = next((v for le, v in by_le.items() if math.isclose(le, bound, rel_tol=1e-9)), running)
        running = max(running, hit)
        counts.append(running)
    total = max(running, by_le.get(math.inf, 0))
    sum_s = sum(
        p.value
        for p in r["latency_sum"]
        if p.labels.get("route") == route and p.labels.get("backend") == backend
    )
    return Histogram(bounds=LATENCY_BUCKETS, counts=tuple(counts), total=total, sum_s=sum_s)
