"""The comparison worker: it compares as the loop would; it says when it is busy, refuses
past its cap, and hands back (None) the pairs of a worker that dies or hangs, for the loop
to compare, before a new worker starts."""

import gzip
import os
import re
import signal
from collections.abc import AsyncIterator, Callable

import orjson
import pytest

from shadowproxy import config
from shadowproxy.compare import compare
from shadowproxy.compare_process import CompareProcess
from shadowproxy.exchange import UpstreamResult

RULES = config.CompareRules(ignore=("$.meta",))
ROUTES = {"user": config.CompareRules(ignore=("$.name",))}


def res(body: bytes, status: int = 200, extra: tuple[tuple[str, str], ...] = ()) -> UpstreamResult:
    h = (("Content-Type", "application/json"), *extra)
    return UpstreamResult("primary", status, h, body, 0.01, len(body))


DOC = {"id": 7, "name": "Ada", "tags": ["a", "b"], "meta": {"took": 3}, "ok": True}
PAIRS = [
    (res(orjson.dumps(DOC)), res(orjson.dumps({**DOC, "id": 8, "meta": {"took": 9}, "ok": 1}))),
    (
        res(orjson.dumps(DOC), extra=(("Vary", "Accept"),)),
        res(orjson.dumps({**DOC, "tags": ["b"]}), status=500),
    ),
    (res(b"plain\ntext\n"), res(b"plain\nother\n")),
    (res(orjson.dumps(DOC)), res(b"{not json")),
    (res(gzip.compress(orjson.dumps(DOC)), extra=(("Content-Encoding", "gzip"),)), res(orjson.dumps(DOC))),
]


@pytest.fixture
async def worker() -> AsyncIterator[Callable[..., CompareProcess]]:
    made: list[CompareProcess] = []

    def make(max_pending: int = 64, timeout_s: float = 10.0) -> CompareProcess:
        cp = CompareProcess(ROUTES, RULES, max_pending, timeout_s)
        made.append(cp)
        return cp

    yield make
    for cp in made:
        await cp.close()


@pytest.mark.parametrize("route", ["user", "other"])
async def test_the_worker_compares_as_the_loop_does(
    worker: Callable[..., CompareProcess], route: str
) -> None:
    cp = worker()
    await cp.start()
    futures = [cp.compare(route, p, s) for p, s in PAIRS]  # one batch, one frame
    for (p, s), fut in zip(PAIRS, futures, strict=True):
        assert fut is not None
        assert await fut == compare(p, s, ROUTES.get(route, RULES))


async def test_half_full_it_is_busy_and_full_it_refuses_at_once(
    worker: Callable[..., CompareProcess],
) -> None:
    cp = worker(max_pending=2)
    await cp.start()
    os.kill(cp.pid or 0, signal.SIGSTOP)  # a worker that cannot keep up
    try:
        p, s = PAIRS[0]
        assert not cp.busy
        waiting = [cp.compare("user", p, s)]
        assert cp.busy  # the dispatcher starts no more shadow calls
        waiting.append(cp.compare("user", p, s))
        assert all(f is not None and not f.done() for f in waiting)
        assert cp.compare("user", p, s) is None  # the caller compares this one itself
    finally:
        os.kill(cp.pid or 0, signal.SIGCONT)
    assert [await f for f in waiting if f is not None] == [compare(p, s, ROUTES["user"])] * 2


async def test_a_hung_worker_is_given_up_its_pairs_handed_back_and_replaced(
    worker: Callable[..., CompareProcess],
) -> None:
    cp = worker(timeout_s=0.4)
    await cp.start()
    hung = cp.pid
    os.kill(hung or 0, signal.SIGSTOP)
    p, s = PAIRS[0]
    fut = cp.compare("user", p, s)
    assert fut is not None and await fut is None  # after timeout_s, not forever
    assert cp.compare("user", p, s) is None  # no worker: refused, and a new one starts
    assert await cp.restarted() and cp.pid != hung
    again = cp.compare("user", p, s)
    assert again is not None and await again == compare(p, s, ROUTES["user"])


async def test_a_killed_worker_hands_back_the_pairs_it_held(
    worker: Callable[..., CompareProcess], caplog: pytest.LogCaptureFixture
) -> None:
    cp = worker()
    await cp.start()
    os.kill(cp.pid or 0, signal.SIGSTOP)
    p, s = PAIRS[1]
    fut = cp.compare("user", p, s)
    assert fut is not None
    os.kill(cp.pid or 0, signal.SIGKILL)
    assert await fut is None
    assert "compare: the worker process ended; the loop compares the 1 pairs it held" in caplog.text


async def test_a_pair_that_breaks_compare_is_handed_back_and_the_worker_goes_on(
    worker: Callable[..., CompareProcess], caplog: pytest.LogCaptureFixture
) -> None:
    cp = worker()
    await cp.start()
    broken = UpstreamResult("shadow", 200, (("only-a-name",),), b"[]", 0.01)  # type: ignore[arg-type]
    bad = cp.compare("user", res(b"{}"), broken)
    good = cp.compare("user", *PAIRS[0])
    assert bad is not None and good is not None
    assert await bad is None and await good == compare(*PAIRS[0], ROUTES["user"])
    # ValueError from CPython's unpacking, TypeError from the compiled build's.
    said = r"compare: the worker could not compare a pair \((ValueError|TypeError)\); the loop compares it"
    assert re.search(said, caplog.text), caplog.text
