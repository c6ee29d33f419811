import dataclasses
import gzip
import json
import threading
from pathlib import Path
from typing import Any

import pytest

from shadowproxy import config
from shadowproxy.evidence import LATENCY_BUCKETS, Histogram
from shadowproxy.exchange import Comparison, Exchange, FieldDiff, RequestSnapshot, UpstreamResult
from shadowproxy.redact import REDACTED
from shadowproxy.store import Store, StoreError
from shadowproxy.store_delta import MAX_FIELD_PATHS, OTHER_FIELD
from shadowproxy.store_sample import NOT_EXPLAINED
from shadowproxy.store_schema import MAX_FIRST_PATHS, open_writer
from shadowproxy.store_writer import MAX_NEW_SAMPLES_PER_BATCH
from tests.conftest import make_store as make

JSON = (("Content-Type", "application/json"),)


def result(backend: Any, status: int | None = 200, latency: float = 0.1, body: bytes = b"{}", **kw: Any):
    return UpstreamResult(backend, status, kw.pop("headers", JSON), body, latency, len(body), **kw)


def exchange(
    route: str = "user",
    fields: tuple[FieldDiff, ...] | None = None,
    *,
    primary: UpstreamResult | None = None,
    shadow: UpstreamResult | None = None,
    comparison: Comparison | str | None = "auto",
    secondary: bool = False,
    noise_paths: tuple[str, ...] = (),
    query: str = "",
    headers: tuple[tuple[str, str], ...] = (),
    n: int = 0,
) -> Exchange:
    if comparison == "auto":
        comparison = (
            Comparison(match=False, parts=("body",), fields=fields, body_mode="json")
            if fields
            else Comparison.equal("json")
        )
    assert not isinstance(comparison, str)
    return Exchange(
        request=RequestSnapshot("GET", f"/api/{route}/{n}", query, headers, b"", f"req-{n}", route),
        primary=primary or result("primary"),
        shadow=shadow or result("shadow"),
        comparison=comparison,
        secondary=result("secondary") if secondary else None,
        noise_paths=noise_paths,
    )


def diff(path: str = "$.a", p: Any = 1, s: Any = 2) -> tuple[FieldDiff, ...]:
    return (FieldDiff(path, "changed", p, s),)


def bucket(h: Histogram, le: float) -> int:
    return h.counts[LATENCY_BUCKETS.index(le)]


# --------------------------------------------------------------------------- counts


def test_evidence_equals_what_was_recorded(store: Store) -> None:
    for _ in range(5):
        store.record_request("user")
    store.record_skip("user", "sampled_out")
    store.record_skip("user", "sampled_out")
    store.record_skip("user", "saturated")
    store.record_exchange(
        exchange(primary=result("primary", latency=0.4), shadow=result("shadow", latency=0.6))
    )
    store.record_exchange(
        exchange(
            fields=(
                FieldDiff("$.a", "changed", 1, 2),
                FieldDiff("$.a", "changed", 3, 4),
                FieldDiff("$.b", "extra"),
            ),
            primary=result("primary", latency=0.5),
            shadow=result("shadow", latency=0.5),
            secondary=True,
            noise_paths=("$.a", "$.c"),
        )
    )
    store.record_exchange(
        exchange(
            shadow=result("shadow", status=None, latency=10.0, body=b"", error="timeout"),
            comparison=None,
            primary=result("primary", latency=0.01),
        )
    )
    store.record_exchange(
        exchange(shadow=result("shadow", status=None, latency=0.0, error="error"), comparison=None)
    )
    store.record_exchange(
        exchange(
            shadow=result("shadow", status=502, latency=0.02),
            comparison=Comparison(
                False, ("status",), (FieldDiff("status", "changed", 200, 502),), hashed_only=True
            ),
        )
    )
    store.flush()

    ev = store.evidence(routes=("never-seen",))
    assert [r.route for r in ev.routes] == ["never-seen", "user"]
    unseen, r = ev.routes
    assert (unseen.requests, unseen.shadowed, unseen.primary_latency.total) == (0, 0, 0)
    assert (r.requests, r.shadowed, r.compared, r.mismatches) == (5, 5, 3, 2)
    assert r.mismatches_by_part == {"body": 1, "status": 1}
    assert r.skipped == {"sampled_out": 2, "saturated": 1}
    assert (r.shadow_errors, r.shadow_timeouts, r.hashed_only, r.noise_total) == (3, 1, 1, 1)
    # A repeated path counts once per request; noise only from the secondary.
    assert {(f.path, f.raw, f.noise) for f in r.fields} == {
        ("$.a", 1, 1),
        ("$.b", 1, 0),
        ("$.c", 0, 1),
        ("status", 1, 0),
    }
    assert r.fields[0].path == "$.a"  # most frequent first

    p, s = r.primary_latency, r.shadow_latency
    assert p.total == 5 and p.sum_s == pytest.approx(0.4 + 0.5 + 0.01 + 0.1 + 0.1)
    assert (bucket(p, 0.3), bucket(p, 0.5), bucket(p, 0.75)) == (3, 5, 5)
    # Shadow: 0.6, 0.5, the timeout (10 s), the 502 (0.02); the refused connection is not a latency.
    assert s.total == 4
    assert (bucket(s, 0.02), bucket(s, 0.5), bucket(s, 0.75), bucket(s, 10.0), bucket(s, 30.0)) == (
        1,
        2,
        3,
        4,
        4,
    )
    assert s.over(0.5) == (2, True)
    assert sorted(r.latency_pairs) == [(0.1, 0.02), (0.4, 0.6), (0.5, 0.5)]
    assert ev.source == f"store:{store.path}"
    assert ev.window.startswith("since ") and ev.window.endswith(" UTC")
    assert [len(v) for v in ev.samples.values()] == [2]


