"""The sample store's on-disk layout, and how a batch of counts (store_delta) and samples
is written to it.

Every counter is written as `value = value + delta`, so a second process or a restarted
one adds to what is there instead of overwriting it.
"""

from __future__ import annotations

import json
import math
import os
import sqlite3
import time
from dataclasses import dataclass
from typing import Any

from shadowproxy import store_pairs
from shadowproxy.evidence import LATENCY_BUCKETS, Sample
from shadowproxy.store_delta import MAX_FIELD_PATHS, OTHER_FIELD, Delta

# 2: latency pairs in blocks (store_pairs); a version 1 file is migrated when opened for writing.
SCHEMA_VERSION = 2
# Samples kept because they were the first to show a field path (beyond the newest N).
MAX_FIRST_PATHS = 200

_DDL = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS counters (
    route TEXT NOT NULL, name TEXT NOT NULL, value INTEGER NOT NULL,
    PRIMARY KEY (route, name)) WITHOUT ROWID;
-- One row per bucket, not cumulative; `le` is the bucket's upper bound (inf for the last),
-- so a reader with other bounds can still add the buckets up.
CREATE TABLE IF NOT EXISTS latency (
    route TEXT NOT NULL, side TEXT NOT NULL, le REAL NOT NULL, count INTEGER NOT NULL,
    PRIMARY KEY (route, side, le)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS latency_sum (
    route TEXT NOT NULL, side TEXT NOT NULL, sum_s REAL NOT NULL,
    PRIMARY KEY (route, side)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS field_counts (
    route TEXT NOT NULL, path TEXT NOT NULL, raw INTEGER NOT NULL, noise INTEGER NOT NULL,
    PRIMARY KEY (route, path)) WITHOUT ROWID;
-- AUTOINCREMENT: an id is never reused after eviction, so a link to a sample stays honest.
CREATE TABLE IF NOT EXISTS samples (
    id INTEGER PRIMARY KEY AUTOINCREMENT, route TEXT NOT NULL, pinned INTEGER NOT NULL,
    at REAL NOT NULL, method TEXT NOT NULL, path TEXT NOT NULL, query TEXT NOT NULL,
    request_id TEXT NOT NULL, request_headers TEXT NOT NULL,
    primary_status INTEGER, shadow_status INTEGER,
    primary_headers TEXT NOT NULL, shadow_headers TEXT NOT NULL,
    primary_body TEXT NOT NULL, shadow_body TEXT NOT NULL,
    fields TEXT NOT NULL, parts TEXT NOT NULL,
    primary_latency_s REAL NOT NULL, shadow_latency_s REAL NOT NULL, explanation TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS samples_by_route ON samples (route, id);
CREATE TABLE IF NOT EXISTS first_paths (
    route TEXT NOT NULL, path TEXT NOT NULL, sample_id INTEGER NOT NULL,
    PRIMARY KEY (route, path)) WITHOUT ROWID;
"""


class StoreError(Exception):
    """The store file is missing, or is not a shadowproxy store of this version."""


BUSY_TIMEOUT_S = 10.0


def _to_wal(conn: sqlite3.Connection) -> None:
    """Switch the file to WAL. With `workers: N` every worker opens the same new file at
    start, and SQLite tells the loser of that race "database is locked" at once, not after
    its busy timeout (2 threads on a fresh file: 42 of 200 tries): a worker died of it.
    So retry within the same timeout; this runs in a thread at start-up."""
    deadline = time.monotonic() + BUSY_TIMEOUT_S
    while True:
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as e:
            if "locked" not in str(e) or time.monotonic() > deadline:
                raise
            time.sleep(0.02)


def open_writer(path: str) -> sqlite3.Connection:
    # Autocommit mode: transactions are explicit BEGIN IMMEDIATE ... COMMIT, so a second
    # writer waits for the lock up front instead of failing halfway through a batch.
    conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False)
    _to_wal(conn)
    conn.execute("PRAGMA synchronous=NORMAL")
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    if version not in (0, 1, SCHEMA_VERSION):
        conn.close()
        raise StoreError(f"{path}: store schema version {version}, this shadowproxy reads {SCHEMA_VERSION}")
    conn.executescript(_DDL + store_pairs.DDL)
    conn.execute("BEGIN IMMEDIATE")
    if version == 1:
        store_pairs.migrate_v1(conn)
    conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
    conn.execute("COMMIT")
    return conn


def open_reader(path: str) -> sqlite3.Connection:
    # sqlite3.connect would create an empty file; a report on a mistyped path must say so.
    if not os.path.exists(path):
        raise StoreError(f"{path}: no such store file")
    conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
    conn.row_factory = sqlite3.Row
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    if version != SCHEMA_VERSION:
        conn.close()
        if version == 1:
            raise StoreError(
                f"{path}: written by an older shadowproxy (schema 1); "
                "`shadowproxy run` with this store upgrades it in place"
            )
        raise StoreError(f"{path}: not a shadowproxy store (schema version {version})")
    # One snapshot for the whole call: counts, histograms and samples from the same flush.
    conn.execute("BEGIN")
    return conn


@dataclass(frozen=True, slots=True)
class PendingSample:
    """A prepared (redacted, truncated) sample, and whether it is kept as a first-of-path."""

    sample: Sample
    first_paths: tuple[str, ...] = ()


def write_delta(conn: sqlite3.Connection, delta: Delta) -> None:
    """Add one batch of counts; the caller holds the transaction."""
    if delta.first_at is not None:
        conn.execute(
            "INSERT INTO meta VALUES ('first_at', ?) ON CONFLICT (key) DO NOTHING", (repr(delta.first_at),)
        )
    bounds = (*LATENCY_BUCKETS, math.inf)
    for route, d in delta.routes.items():
        conn.executemany(
            "INSERT INTO counters VALUES (?, ?, ?) ON CONFLICT DO UPDATE SET value = value + excluded.value",
            [(route, name, n) for name, n in d.counts.items() if n],
        )
        for side, h in (("primary", d.primary), ("shadow", d.shadow)):
            rows = [(route, side, le, n) for le, n in zip(bounds, h.counts, strict=True) if n]
            if not rows:
                continue
            conn.executemany(
                "INSERT INTO latency VALUES (?, ?, ?, ?)"
                " ON CONFLICT DO UPDATE SET count = count + excluded.count",
                rows,
            )
            conn.execute(
                "INSERT INTO latency_sum VALUES (?, ?, ?)"
                " ON CONFLICT DO UPDATE SET sum_s = sum_s + excluded.sum_s",
                (route, side, h.sum_s),
            )
        if d.pair_slots:
            store_pairs.write_pairs(conn, route, d.pair_slots, d.pair_latencies)
        _write_fields(conn, route, d.fields)


def _write_fields(conn: sqlite3.Connection, route: str, fields: dict[str, list[int]]) -> None:
    if not fields:
        return
    known = {r[0] for r in conn.execute("SELECT path FROM field_counts WHERE route = ?", (route,))}
    folded: dict[str, list[int]] = {}
    for path, (raw, noise) in fields.items():
        if path not in known:
            if len(known) >= MAX_FIELD_PATHS:
                path = OTHER_FIELD
            known.add(path)
        c = folded.setdefault(path, [0, 0])
        c[0] += raw
        c[1] += noise
    conn.executemany(
        "INSERT INTO field_counts VALUES (?, ?, ?, ?) ON CONFLICT DO UPDATE "
        "SET raw = raw + excluded.raw, noise = noise + excluded.noise",
        [(route, path, raw, noise) for path, (raw, noise) in folded.items()],
    )


def insert_samples(conn: sqlite3.Connection, samples: list[PendingSample], keep_newest: int) -> None:
    """Insert, record first-of-path pins, then evict what is neither newest nor pinned."""
    routes: set[str] = set()
    for p in samples:
        s = p.sample
        routes.add(s.route)
        cur = conn.execute(
            "INSERT INTO samples (route, pinned, at, method, path, query, request_id, request_headers,"
            " primary_status, shadow_status, primary_headers, shadow_headers, primary_body, shadow_body,"
            " fields, parts, primary_latency_s, shadow_latency_s, explanation)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                s.route,
                int(bool(p.first_paths)),
                s.at,
                s.method,
                s.path,
                s.query,
                s.request_id,
                _dumps([list(h) for h in s.request_headers]),
                s.primary_status,
                s.shadow_status,
                _dumps([list(h) for h in s.primary_headers]),
                _dumps([list(h) for h in s.shadow_headers]),
                s.primary_body,
                s.shadow_body,
                _dumps([[f.path, f.kind, f.primary, f.shadow] for f in s.fields]),
                _dumps(list(s.parts)),
                s.primary_latency_s,
                s.shadow_latency_s,
                s.explanation,
            ),
        )
        conn.executemany(
            "INSERT OR IGNORE INTO first_paths VALUES (?, ?, ?)",
            [(s.route, path, cur.lastrowid) for path in p.first_paths],
        )
    for route in routes:
        conn.execute(
            "DELETE FROM samples WHERE route = ? AND pinned = 0 AND id < "
            "(SELECT min(id) FROM (SELECT id FROM samples WHERE route = ? ORDER BY id DESC LIMIT ?))",
            (route, route, keep_newest),
        )


def first_paths(conn: sqlite3.Connection, route: str) -> set[str]:
    return {r[0] for r in conn.execute("SELECT path FROM first_paths WHERE route = ?", (route,))}


def add_counter(conn: sqlite3.Connection, route: str, name: str, n: int) -> None:
    conn.execute(
        "INSERT INTO counters VALUES (?, ?, ?) ON CONFLICT DO UPDATE SET value = value + excluded.value",
        (route, name, n),
    )


def _dumps(v: Any) -> str:
    # default=str: a value compare produced that JSON cannot hold is shown, not lost.
    return json.dumps(v, ensure_ascii=False, default=str)
