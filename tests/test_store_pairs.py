"""Latency pairs on disk: the reservoir in blocks, and stores written by schema 1."""

import gc
import sqlite3
from array import array
from pathlib import Path

import pytest

from shadowproxy import config, store_pairs
from shadowproxy.store import Store, StoreError
from shadowproxy.store_delta import MAX_PAIR_WRITES, RouteDelta
from shadowproxy.store_pairs import PAIR_BLOCK
from shadowproxy.store_read import read_evidence
from shadowproxy.store_schema import _DDL
from tests.conftest import make_store
from tests.test_store import exchange, result


def make(path: str, cap: int) -> Store:
    return make_store(path, config.Store(latency_pairs_per_route=cap, flush_interval_s=60.0))


def record(store: Store, pairs: list[tuple[float, float]]) -> None:
    for p, s in pairs:
        store.record_exchange(
            exchange(primary=result("primary", latency=p), shadow=result("shadow", latency=s))
        )


def test_pairs_fill_blocks_in_slot_order_across_flushes(tmp_path: Path) -> None:
    db = str(tmp_path / "s.db")
    cap = 2 * PAIR_BLOCK + 10  # three blocks, the last one partly filled
    pairs = [(i / 1000, i / 500) for i in range(cap)]
    store = make(db, cap)
    store.start()
    # Flushes that end inside a block: the next one must extend that block, not replace it.
    for chunk in (pairs[:100], pairs[100 : PAIR_BLOCK + 7], pairs[PAIR_BLOCK + 7 :]):
        record(store, chunk)
        store.flush()
    store.close()
    assert read_evidence(db, ["user"], None).routes[0].latency_pairs == tuple(pairs)
    rows = sqlite3.connect(db).execute("SELECT block, length(pairs) FROM latency_pair_blocks").fetchall()
    assert sorted(rows) == [(0, PAIR_BLOCK * 16), (1, PAIR_BLOCK * 16), (2, 10 * 16)]


def test_a_full_reservoir_replaces_slots_and_stays_bounded(tmp_path: Path) -> None:
    db = str(tmp_path / "s.db")
    cap = PAIR_BLOCK + 3
    store = make(db, cap)
    store.start()
    everything = [(i / 1000, 1.0 + i / 1000) for i in range(20 * cap)]
    record(store, everything)
    store.close()
    kept = read_evidence(db, ["user"], None).routes[0].latency_pairs
    assert len(kept) == cap and set(kept) <= set(everything)
    # Uniform over all of them: the odds that none came after the first `cap` are negligible.
    assert any(p >= cap / 1000 for p, _ in kept)


def _v1_store(path: str, pairs: list[tuple[int, float, float]]) -> None:
    conn = sqlite3.connect(path)
    conn.executescript(
        _DDL
        + """CREATE TABLE latency_pairs (
            route TEXT NOT NULL, slot INTEGER NOT NULL, primary_s REAL NOT NULL, shadow_s REAL NOT NULL,
            PRIMARY KEY (route, slot)) WITHOUT ROWID;"""
    )
    conn.executemany("INSERT INTO latency_pairs VALUES ('user', ?, ?, ?)", pairs)
    conn.execute("INSERT INTO counters VALUES ('user', 'pairs_seen', ?)", (len(pairs),))
    conn.execute("PRAGMA user_version=1")
    conn.commit()
    conn.close()