def test_route_summaries(store: Store) -> None:
    store.record_request("a")
    store.record_skip("a", "unsafe_method")
    for i in range(12):
        paths = ["$.x"] + (["$.y"] if i % 2 else []) + (["$.z"] if i < 3 else [])
        fields = tuple(FieldDiff(p, "changed", 1, 2) for p in paths)
        store.record_exchange(exchange("a", fields, n=i))
    store.record_exchange(exchange("a"))
    store.flush()
    (s,) = store.route_summaries()
    assert (s.route, s.requests, s.shadowed, s.compared, s.matches, s.mismatches) == ("a", 1, 13, 13, 1, 12)
    assert s.skipped == {"unsafe_method": 1} and s.mismatches_by_part == {"body": 12}
    assert s.top_fields == (("$.x", 12), ("$.y", 6), ("$.z", 3))
    assert s.to_json()["top_fields"][0] == {"path": "$.x", "count": 12}


def test_restart_adds_to_the_counts(db: str) -> None:
    for _ in range(2):
        s = make(db)
        s.start()
        s.record_request("user")
        s.record_exchange(exchange(fields=diff(), primary=result("primary", latency=0.4)))
        s.close()
    s = make(db)
    ev = s.evidence()
    (r,) = ev.routes
    assert (
        r.requests,
        r.shadowed,
        r.mismatches,
        r.primary_latency.total,
        bucket(r.primary_latency, 0.5),
    ) == (
        2,
        2,
        2,
        2,
        2,
    )
    assert r.fields[0].raw == 2 and len(r.latency_pairs) == 2
    assert len(s.samples("user", 10)) == 2


def test_close_flushes_pending_and_is_idempotent(db: str) -> None:
    s = make(db)  # flush interval 60 s: only close() can have written this
    s.start()
    s.record_request("user")
    s.record_exchange(exchange(fields=diff()))
    s.close()
    s.close()
    s.record_request("user")  # after close: ignored, never raises
    s.flush()
    reader = make(db)
    assert reader.evidence().routes[0].requests == 1
    assert len(reader.samples(None, 10)) == 1


def test_reader_on_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="no such store"):
        make(str(tmp_path / "nope.db")).evidence()
    assert not (tmp_path / "nope.db").exists()


# --------------------------------------------------------------------------- bounds


