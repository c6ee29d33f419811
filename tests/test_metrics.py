from __future__ import annotations

import multiprocessing
import os
from multiprocessing.synchronize import Event as MpEvent
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from shadowproxy import __version__
from shadowproxy.evidence import LATENCY_BUCKETS
from shadowproxy.exchange import (
    SKIP_REASONS,
    Comparison,
    Exchange,
    FieldDiff,
    RequestSnapshot,
    UpstreamResult,
)
from shadowproxy.metrics import (
    MULTIPROC_ENV,
    Metrics,
    field_label,
    multiprocess_registry,
    normalize_method,
    prepare_multiprocess,
    worker_exited,
)
from shadowproxy.tasks import TaskTracker


def value(m: Metrics, name: str, **labels: str) -> float | None:
    m.flush()  # the hot path tallies; prometheus_client sees the counts at a flush
    return m.registry.get_sample_value(name, labels)


def make_exchange(route: str, comparison: Comparison | None, method: str = "GET") -> Exchange:
    req = RequestSnapshot(method, "/api/x", "", (), b"", "rid", route)
    primary = UpstreamResult("primary", 200, (), b"{}", 0.01)
    shadow = UpstreamResult("shadow", 200, (), b"{}", 0.02)
    return Exchange(req, primary, shadow, comparison)


@pytest.mark.parametrize(
    ("raw", "label"),
    [
        ("GET", "GET"),
        ("get", "GET"),
        ("Patch", "PATCH"),
        ("DELETE", "DELETE"),
        ("PROPFIND", "other"),
        ("", "other"),
        ("G\u00e9T", "other"),
    ],
)
def test_normalize_method(raw: str, label: str) -> None:
    assert normalize_method(raw) == label


@pytest.mark.parametrize(
    ("path", "label"),
    [
        ("$.data[3].title", "$.data[*].title"),
        ("$.a[0][12].b", "$.a[*][*].b"),
        ("$.items[*].id", "$.items[*].id"),
        ("$['odd key'][2]", "$['odd key'][*]"),
        ("header:content-type", "header:content-type"),
        ("line:42", "line:*"),
        ("status", "status"),
    ],
)
def test_field_label(path: str, label: str) -> None:
    assert field_label(path) == label


def test_field_label_is_bounded() -> None:
    assert len(field_label("$." + "x" * 500)) <= 160
    assert len(field_label("$" + ".x" * 500)) == 160


def test_counters_and_histogram_equal_what_was_recorded() -> None:
    m = Metrics()
    for code in (200, 200, 200, 404, 503):
        m.request("user", "GET", code)
    m.request("user", "post", 201)
    m.request("user", "BREW", 418)
    durations = [0.004, 0.2, 0.5, 0.5000001, 0.6, 3.0]
    for d in durations:
        m.upstream("shadow", "user", "GET", 200, None, d)
    m.upstream("shadow", "user", "GET", None, "timeout", 10.0)
    m.upstream("shadow", "user", "GET", None, "error", 0.001)
    m.upstream("shadow", "user", "GET", 200, "error", 0.3)  # headers came, the body did not
    m.upstream("primary", "user", "GET", 502, None, 0.05)

    assert value(m, "shadowproxy_requests_total", route="user", method="GET", code="200") == 3
    assert value(m, "shadowproxy_requests_total", route="user", method="GET", code="503") == 1
    assert value(m, "shadowproxy_requests_total", route="user", method="POST", code="201") == 1
    assert value(m, "shadowproxy_requests_total", route="user", method="other", code="418") == 1

    up = "shadowproxy_upstream_requests_total"
    assert value(m, up, backend="shadow", route="user", method="GET", code="200") == len(durations)
    assert value(m, up, backend="shadow", route="user", method="GET", code="timeout") == 1
    assert value(m, up, backend="shadow", route="user", method="GET", code="error") == 2
    assert value(m, up, backend="primary", route="user", method="GET", code="502") == 1

    h = "shadowproxy_upstream_duration_seconds"
    shadow = {"backend": "shadow", "route": "user", "method": "GET"}
    # Six answers and the timeout are observed; the two transport errors are not.
    m.flush()
    assert m.registry.get_sample_value(f"{h}_count", shadow) == len(durations) + 1
    assert m.registry.get_sample_value(f"{h}_bucket", {**shadow, "le": "0.5"}) == 3  # 0.5 itself is <= 0.5
    assert m.registry.get_sample_value(f"{h}_bucket", {**shadow, "le": "0.005"}) == 1
    assert m.registry.get_sample_value(f"{h}_bucket", {**shadow, "le": "+Inf"}) == len(durations) + 1
    assert m.registry.get_sample_value(f"{h}_sum", shadow) == pytest.approx(sum(durations) + 10.0)
    assert m.registry.get_sample_value(f"{h}_count", {**shadow, "backend": "primary"}) == 1
    # A route whose calls only failed in transport has no latency series at all.
    m.upstream("shadow", "feed", "GET", None, "error", 0.001)
    m.flush()
    assert value(m, up, backend="shadow", route="feed", method="GET", code="error") == 1
    assert m.registry.get_sample_value(f"{h}_count", {**shadow, "route": "feed"}) is None


