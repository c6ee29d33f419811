"""The store's writer process: it is a process of its own, its failures are logged here,
a dead one is replaced, and a proxy that exits without closing the store does not hang."""

import logging
import multiprocessing
import os
import resource
import signal
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from shadowproxy import children
from shadowproxy.store import Store
from tests.conftest import make_store as make
from tests.test_store import diff, exchange

WRITER = "shadowproxy-store-writer"


def execute(db: str, sql: str) -> None:
    """SQL from another connection, as an operator or another process would run it."""
    with sqlite3.connect(db) as other:
        other.execute(sql)


def writers() -> list[multiprocessing.process.BaseProcess]:
    return [p for p in multiprocessing.active_children() if p.name == WRITER]


def requests(store: Store, route: str = "user") -> int:
    return next((s.requests for s in store.route_summaries() if s.route == route), 0)


def test_the_writer_is_a_process_that_a_ctrl_c_does_not_stop(db: str) -> None:
    s = make(db)
    s.start()
    try:
        s.record_request("user")
        s.flush()  # the writer is up and serving
        (writer,) = writers()
        assert writer.pid != os.getpid()
        # A Ctrl-C reaches the whole process group; the proxy's last flush must still land.
        os.kill(writer.pid or 0, signal.SIGINT)
        s.record_request("user")
        s.flush()
        assert writer.is_alive()
        assert requests(s) == 2
    finally:
        s.close()
    assert writers() == []


def test_the_writer_runs_at_a_lower_cpu_priority_than_the_proxy(db: str) -> None:
    # Rule 1: on a busy machine the kernel must give the CPU to the proxy and the backends first.
    s = make(db)
    s.start()
    try:
        s.record_request("user")
        s.flush()  # the writer has answered: its own code, which sets its priority first, runs
        (writer,) = writers()
        pid = writer.pid or 0
        if hasattr(os, "SCHED_IDLE"):
            assert os.sched_getscheduler(pid) == os.SCHED_IDLE
        else:
            ours = os.getpriority(os.PRIO_PROCESS, 0)
            assert os.getpriority(os.PRIO_PROCESS, pid) == min(19, ours + children.BACKGROUND_NICE)
    finally:
        s.close()


def killed_writer(s: Store) -> int:
    """One request written, then the writer killed and a second request shipped to it (lost):
    the dead writer's pid."""
    s.record_request("user")
    s.flush()
    (first,) = writers()
    os.kill(first.pid or 0, signal.SIGKILL)
    first.join()
    s.record_request("user")
    s.flush()
    return first.pid or 0


def test_a_killed_writer_loses_one_batch_says_so_and_is_replaced(
    db: str, caplog: pytest.LogCaptureFixture
) -> None:
    drops: list[str] = []
    s = make(db, on_drop=drops.append)
    s.start()
    try:
        first = killed_writer(s)
        assert "the writer process ended (exit code -9)" in caplog.text
        assert drops == ["store_batch_lost"]  # shadowproxy_shadow_dropped_total counts it
        s.record_request("user")
        s.record_request("user")
        s.flush()
        (second,) = writers()
        assert second.pid != first
        assert requests(s) == 3
    finally:
        s.close()


def test_a_writer_that_cannot_be_replaced_costs_that_batch_counted_and_the_next_one_starts(
    db: str, caplog: pytest.LogCaptureFixture
) -> None:
    drops: list[str] = []
    s = make(db, on_drop=drops.append)
    s.start()
    try:
        killed_writer(s)
        # No file descriptor left for a new writer's pipe: a real EMFILE, not a stand-in. The
        # limit bounds descriptor numbers, and a new one takes the lowest free number: that.
        lowest = os.dup(0)
        os.close(lowest)
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (lowest, hard))
        try:
            s.record_request("user")
            s.flush()
        finally:
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        assert drops == ["store_batch_lost", "store_batch_lost"]
        assert (
            "store: no new writer process could start (OSError: [Errno 24] Too many open files)"
            in caplog.text
        )
        assert not writers()
        s.record_request("user")
        s.flush()
        assert len(writers()) == 1 and requests(s) == 2  # the first and the last
    finally:
        s.close()


def test_what_the_writer_logs_is_logged_here(db: str, store: Store, caplog: pytest.LogCaptureFixture) -> None:
    execute(db, "CREATE TRIGGER boom BEFORE INSERT ON counters BEGIN SELECT RAISE(ABORT, 'no'); END")
    store.record_request("user")
    with caplog.at_level(logging.ERROR, logger="shadowproxy.store"):
        store.flush()
    (rec,) = [r for r in caplog.records if "write to" in r.getMessage()]
    assert rec.name == "shadowproxy.store"
    assert rec.levelno == logging.ERROR
    assert rec.getMessage() == f"store: write to {db} failed (IntegrityError); this batch is lost"


def test_counts_a_locked_write_kept_are_written_by_the_next_flush_even_an_empty_one(
    db: str, store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    # Fails as SQLite's "no such table" (an OperationalError, like "database is locked").
    execute(db, "CREATE TRIGGER later BEFORE INSERT ON counters BEGIN INSERT INTO gone VALUES (1); END")
    store.record_request("user")
    store.record_request("user")
    store.flush()
    assert "counts kept for the next attempt" in caplog.text
    assert requests(store) == 0
    execute(db, "DROP TRIGGER later")
    store.flush()  # nothing new recorded: the writer still holds the two
    assert requests(store) == 2


def test_a_process_that_exits_without_closing_the_store_does_not_hang(tmp_path: Path) -> None:
    script = textwrap.dedent(
        f"""
        import sys
        sys.path.insert(0, {str(Path(__file__).parent.parent)!r})
        from tests.conftest import make_store
        s = make_store({str(tmp_path / "s.db")!r})
        s.start()
        s.record_request("user")
        s.flush()
        print("exiting", flush=True)
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "exiting\n"
    assert requests(make(str(tmp_path / "s.db"))) == 1


def test_an_exchange_reaches_the_writer_whole(store: Store) -> None:
    """The writer stores what the proxy recorded (pickled on the way, native classes included)."""
    store.record_exchange(exchange(fields=diff("$.a", 1, 2), query="page=2", n=7))
    store.flush()
    (sample,) = store.samples("user", 10)
    assert (sample.path, sample.query, sample.request_id) == ("/api/user/7", "page=2", "req-7")
    assert sample.fields == diff("$.a", 1, 2)
    assert (sample.primary_status, sample.shadow_status, sample.primary_body) == (200, 200, "{}")