def test_newest_samples_kept_plus_the_first_of_each_path(db: str) -> None:
    s = make(db, config.Store(samples_per_route=5, flush_interval_s=60.0))
    s.start()
    for i in range(8):  # one batch: the writer skips those it would evict at once
        s.record_exchange(exchange(fields=diff("$.a"), n=i))
    s.flush()
    for i in range(8, 12):  # later batches: eviction in the database
        s.record_exchange(exchange(fields=diff("$.a"), n=i))
        s.flush()
    s.record_exchange(exchange(fields=diff("$.b[3].c"), n=12))
    s.record_exchange(exchange(fields=diff("$.b[7].c"), n=13))  # same field, another element
    s.record_exchange(exchange("other-route", diff("$.a"), n=99))
    for i in range(14, 19):
        s.record_exchange(exchange(fields=diff("$.a"), n=i))
    s.flush()
    kept = [x.request_id for x in s.samples("user", 100)]
    s.close()
    # newest 5, then the first of $.a and the first of $.b[*].c
    assert kept == ["req-18", "req-17", "req-16", "req-15", "req-14", "req-12", "req-0"]


def test_first_of_path_samples_are_bounded(db: str) -> None:
    s = make(db, config.Store(samples_per_route=2, flush_interval_s=60.0))
    s.start()
    for i in range(MAX_FIRST_PATHS + 10):
        s.record_exchange(exchange(fields=diff(f"$.f{i}"), n=i))
        if i % 50 == 0:
            s.flush()
    s.close()
    kept = {x.request_id for x in make(db).samples("user", 500)}
    last = MAX_FIRST_PATHS + 9
    assert kept == {f"req-{i}" for i in range(MAX_FIRST_PATHS)} | {f"req-{last - 1}", f"req-{last}"}


def test_full_queue_drops_and_counts(db: str) -> None:
    s = make(db, max_queued_samples=3, max_queued_bytes=10_000)
    # Not started yet: nothing drains the queue, so what overflows is certain.
    big = result("primary", body=b"x" * 6000)
    s.record_exchange(exchange("big", diff(), primary=big, n=10))
    s.record_exchange(exchange("big", diff(), primary=big, n=11))  # 12000 bytes > 10000
    for i in range(5):
        s.record_exchange(exchange(fields=diff(), n=i))  # 3 samples > 3
    s.start()
    s.close()
    r = make(db)
    summary = {x.route: x for x in r.route_summaries()}
    assert (summary["big"].mismatches, summary["big"].samples_dropped) == (2, 1)
    assert (summary["user"].mismatches, summary["user"].samples_dropped) == (5, 3)
    assert [x.request_id for x in r.samples(None, 10)] == ["req-1", "req-0", "req-10"]


def test_a_flood_of_one_mismatch_queues_only_what_can_be_kept(db: str) -> None:
    """The first of a path and the newest few per route wait for the writer; the rest of a
    burst is never queued, so it neither fills the queue nor counts as dropped."""
    s = make(db, max_queued_samples=MAX_NEW_SAMPLES_PER_BATCH + 1)
    for i in range(500):  # not started: all of it waits for one batch
        s.record_exchange(exchange(fields=diff(), n=i))
    s.start()
    s.close()
    summary = next(x for x in make(db).route_summaries() if x.route == "user")
    assert (summary.mismatches, summary.samples_dropped) == (500, 0)
    kept = [x.request_id for x in make(db).samples("user", 500)]
    assert kept == [*(f"req-{i}" for i in range(499, 499 - MAX_NEW_SAMPLES_PER_BATCH, -1)), "req-0"]


def test_field_paths_fold_into_other_past_the_cap(store: Store) -> None:
    many = tuple(FieldDiff(f"$.f{i}", "changed", 1, 2) for i in range(MAX_FIELD_PATHS + 5))
    store.record_exchange(exchange(fields=many))
    store.flush()
    store.record_exchange(exchange(fields=(FieldDiff("$.new", "extra"), FieldDiff("$.f0", "changed", 1, 3))))
    store.flush()
    fields = {f.path: f.raw for f in store.evidence().routes[0].fields}
    assert len(fields) == MAX_FIELD_PATHS + 1
    assert fields[OTHER_FIELD] == 5 + 1 and fields["$.f0"] == 2 and "$.new" not in fields
    # The first paths to differ keep their names, whatever the process's string hashing.
    assert all(f"$.f{i}" in fields for i in range(MAX_FIELD_PATHS))


def test_latency_reservoir_is_bounded_and_survives_restart(db: str) -> None:
    cfg = config.Store(latency_pairs_per_route=10, flush_interval_s=60.0)
    recorded = set()
    for run in range(2):
        s = make(db, cfg)
        s.start()
        for i in range(100):
            p, sh = (run * 100 + i) / 1000, (run * 100 + i) / 500
            recorded.add((p, sh))
            s.record_exchange(
                exchange(primary=result("primary", latency=p), shadow=result("shadow", latency=sh))
            )
        s.close()
        pairs = make(db, cfg).evidence().routes[0].latency_pairs
        assert len(pairs) == 10 and set(pairs) <= recorded
    # Uniform over all 200: the odds that all ten are from the first ten are about 1e-16.
    assert any(p >= 0.01 for p, _ in pairs)


