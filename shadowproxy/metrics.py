"""Every Prometheus instrument shadowproxy exports, built on an injected registry.

The names and labels below are a contract: the dashboards, the alert/recording rules
(config/prometheus/rules.yml) and `report --prometheus` query them.

- shadowproxy_requests_total{route,method,code} counter: responses given to clients.
- shadowproxy_upstream_requests_total{backend,route,method,code} counter: backend calls; `code` is
  the status, or `error` / `timeout` when the call failed (an error wins over a status).
- shadowproxy_upstream_duration_seconds{backend,route,method} histogram: time to the full
  response, buckets evidence.LATENCY_BUCKETS (0.5 is one: "over 500 ms" is exact). Timeouts
  are observed at their duration; transport errors are only counted.
- shadowproxy_comparisons_total{route,method,result} counter: compared pairs, match / mismatch.
- shadowproxy_mismatches_total{route,method,part} counter: mismatching pairs by part
  (status, headers, body).
- shadowproxy_field_mismatches_total{route,field} counter: mismatching pairs by field path,
  array indices folded to `[*]` (`line:<n>` to `line:*`); the first `max_fields_per_route`
  fields per route (per process) get a label, the rest count as `other`.
- shadowproxy_hashed_only_total{route} counter: pairs too large to diff, compared by hash.
- shadowproxy_shadow_skipped_total{route,reason} counter: requests not shadowed, by reason
  (sampled_out, unsafe_method, body_too_large, saturated, compare_busy, circuit_open, websocket,
  disabled).
- shadowproxy_shadow_in_flight gauge (multiprocess: livesum): shadow calls running now.
- shadowproxy_shadow_dropped_total{reason} counter: internal drops (store queue full, a batch lost,
  a pair that never completed or was abandoned at shutdown); at most 16 distinct reasons, then `other`.
- shadowproxy_background_task_failures_total counter: background work that raised (tasks, pair comparisons).
- shadowproxy_verdict{route} gauge (multiprocess: livemostrecent): 1 GO, 0 INCONCLUSIVE, -1 NO-GO.
- shadowproxy_build_info{version} gauge (multiprocess: max): always 1.

`backend` is primary, shadow or secondary. `method` is one of config.STANDARD_METHODS or
`other` (see normalize_method). `route` is the router's label, already capped.

A shadow error, as the rules count it, is `code=~"5..|error|timeout"` on backend="shadow".
`exchange()` counts comparisons only: the lead calls `upstream()` once per backend call.

Several worker processes (`workers: N`):
1. the parent calls `prepare_multiprocess(dir)` before starting any worker: it empties the
   directory and sets PROMETHEUS_MULTIPROC_DIR in os.environ, which the workers inherit;
2. workers must be *spawned* (multiprocessing "spawn" context or a subprocess), or forked
   before anything imported prometheus_client: prometheus_client picks its value storage
   when it is first imported. `Metrics()` raises if the variable is set but the import
   came first, rather than silently exporting one worker's numbers;
3. each worker builds its own `Metrics()`; `render()` / `scrape_registry` then aggregate
   every worker's files, so whichever worker answers the scrape reports the sum;
4. when a worker exits, the parent calls `worker_exited(pid)` so its in-flight and
   verdict gauges stop counting.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Final, TypeVar

import prometheus_client
from prometheus_client import (
    CONTENT_TYPE_PLAIN_0_0_4,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
    values,
)
from prometheus_client.metrics import MetricWrapperBase

from shadowproxy import __version__
from shadowproxy.buckets import bucket_index
from shadowproxy.config import STANDARD_METHODS
from shadowproxy.evidence import LATENCY_BUCKETS
from shadowproxy.exchange import PARTS, SKIP_REASONS, Backend, ErrorKind, Exchange, Part, SkipReason
from shadowproxy.jsonpath import generic_path
from shadowproxy.memo import Memo

# A Final of this module's own: compiled, each use is a static load, not a lookup in the
# module's dict (an imported name is looked up on every use).
_LATENCY: Final = LATENCY_BUCKETS

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
OTHER = "other"
KNOWN_DROP_REASONS = ("store_queue_full", "store_batch_lost", "pair_expired", "pair_abandoned")
VERDICT_VALUES = {"GO": 1, "INCONCLUSIVE": 0, "NO-GO": -1}

# The loop timer's clock is libuv's, in whole milliseconds: lags under 2 ms are its noise.
LOOP_LAG_BUCKETS = (0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)

_METHODS = frozenset(STANDARD_METHODS)
_MAX_DROP_REASONS = 16
_MAX_FIELD_LABEL = 160
# Only prometheus_client's own file names, so a mistyped directory loses nothing else.
_MULTIPROC_FILES = ("counter_*.db", "gauge_*.db", "histogram_*.db", "summary_*.db")


def normalize_method(method: str) -> str:
    """A standard method in upper case, or `other`: clients choose methods, labels must stay bounded."""
    if method in _METHODS:
        return method
    upper = method.upper()
    return upper if upper in _METHODS else OTHER


# (route, generic field path) pairs remembered with their label, at most.
_MAX_PATH_CACHE = 4096


def field_label(path: str) -> str:
    """The label for a differing field: array indices folded (jsonpath.generic_path, the
    one definition), so `$.data[3].title` and `$.data[4].title` are one field and do not
    use up the route's label budget."""
    return generic_path(path)[:_MAX_FIELD_LABEL]