def test_histogram_buckets_include_the_plan_limits() -> None:
    m = Metrics()
    m.upstream("primary", "r", "GET", 200, None, 0.1)
    families = {f.name: f for f in text_string_to_metric_families(m.render()[0].decode())}
    bounds = {
        float(s.labels["le"])
        for s in families["shadowproxy_upstream_duration_seconds"].samples
        if "le" in s.labels
    }
    assert {0.005, 0.01, 0.02, 0.03, 0.05, 0.1, 0.2, 0.3, 0.5, 1.0, 2.5, 5.0, 10.0} <= bounds


def test_exchange_counts_comparisons_parts_and_fields() -> None:
    m = Metrics()
    for _ in range(7):
        m.exchange(make_exchange("user", Comparison.equal("json")))
    diff = Comparison(
        match=False,
        parts=("status", "body"),
        fields=(
            FieldDiff("status", "changed", 200, 500),
            FieldDiff("$.data[0].title", "changed", "a", "b"),
            FieldDiff("$.data[1].title", "changed", "c", "d"),  # same field, same pair: counted once
        ),
    )
    m.exchange(make_exchange("user", diff))
    m.exchange(make_exchange("user", diff, method="head"))
    m.exchange(make_exchange("user", None))  # shadow failed: nothing compared
    big = Comparison(match=True, body_mode="hash_only", hashed_only=True)
    m.exchange(make_exchange("user", big))

    cmp = "shadowproxy_comparisons_total"
    assert value(m, cmp, route="user", method="GET", result="match") == 8
    assert value(m, cmp, route="user", method="GET", result="mismatch") == 1
    assert value(m, cmp, route="user", method="HEAD", result="mismatch") == 1
    assert value(m, "shadowproxy_mismatches_total", route="user", method="GET", part="status") == 1
    assert value(m, "shadowproxy_mismatches_total", route="user", method="GET", part="body") == 1
    # Zero, not absent: a pair's parts start at 0 so Prometheus sees their first increment.
    assert value(m, "shadowproxy_mismatches_total", route="user", method="GET", part="headers") == 0
    fields = "shadowproxy_field_mismatches_total"
    assert value(m, fields, route="user", field="$.data[*].title") == 2
    assert value(m, fields, route="user", field="status") == 2
    assert value(m, "shadowproxy_hashed_only_total", route="user") == 1


def test_field_labels_are_bounded_per_route() -> None:
    m = Metrics(max_fields_per_route=3)
    for i in range(6):
        m.exchange(make_exchange("user", Comparison(False, ("body",), (FieldDiff(f"$.f{i}", "changed"),))))
    m.exchange(make_exchange("user", Comparison(False, ("body",), (FieldDiff("$.f0", "changed"),))))
    m.exchange(make_exchange("other-route", Comparison(False, ("body",), (FieldDiff("$.f5", "changed"),))))

    fields = "shadowproxy_field_mismatches_total"
    assert value(m, fields, route="user", field="$.f0") == 2  # admitted early, keeps its label
    assert value(m, fields, route="user", field="$.f2") == 1
    assert value(m, fields, route="user", field="$.f3") is None
    assert value(m, fields, route="user", field="other") == 3
    assert value(m, fields, route="other-route", field="$.f5") == 1  # each route has its own budget