def test_bodies_are_truncated(db: str) -> None:
    s = make(db, config.Store(max_body_bytes=1000, flush_interval_s=60.0))
    s.start()
    body = json.dumps({"items": ["é" * 50] * 100}).encode()
    s.record_exchange(exchange(fields=diff(), primary=result("primary", body=body)))
    s.close()
    (sample,) = make(db).samples(None, 1)
    head, _, tail = sample.primary_body.partition("\n[truncated: ")
    assert 990 < len(head.encode()) <= 1000  # cut on a character boundary, never mid "é"
    assert tail.endswith(" bytes in all]") and int(tail.split()[0]) > 5000
    assert sample.shadow_body == "{}"


def test_only_the_first_of_a_path_is_explained_when_written_the_rest_when_read(db: str) -> None:
    s = make(db)
    for i in range(8):  # before start: certainly one batch
        s.record_exchange(exchange(fields=diff("$.a", i, -i), n=i))
    s.start()
    s.close()
    samples = make(db).samples("user", 100)
    unexplained = [x.request_id for x in samples if x.explanation == NOT_EXPLAINED]
    assert unexplained == [f"req-{i}" for i in range(7, 0, -1)]  # req-0 is the first of $.a
    # Reading one sample explains it then, from the stored (redacted) bodies.
    one = make(db).sample(samples[0].id)
    assert one is not None and one.explanation != NOT_EXPLAINED


def test_samples_limit_and_lookup(db: str) -> None:
    s = make(db, config.Store(samples_per_route=600, flush_interval_s=60.0))
    s.start()
    for i in range(510):
        s.record_exchange(exchange(fields=diff("$.a", i, i + 1), n=i))
        if i % MAX_NEW_SAMPLES_PER_BATCH == MAX_NEW_SAMPLES_PER_BATCH - 1:
            s.flush()
    s.close()
    r = make(db)
    all_ = r.samples(None, 10_000)
    assert len(all_) == 500 and all_[0].request_id == "req-509"
    assert r.samples("user", 0) == [] and r.samples("nobody", 5) == []
    one = r.sample(all_[0].id)
    assert one is not None
    assert dataclasses.replace(one, explanation="") == all_[0]  # explained when read alone
    assert one.fields == (FieldDiff("$.a", "changed", 509, 510),)
    assert (one.primary_status, one.parts, one.method, one.path) == (200, ("body",), "GET", "/api/user/509")
    assert r.sample(10**9) is None


# --------------------------------------------------------------------------- redaction on disk

PLANTED = "sk_live_PLANTED123"
PLAIN = "hunter2PLANTED"  # no credential shape: only redaction by name can hide it
JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJQTEFOVEVEIn0.c2lnUExBTlRFRA"


def test_no_secret_reaches_any_byte_of_the_database(db: str) -> None:
    body = json.dumps({"user": "visible-marker", "password": PLANTED, "pin": {"password": PLAIN}}).encode()
    text = f"hello {JWT} and password={PLAIN}".encode()
    s = make(db)
    s.start()
    s.record_exchange(
        exchange(
            fields=(
                FieldDiff("$.password", "changed", PLANTED, PLAIN),
                FieldDiff("$.pin", "changed", {"password": PLAIN}, None),
                FieldDiff("header:set-cookie", "changed", f"sid={PLAIN}", None),
                FieldDiff("line:1", "changed", f"token={PLAIN}", JWT),
            ),
            headers=(("Authorization", f"Bearer {PLANTED}"), ("Cookie", f"sid={PLANTED}"), ("X-Note", JWT)),
            query=f"page=2&access_token={PLANTED}&refresh_token={PLAIN}",
            primary=result("primary", body=body, headers=(*JSON, ("Set-Cookie", f"sid={PLAIN}"))),
            shadow=result("shadow", body=text, headers=(("Content-Type", "text/plain"),)),
        )
    )
    s.flush()
    files = [Path(db), Path(db + "-wal")]
    assert all(_leaks(f) == [] for f in files)
    assert b"visible-marker" in b"".join(f.read_bytes() for f in files)  # the grep can find things
    s.close()
    assert all(_leaks(f) == [] for f in Path(db).parent.iterdir())

    (sample,) = make(db).samples(None, 1)
    assert json.loads(sample.primary_body)["password"] == REDACTED
    assert dict(sample.request_headers)["Authorization"] == REDACTED
    assert sample.query == f"page=2&access_token={REDACTED}&refresh_token={REDACTED}"