K = TypeVar("K", bound=tuple[object, ...])
M = TypeVar("M", bound=MetricWrapperBase)


def _child(cache: dict[K, M], metric: M, key: K) -> M:
    """The metric's child for these label values, made once (labels() validates and locks)."""
    child = cache.get(key)
    if child is None:
        child = cache[key] = metric.labels(*key)
    return child


def _bump(counts: dict[K, list[int]], key: K) -> None:
    """Count one for `key`. A one-item list per key, not `d[k] = d.get(k, 0) + 1`: in place,
    one dict lookup instead of two; with a tuple key each costs about 650 instructions
    compiled (callgrind), for every request and every comparison."""
    cell = counts.get(key)
    if cell is None:
        counts[key] = [1]
    else:
        cell[0] += 1


class _Calls:
    """One backend, route and method's calls since the last flush: a count per code, and
    the latency histogram's pending observations (_pending). Together, so a call costs one
    lookup of a tuple key, not two."""

    __slots__ = ("codes", "durations")

    def __init__(self) -> None:
        self.codes: dict[str | int, int] = {}
        self.durations = _pending(_LATENCY)


def _pending(bounds: tuple[float, ...]) -> list[float]:
    """A histogram's observations waiting for a flush: a count per bucket (+Inf last),
    then their sum. _observe adds to it, _add_to_histogram hands it on."""
    return [0.0] * (len(bounds) + 2)


def _observe(pending: list[float], bounds: tuple[float, ...], value: float) -> None:
    pending[bucket_index(bounds, value)] += 1
    pending[-1] += value


def _add_to_histogram(hist: Histogram, pending: list[float]) -> None:
    """Add a batch of observations (count per bucket, then their sum) to a histogram child.

    prometheus_client has no public call for this, only observe() per value; its buckets
    and sum are value objects (also in multiprocess mode) that take an inc. Pinned by
    tests/test_metrics.py against observe() itself, so a library change fails the suite.
    """
    buckets = hist._buckets
    for i, n in enumerate(pending[:-1]):
        if n:
            buckets[i].inc(n)
    hist._sum.inc(pending[-1])


def prepare_multiprocess(directory: str) -> None:
    """Called by the parent before starting workers: empty `directory` (create it if
    needed) and export PROMETHEUS_MULTIPROC_DIR so every worker writes there."""
    path = Path(directory)
    path.mkdir(parents=True, exist_ok=True)
    for pattern in _MULTIPROC_FILES:
        for f in path.glob(pattern):
            f.unlink()
    os.environ[MULTIPROC_ENV] = str(path)


def worker_exited(pid: int, directory: str | None = None) -> None:
    """Called by the parent when a worker exits: its live gauges stop counting."""
    multiprocess.mark_process_dead(pid, directory)  # type: ignore[no-untyped-call]


def multiprocess_registry(directory: str) -> CollectorRegistry:
    """A registry that aggregates every process's files in `directory` at each scrape."""
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=directory)  # type: ignore[no-untyped-call]
    return registry