async def test_skips_in_flight_drops_task_failures_and_verdicts() -> None:
    m = Metrics()
    for reason in SKIP_REASONS:
        m.skipped("user", reason)
    m.skipped("user", "saturated")
    m.shadow_in_flight(+1)
    m.shadow_in_flight(+1)
    m.shadow_in_flight(-1)
    for i in range(20):
        m.dropped(f"reason-{i}")
    m.dropped("reason-0")

    async def boom() -> None:
        raise ValueError("boom")

    tracker = TaskTracker(on_failure=m.task_failed)
    tracker.spawn(boom(), name="boom")
    await tracker.drain(timeout_s=5)

    m.set_verdicts({"user": 1, "pitches": -1, "search": 0})
    m.set_verdicts({"user": -1})
    with pytest.raises(ValueError, match="pitches"):
        m.set_verdicts({"pitches": 2})

    for reason in SKIP_REASONS:
        expected = 2 if reason == "saturated" else 1
        assert value(m, "shadowproxy_shadow_skipped_total", route="user", reason=reason) == expected
    assert value(m, "shadowproxy_shadow_in_flight") == 1
    assert value(m, "shadowproxy_shadow_dropped_total", reason="reason-0") == 2
    assert value(m, "shadowproxy_shadow_dropped_total", reason="reason-15") == 1
    assert value(m, "shadowproxy_shadow_dropped_total", reason="reason-16") is None
    assert value(m, "shadowproxy_shadow_dropped_total", reason="other") == 4
    assert value(m, "shadowproxy_background_task_failures_total") == 1
    assert value(m, "shadowproxy_verdict", route="user") == -1
    assert value(m, "shadowproxy_verdict", route="pitches") == -1
    assert value(m, "shadowproxy_verdict", route="search") == 0
    assert value(m, "shadowproxy_build_info", version=__version__) == 1


def test_render_is_the_registry_in_text_format() -> None:
    m = Metrics()
    m.request("user", "GET", 200)
    m.upstream("shadow", "user", "GET", 200, None, 0.7)
    body, content_type = m.render()
    assert content_type.startswith("text/plain; version=0.0.4")
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for fam in text_string_to_metric_families(body.decode())
        for s in fam.samples
    }
    assert (
        samples[("shadowproxy_requests_total", (("code", "200"), ("method", "GET"), ("route", "user")))] == 1
    )
    over = (("backend", "shadow"), ("le", "0.5"), ("method", "GET"), ("route", "user"))
    assert samples[("shadowproxy_upstream_duration_seconds_bucket", over)] == 0
    assert not any(name.endswith("_created") for name, _ in samples)