def _leaks(f: Path) -> list[str]:
    raw = f.read_bytes() if f.exists() else b""
    return [s for s in (PLANTED, PLAIN, JWT) if s.encode() in raw]


def test_gzip_body_is_stored_as_readable_redacted_json(db: str) -> None:
    pytest.importorskip("shadowproxy.compare")
    body = gzip.compress(json.dumps({"id": 7, "password": PLAIN}).encode())
    headers = (*JSON, ("Content-Encoding", "gzip"))
    s = make(db)
    s.start()
    s.record_exchange(exchange(fields=diff("$.id"), primary=result("primary", body=body, headers=headers)))
    s.close()
    (sample,) = make(db).samples(None, 1)
    assert json.loads(sample.primary_body) == {"id": 7, "password": REDACTED}
    assert PLAIN not in sample.explanation


def test_noise_suggestions_come_from_the_stored_counts(store: Store) -> None:
    pytest.importorskip("shadowproxy.noise")
    for i in range(20):
        store.record_exchange(exchange(fields=diff("$.ts"), secondary=True, noise_paths=("$.ts",), n=i))
    store.flush()
    assert store.evidence().suggestions == ()  # asked only when the caller gives the noise rules
    suggestions = store.evidence(noise=config.Noise(enabled=True)).suggestions
    assert [(x.route, x.path) for x in suggestions] == [("user", "$.ts")]


def test_a_burst_prepares_only_the_newest_few_samples_per_route(db: str) -> None:
    """Redacting a sample costs ~0.6 ms of the GIL the event loop needs: a burst of
    mismatches in one batch prepares only the newest few (plus firsts of a path)."""
    s = make(db, config.Store(samples_per_route=50, flush_interval_s=60.0))
    for i in range(200):  # before start: certainly one batch
        s.record_exchange(exchange(fields=diff("$.a", i, -i), n=i))
    s.start()
    s.close()
    kept = [x.request_id for x in make(db).samples("user", 500)]
    newest = [f"req-{i}" for i in range(199, 199 - MAX_NEW_SAMPLES_PER_BATCH, -1)]
    assert kept == [*newest, "req-0"]  # req-0: the first of $.a
    summary = next(x for x in make(db).route_summaries() if x.route == "user")
    assert summary.mismatches == 200  # every mismatch is counted, sampled or not


def test_field_counts_are_per_request_and_keyed_like_the_noise(db: str) -> None:
    """Three elements of one array differ in one request: one raw count for the field,
    under the same generic path the noise counts use, so Diffy's raw > noise compares
    like with like."""
    s = make(db)
    fields = tuple(FieldDiff(f"$.items[{i}].updated_at", "changed", i, -i) for i in range(3))
    for n in range(4):
        s.record_exchange(
            exchange(fields=fields, secondary=True, noise_paths=("$.items[*].updated_at",), n=n)
        )
    s.start()
    s.close()
    (ev,) = make(db).evidence().routes
    assert [(f.path, f.raw, f.noise) for f in ev.fields] == [("$.items[*].updated_at", 4, 4)]


def _open_when_started(path: str, start: threading.Barrier, errors: list[Exception]) -> None:
    start.wait()
    try:
        open_writer(path).close()
    except Exception as e:
        errors.append(e)


def test_two_writers_opening_one_new_file_at_once_both_get_it(tmp_path: Path) -> None:
    """`workers: 2` opens one new store from two processes at start. SQLite answered the
    loser of the switch to WAL "database is locked" at once (about 1 try in 5): a worker
    died of it. 50 races, each pair started together."""
    for i in range(50):
        start = threading.Barrier(2)
        errors: list[Exception] = []
        args = (str(tmp_path / f"{i}.db"), start, errors)
        threads = [threading.Thread(target=_open_when_started, args=args) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == [], f"race {i}: {errors}"