class Metrics:
    """The instruments, with their label children cached: `.labels()` costs a few µs and
    `request()`/`upstream()` run for every request. The caches are bounded because every
    label value is (routes by the router, methods by normalize_method, codes by HTTP)."""

    def __init__(self, registry: CollectorRegistry | None = None, *, max_fields_per_route: int = 20) -> None:
        self.registry = CollectorRegistry() if registry is None else registry
        self.max_fields_per_route = max_fields_per_route
        self.multiprocess_dir = os.environ.get(MULTIPROC_ENV) or None
        if self.multiprocess_dir is not None and values.ValueClass is values.MutexValue:
            raise RuntimeError(
                f"{MULTIPROC_ENV} is set but prometheus_client was imported before it was: "
                "start workers with the spawn method, or set the variable before importing shadowproxy"
            )
        # A `_created` series per child doubles the series count and nothing here reads it.
        prometheus_client.disable_created_metrics()  # type: ignore[no-untyped-call]
        r = self.registry
        self._requests = Counter(
            "shadowproxy_requests_total",
            "Responses given to clients.",
            ["route", "method", "code"],
            registry=r,
        )
        self._upstream = Counter(
            "shadowproxy_upstream_requests_total",
            "Calls to a backend; code is the HTTP status, or error/timeout when there was none.",
            ["backend", "route", "method", "code"],
            registry=r,
        )
        self._duration = Histogram(
            "shadowproxy_upstream_duration_seconds",
            "Time from sending the request to the backend until its full response (timeouts included).",
            ["backend", "route", "method"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self._comparisons = Counter(
            "shadowproxy_comparisons_total",
            "Primary/shadow pairs compared, by result (match or mismatch).",
            ["route", "method", "result"],
            registry=r,
        )
        self._mismatches = Counter(
            "shadowproxy_mismatches_total",
            "Mismatching pairs by the part that differed (status, headers, body).",
            ["route", "method", "part"],
            registry=r,
        )
        self._fields = Counter(
            "shadowproxy_field_mismatches_total",
            "Mismatching pairs by differing field (array indices folded; rare fields as 'other').",
            ["route", "field"],
            registry=r,
        )
        self._hashed = Counter(
            "shadowproxy_hashed_only_total",
            "Pairs whose bodies were over the diff limit and were compared by hash only.",
            ["route"],
            registry=r,
        )
        self._skipped = Counter(
            "shadowproxy_shadow_skipped_total",
            "Requests not sent to the shadow, by reason.",
            ["route", "reason"],
            registry=r,
        )
        self._in_flight = Gauge(
            "shadowproxy_shadow_in_flight",
            "Shadow calls running now.",
            registry=r,
            multiprocess_mode="livesum",
        )
        self._dropped = Counter(
            "shadowproxy_shadow_dropped_total",
            "Shadow work dropped in the proxy (store queue full or batch lost, pair expired or abandoned).",
            ["reason"],
            registry=r,
        )
        self._task_failures = Counter(
            "shadowproxy_background_task_failures_total",
            "Background work that raised (tasks, pair comparisons).",
            registry=r,
        )
        self._loop_lag = Histogram(
            "shadowproxy_event_loop_lag_seconds",
            "How late the event loop ran a 10 ms timer: how long requests waited for the proxy itself.",
            buckets=LOOP_LAG_BUCKETS,
            registry=r,
        )
        # Known reasons start at 0, so a healthy proxy shows 0 drops, not "no data".
        for reason in KNOWN_DROP_REASONS:
            self._dropped.labels(reason)
        # Each worker judges on its own; the newest judgement is the one to show.
        self._verdict = Gauge(
            "shadowproxy_verdict",
            "Last verdict per route: 1 GO, 0 INCONCLUSIVE, -1 NO-GO.",
            ["route"],
            registry=r,
            multiprocess_mode="livemostrecent",
        )
        build = Gauge(
            "shadowproxy_build_info",
            "Always 1; the version as a label.",
            ["version"],
            registry=r,
            multiprocess_mode="max",
        )
        build.labels(__version__).set(1)

        self._req_children: dict[tuple[str, str, int], Counter] = {}
        self._up_children: dict[tuple[str, str, str, str], Counter] = {}
        self._dur_children: dict[tuple[str, str, str], Histogram] = {}
        self._skip_children: dict[tuple[str, str], Counter] = {}
        self._cmp_children: dict[tuple[str, str, str], Counter] = {}
        self._field_names: dict[str, set[str]] = {}
        # labels() validates and locks on every call; a mismatch touches several series,
        # so their children are kept. Keys are bounded: routes and parts are, and field
        # children are keyed by label (capped per route); raw paths map to a label only
        # up to _MAX_PATH_CACHE of them.
        self._part_children: dict[tuple[str, str, str], Counter] = {}
        self._field_children: dict[tuple[str, str], Counter] = {}
        self._path_labels: Memo[tuple[str, str], str] = Memo(_MAX_PATH_CACHE)
        self._drop_reasons: set[str] = set()
        self._zeroed: set[str] = set()  # routes whose fixed-label series exist
        self._scrape: CollectorRegistry | None = None
        # What the hot path counted since the last flush(), as plain numbers in plain dicts
        # (a collections.Counter's `c[k] += 1` took twice the time). The per-request counts
        # are one-item lists, bumped in place (_bump); the rarer ones plain ints.
        self._p_req: dict[tuple[str, str, int], list[int]] = {}
        self._p_calls: dict[tuple[Backend, str, str], _Calls] = {}
        self._p_skip: dict[tuple[str, SkipReason], list[int]] = {}
        self._p_cmp: dict[tuple[str, str, bool], list[int]] = {}
        self._p_hashed: dict[str, int] = {}
        self._p_parts: dict[tuple[str, str, Part], int] = {}
        self._p_fields: dict[tuple[str, str], int] = {}
        self._p_in_flight = 0  # the gauge's change since the last flush
        self._p_lag = _pending(LOOP_LAG_BUCKETS)

    # ------------------------------------------------------------------ hot path
    # Per-request counts wait here as plain numbers and reach prometheus_client in batches
    # (flush(): before every render, and every second from the sidecar). In the running
    # proxy a Counter.inc plus a Histogram.observe cost ~10 us per backend call, timed in
    # the process under `make bench` load (2.4 us in a tight loop: the locks and the bucket
    # loop miss the caches between requests), and there are two per shadowed request.

    def request(self, route: str, method: str, code: int) -> None:
        """A response given to a client."""
        _bump(self._p_req, (route, method, code))

    def upstream(
        self,
        backend: Backend,
        route: str,
        method: str,
        status: int | None,
        error: ErrorKind | None,
        duration_s: float,
    ) -> None:
        """One backend call. An error wins over a status (headers came, the body did not):
        the call failed. A timeout is observed at its duration because it was slow for
        whoever waited; a transport error took no meaningful time and is only counted."""
        code = error if error is not None else ("error" if status is None else status)
        key = (backend, route, method)
        calls = self._p_calls.get(key)
        if calls is None:
            calls = self._p_calls[key] = _Calls()
        codes = calls.codes
        codes[code] = codes.get(code, 0) + 1  # a small int or a str: cheap to hash and match
        if (error is None and status is not None) or error == "timeout":
            _observe(calls.durations, _LATENCY, duration_s)

    def skipped(self, route: str, reason: SkipReason) -> None:
        _bump(self._p_skip, (route, reason))

    def flush(self) -> None:
        """Hand what the hot path counted to prometheus_client. Call it on the event loop."""
        req, self._p_req = self._p_req, {}
        for (route, method, code), (n,) in req.items():
            self._zero_route(route)
            _child(self._req_children, self._requests, (route, normalize_method(method), code)).inc(n)
        calls, self._p_calls = self._p_calls, {}
        for (backend, route, method), c in calls.items():
            m = normalize_method(method)
            for ucode, n in c.codes.items():
                _child(self._up_children, self._upstream, (backend, route, m, str(ucode))).inc(n)
            if any(c.durations):  # observed: not only transport errors
                hist = _child(self._dur_children, self._duration, (backend, route, m))
                _add_to_histogram(hist, c.durations)
        skip, self._p_skip = self._p_skip, {}
        for (route, reason), (n,) in skip.items():
            self._zero_route(route)
            self._skip_children[(route, reason)].inc(n)
        cmp, self._p_cmp = self._p_cmp, {}
        for (route, method, match), (n,) in cmp.items():
            m = normalize_method(method)
            self._zero_route(route)
            self._zero_pair(route, m)
            self._cmp_children[(route, m, "match" if match else "mismatch")].inc(n)
        hashed, self._p_hashed = self._p_hashed, {}
        for route, n in hashed.items():
            self._hashed.labels(route).inc(n)
        parts, self._p_parts = self._p_parts, {}
        for (route, method, part), n in parts.items():
            _child(self._part_children, self._mismatches, (route, normalize_method(method), part)).inc(n)
        fields, self._p_fields = self._p_fields, {}
        for key2, n in fields.items():
            _child(self._field_children, self._fields, key2).inc(n)
        lag, self._p_lag = self._p_lag, _pending(LOOP_LAG_BUCKETS)
        if any(lag):
            _add_to_histogram(self._loop_lag, lag)
        in_flight, self._p_in_flight = self._p_in_flight, 0
        if in_flight:
            self._in_flight.inc(in_flight)

    def _zero_route(self, route: str) -> None:
        """Create a route's fixed-label series at 0 the first time it is seen.

        Prometheus cannot see the first increment of a series it first scrapes at 1 or
        more: rate() and increase() start from that value. So a saturation burst on a new
        route would never fire its alert, and `report --prometheus` would miss counts.
        Bounded: routes are capped by the router.
        """
        if route in self._zeroed:
            return
        self._zeroed.add(route)
        for reason in SKIP_REASONS:
            self._skip_children[(route, reason)] = self._skipped.labels(route, reason)
        self._hashed.labels(route)

    def _zero_pair(self, route: str, method: str) -> None:
        """Like _zero_route, for the series of a route and method's compared pairs."""
        if (route, method, "match") in self._cmp_children:
            return
        for result in ("match", "mismatch"):
            self._cmp_children.setdefault(
                (route, method, result), self._comparisons.labels(route, method, result)
            )
        for part in PARTS:
            self._mismatches.labels(route, method, part)

    def shadow_in_flight(self, delta: int) -> None:
        # Twice per shadowed request; Gauge.inc takes a lock each time. Batched like the rest.
        self._p_in_flight += delta

    # ------------------------------------------------------------------ per shadowed pair

    def exchange(self, ex: Exchange) -> None:
        """Count the comparison of a shadowed pair; nothing when there was none to compare
        (the shadow failed: `upstream()` already counted that)."""
        c = ex.comparison
        if c is None:
            return
        route = ex.request.route
        method = ex.request.method
        _bump(self._p_cmp, (route, method, c.match))
        if c.hashed_only:
            self._p_hashed[route] = self._p_hashed.get(route, 0) + 1
        if c.match:
            return
        # Tallied like the comparison itself, so a scrape (after flush) never sees more
        # mismatching parts or fields than mismatching pairs.
        # Sets, not dict.fromkeys (a generic call from compiled code): only membership counts.
        for part in set(c.parts):
            pkey = (route, method, part)
            self._p_parts[pkey] = self._p_parts.get(pkey, 0) + 1
        # One count per pair and field, like evidence.FieldCount.raw, however many
        # array elements differed in it (paths are generic); a set, as two long paths may
        # share a truncated label.
        for name in {self._field(route, p) for p in c.paths}:
            fkey = (route, name)
            self._p_fields[fkey] = self._p_fields.get(fkey, 0) + 1

    def _field(self, route: str, path: str) -> str:
        label = self._path_labels.get((route, path))
        if label is not None:
            return label
        return self._path_labels.keep((route, path), self._field_label(route, path))

    def _field_label(self, route: str, path: str) -> str:
        label = field_label(path)
        seen = self._field_names.setdefault(route, set())
        if label in seen:
            return label
        if len(seen) < self.max_fields_per_route:
            seen.add(label)
            return label
        return OTHER

    # ------------------------------------------------------------------ rare events

    def dropped(self, reason: str) -> None:
        if reason not in self._drop_reasons:
            if len(self._drop_reasons) >= _MAX_DROP_REASONS:
                reason = OTHER
            else:
                self._drop_reasons.add(reason)
        self._dropped.labels(reason).inc()

    def loop_lag(self, seconds: float) -> None:
        """Fits loopwatch.LoopWatch(observe=...); batched like the rest (observe() is
        interpreted and takes a lock, 100 times a second)."""
        _observe(self._p_lag, LOOP_LAG_BUCKETS, seconds)

    def task_failed(self, exc: BaseException) -> None:
        """Fits tasks.TaskTracker(on_failure=...)."""
        self._task_failures.inc()

    def set_verdicts(self, verdicts: Mapping[str, int]) -> None:
        """Route -> 1 (GO), 0 (INCONCLUSIVE), -1 (NO-GO); VERDICT_VALUES maps the names.
        Routes absent from the mapping keep their last value."""
        for route, v in verdicts.items():
            if v not in (-1, 0, 1):
                raise ValueError(f"verdict for route {route!r} must be -1, 0 or 1, not {v!r}")
            self._verdict.labels(route).set(v)

    # ------------------------------------------------------------------ exposition

    @property
    def scrape_registry(self) -> CollectorRegistry:
        """What /metrics must serve: this registry, or in multiprocess mode one that sums
        every worker's files (prometheus_client.aiohttp.make_aiohttp_handler takes it)."""
        if self._scrape is None:
            d = self.multiprocess_dir
            self._scrape = self.registry if d is None else multiprocess_registry(d)
        return self._scrape

    def render(self) -> tuple[bytes, str]:
        """Body and Content-Type for the admin /metrics handler (text format 0.0.4)."""
        self.flush()
        return generate_latest(self.scrape_registry), CONTENT_TYPE_PLAIN_0_0_4
