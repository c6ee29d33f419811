"""The live verdict is judged in the store's writer process, never in the proxy's."""

from __future__ import annotations

import functools
import logging
import os

import pytest

from shadowproxy import config, gate
from shadowproxy.evidence import Evidence
from shadowproxy.store import StoreError
from tests.conftest import make_store
from tests.test_store import exchange


# Module-level, so that they pickle: the writer process that runs them imports this module.
def where_judged(evidence: Evidence) -> tuple[int, dict[str, int]]:
    return os.getpid(), {r.route: r.requests for r in evidence.routes}


def broken_judge(evidence: Evidence) -> object:
    raise ValueError(f"cannot judge {len(evidence.routes)} routes")


def test_the_judge_runs_in_the_writer_process_over_what_was_flushed(db: str) -> None:
    store = make_store(db, judge=where_judged)
    store.start()
    try:
        for _ in range(3):
            store.record_request("user")
        store.record_request("pitches")
        store.flush()
        judged = store.judge(["user", "pitches", "never"])
    finally:
        store.close()
    assert isinstance(judged, tuple)
    pid, requests = judged
    assert pid != os.getpid()
    assert requests == {"user": 3, "pitches": 1, "never": 0}


def test_the_gate_judges_through_the_store_and_its_decision_comes_back_whole(db: str) -> None:
    cfg = config.Config(
        primary=config.Backend(url="http://127.0.0.1:9"),
        shadow=config.Backend(url="http://127.0.0.1:9"),
        routes=(config.Route(name="user", match="/api/users/{id}"),),
    )
    store = make_store(db, judge=functools.partial(gate.evaluate, cfg))
    store.start()
    try:
        for n in range(5):
            store.record_request("user")
            store.record_exchange(exchange(n=n))
        store.flush()
        decision = store.judge(["user"])
    finally:
        store.close()
    assert isinstance(decision, gate.Decision)
    assert [(r.route, r.verdict) for r in decision.routes] == [("user", "INCONCLUSIVE")]
    assert decision.verdict == "INCONCLUSIVE"  # 5 pairs are not enough for a GO


def test_a_failing_judge_is_a_store_error_logged_here_and_the_writer_keeps_writing(
    db: str, caplog: pytest.LogCaptureFixture
) -> None:
    store = make_store(db, judge=broken_judge)
    store.start()
    try:
        store.record_request("user")
        with (
            caplog.at_level(logging.ERROR, logger="shadowproxy.store"),
            pytest.raises(StoreError, match="could not judge"),
        ):
            store.judge(["user"])
        assert "judging the stored evidence failed (ValueError: cannot judge 1 routes)" in caplog.text
        store.record_request("user")
        store.flush()
        assert [r.requests for r in store.evidence(["user"]).routes] == [2]
    finally:
        store.close()


def test_no_judge_given_or_a_closed_store_is_a_store_error_not_a_judgement_here(db: str) -> None:
    store = make_store(db)
    store.start()
    with pytest.raises(StoreError, match="could not judge"):
        store.judge(["user"])
    store.close()
    judged = make_store(db, judge=where_judged)
    judged.start()
    judged.close()
    with pytest.raises(StoreError, match="the store is closed"):
        judged.judge(["user"])