def test_a_schema_1_store_is_upgraded_by_the_writer_and_named_by_the_reader(tmp_path: Path) -> None:
    db = str(tmp_path / "old.db")
    old = [(slot, slot / 100, slot / 50) for slot in (0, 1, 2, PAIR_BLOCK + 1)]
    _v1_store(db, old)
    with pytest.raises(StoreError, match=r"older shadowproxy .*`shadowproxy run`"):
        read_evidence(db, ["user"], None)

    store = make(db, 1000)
    store.start()
    record(store, [(9.0, 9.5)])
    store.close()

    got = read_evidence(db, ["user"], None).routes[0].latency_pairs
    # In slot order: pairs_seen was 4, so the new pair took slot 4, before slot PAIR_BLOCK + 1.
    assert got == (*((p, s) for _, p, s in old[:3]), (9.0, 9.5), (old[3][1], old[3][2]))
    tables = {r[0] for r in sqlite3.connect(db).execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert "latency_pairs" not in tables


def test_recording_pairs_leaves_nothing_for_the_cycle_collector(tmp_path: Path) -> None:
    # The batch lives for a flush interval: anything it holds per request is tracked by
    # the cycle collector and brings its next collection closer.
    store = make(str(tmp_path / "s.db"), 10_000)
    exchanges = [
        exchange(primary=result("primary", latency=i / 1000), shadow=result("shadow", latency=i / 500))
        for i in range(2_000)
    ]
    store.record_exchange(exchanges[0])  # the route's batch itself exists once
    gc.collect()
    gc.disable()
    try:
        before = len(gc.get_objects())
        for ex in exchanges[1:]:
            store.record_exchange(ex)
        grown = len(gc.get_objects()) - before
    finally:
        gc.enable()
    assert grown < 50, f"{grown} objects for the collector after 1,999 pairs"
    store.flush()
    store.close()


def test_a_later_write_to_a_slot_replaces_an_earlier_one_in_the_same_batch(tmp_path: Path) -> None:
    conn = sqlite3.connect(str(tmp_path / "p.db"))
    conn.executescript(store_pairs.DDL)
    store_pairs.write_pairs(conn, "user", array("q", [3, 5, 3]), array("d", [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]))
    assert store_pairs.read_pairs(conn, "user") == ((5.0, 6.0), (3.0, 4.0))


def test_a_batch_that_keeps_growing_keeps_only_the_last_write_per_slot() -> None:
    # The writer adds up the batches it failed to write: the writes must stay bounded.
    older, newer = RouteDelta(), RouteDelta()
    half = MAX_PAIR_WRITES // 2 + 1
    for i in range(half):
        older.add_pair(i % 10, float(i), -float(i))
        newer.add_pair(i % 7, float(half + i), -float(half + i))
    older.add(newer)
    assert len(older.pair_slots) == 10
    # Write j of the two, in order, put (j, -j) in its slot.
    last = {slot: j for j, slot in enumerate([*[i % 10 for i in range(half)], *[i % 7 for i in range(half)]])}
    latencies = older.pair_latencies
    written = dict(zip(older.pair_slots, zip(latencies[0::2], latencies[1::2], strict=True), strict=True))
    assert written == {slot: (float(i), -float(i)) for slot, i in last.items()}


def test_the_batch_of_a_writer_that_is_behind_stays_bounded() -> None:
    d = RouteDelta()
    for i in range(3 * MAX_PAIR_WRITES):
        d.add_pair(i % 50, float(i), 0.0)
    assert len(d.pair_slots) <= MAX_PAIR_WRITES + 1
    written = dict(zip(d.pair_slots, d.pair_latencies[0::2], strict=True))
    assert written == {slot: float(3 * MAX_PAIR_WRITES - 50 + slot) for slot in range(50)}


def test_slots_not_filled_yet_are_skipped_and_full_blocks_read_whole() -> None:
    conn = sqlite3.connect(":memory:")
    conn.executescript(store_pairs.DDL)
    # Block 0 full; block 1 with slots written out of order, so the ones between are NaN.
    full = array("d", [float(x) for i in range(PAIR_BLOCK) for x in (i, i + 0.5)])
    store_pairs.write_pairs(conn, "user", array("q", range(PAIR_BLOCK)), full)
    store_pairs.write_pairs(
        conn, "user", array("q", [PAIR_BLOCK + 3, PAIR_BLOCK]), array("d", [3.0, 3.5, 9.0, 9.5])
    )
    got = store_pairs.read_pairs(conn, "user")
    assert got[:PAIR_BLOCK] == tuple((float(i), i + 0.5) for i in range(PAIR_BLOCK))
    assert got[PAIR_BLOCK:] == ((9.0, 9.5), (3.0, 3.5))  # slot order; slots 1 and 2 were empty