def test_metrics_refuse_a_multiprocess_dir_set_after_import(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # This process imported prometheus_client without the variable: its values live in
    # memory, so a worker built like this would export only its own numbers.
    monkeypatch.setenv(MULTIPROC_ENV, str(tmp_path))
    with pytest.raises(RuntimeError, match="spawn"):
        Metrics()


def test_prepare_multiprocess_empties_only_prometheus_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(MULTIPROC_ENV, "unused")
    (tmp_path / "counter_123.db").write_bytes(b"x")
    (tmp_path / "gauge_livesum_123.db").write_bytes(b"x")
    (tmp_path / "notes.db").write_bytes(b"keep")
    target = tmp_path / "new" / "dir"
    prepare_multiprocess(str(tmp_path))
    prepare_multiprocess(str(target))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["new", "notes.db"]
    assert target.is_dir()
    assert os.environ[MULTIPROC_ENV] == str(target)


# ------------------------------------------------------------------ several processes


def _worker(requests: int, verdict: int, ready: MpEvent, release: MpEvent) -> None:
    """Runs in a spawned process: PROMETHEUS_MULTIPROC_DIR came with the environment."""
    m = Metrics()
    for i in range(requests):
        m.request("user", "GET", 200)
        m.upstream("shadow", "user", "GET", 200, None, 0.1 if i % 2 else 0.9)
    m.shadow_in_flight(requests)
    m.set_verdicts({"user": verdict})
    m.flush()  # what the sidecar does every second: into this worker's files
    ready.set()
    release.wait(30)


def test_multiprocess_scrape_sums_every_worker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(MULTIPROC_ENV, "set-by-prepare")  # restored after the test
    prepare_multiprocess(str(tmp_path))
    ctx = multiprocessing.get_context("spawn")
    release = ctx.Event()
    workers = []
    # Started one after the other, so the second worker's verdict is the most recent.
    for requests, verdict in ((3, -1), (4, 1)):
        ready = ctx.Event()
        p = ctx.Process(target=_worker, args=(requests, verdict, ready, release))
        p.start()
        workers.append(p)
        assert ready.wait(30), "worker did not start"
    try:
        registry = multiprocess_registry(str(tmp_path))
        text = generate_latest(registry).decode()
        get = registry.get_sample_value
        assert get("shadowproxy_requests_total", {"route": "user", "method": "GET", "code": "200"}) == 7
        shadow = {"backend": "shadow", "route": "user", "method": "GET"}
        assert get("shadowproxy_upstream_duration_seconds_count", shadow) == 7
        assert get("shadowproxy_upstream_duration_seconds_bucket", {**shadow, "le": "0.5"}) == 1 + 2
        assert get("shadowproxy_shadow_in_flight", {}) == 7
        assert get("shadowproxy_verdict", {"route": "user"}) == 1
        assert get("shadowproxy_build_info", {"version": __version__}) == 1
        assert 'pid="' not in text  # every gauge has an aggregating mode
    finally:
        release.set()
        for p in workers:
            p.join(30)
    assert [p.exitcode for p in workers] == [0, 0]
    for p in workers:
        assert p.pid is not None
        worker_exited(p.pid, str(tmp_path))
    registry = multiprocess_registry(str(tmp_path))
    # Counters outlive their workers; live gauges leave with them.
    assert (
        registry.get_sample_value(
            "shadowproxy_requests_total", {"route": "user", "method": "GET", "code": "200"}
        )
        == 7
    )
    assert registry.get_sample_value("shadowproxy_shadow_in_flight", {}) is None


def test_a_batch_of_observations_is_exactly_what_observe_would_give() -> None:
    """flush() adds a batch to a histogram through prometheus_client's bucket and sum
    values (it has no public call for that); this pins it against observe() itself."""
    durations = [0.0, 0.001, 0.0011, 0.5, 0.50001, 7.0, 31.0, 1e-9, 0.02, 0.02]
    m = Metrics(CollectorRegistry())
    ref_registry = CollectorRegistry()
    reference = Histogram(
        "shadowproxy_upstream_duration_seconds",
        "reference",
        ["backend", "route", "method"],
        buckets=LATENCY_BUCKETS,
        registry=ref_registry,
    ).labels("shadow", "user", "GET")
    for d in durations:
        m.upstream("shadow", "user", "GET", 200, None, d)
        reference.observe(d)
    m.flush()
    m.upstream("shadow", "user", "GET", 200, None, 0.3)  # a second batch adds to the first
    reference.observe(0.3)
    m.flush()

    def samples(registry: CollectorRegistry) -> dict[tuple[str, str], float]:
        return {
            (s.name, s.labels.get("le", "")): s.value
            for family in registry.collect()
            if family.name == "shadowproxy_upstream_duration_seconds"
            for s in family.samples
            if not s.name.endswith("_created")
        }

    want = samples(ref_registry)
    assert len(want) == len(LATENCY_BUCKETS) + 3  # buckets, +Inf, count, sum
    assert samples(m.registry) == want


def test_a_new_route_starts_its_fixed_label_series_at_zero() -> None:
    """Prometheus cannot see the first increment of a series it first scrapes above zero,
    so a burst of saturation on a new route would otherwise never fire its alert."""
    m = Metrics()
    m.skipped("fresh", "saturated")
    for reason in ("sampled_out", "unsafe_method", "body_too_large", "websocket", "disabled"):
        assert value(m, "shadowproxy_shadow_skipped_total", route="fresh", reason=reason) == 0
    assert value(m, "shadowproxy_shadow_skipped_total", route="fresh", reason="saturated") == 1
    assert value(m, "shadowproxy_shadow_dropped_total", reason="store_queue_full") == 0
