"""The store's writer: a process of its own that prepares samples and writes each batch.

Why a process and not a thread: a writer thread shares the GIL with the event loop. Every
SQLite call hands the GIL over and takes it back, and on a loaded machine the loop then
waits for the kernel to run the writer: stalls of 3-6 ms at each flush (`make bench`,
equal @8: p99 3.7-4.9 ms with flushes, 2.8 ms with none, nginx 2.8). Sample preparation
(decoding, redaction: ~0.6 ms of Python per sample) held the loop's GIL too. Here it all
costs the proxy process a few pickles and pipe writes per batch. Measured after the move
(bench's loop-stall column): 0-0.6 stalls over 2 ms per second, from 0.2-2.4; mismatch
p99 5-7 ms, from 12-13.

One batch is in flight at a time: the parent's shipper thread sends its counts, then its
samples one frame each (as plain tuples: see plain.py), and waits for the `Written` reply,
so a flush (`Store.flush`) still means "on disk". Log records emitted here travel back in
the reply and are logged by the parent, in its format.

The live verdict is judged here too (`_Judge`, `Store.judge`): reading every route's latency
pairs and ranking them is milliseconds of Python per route, and in the proxy's thread it
held the GIL the event loop needed. With 61 routes of evidence and the default 15 s
refresh, primary p99 at 1 connection was 8.3 ms, against 0.26 ms with no refresh (wrk,
30 s, equal shadow); judged here, with a reply that leaves out the latency pairs
(gate.evaluate_live), 0.6-0.75 ms.
"""

from __future__ import annotations

import atexit
import contextlib
import gc
import logging
import pickle
import signal
import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess

from shadowproxy import children, config, plain
from shadowproxy.evidence import Evidence
from shadowproxy.exchange import Exchange
from shadowproxy.redact import Redactor
from shadowproxy.store_delta import Delta
from shadowproxy.store_read import read_evidence
from shadowproxy.store_sample import SampleMaker
from shadowproxy.store_schema import (
    MAX_FIRST_PATHS,
    PendingSample,
    first_paths,
    insert_samples,
    open_writer,
    write_delta,
)

log = logging.getLogger("shadowproxy.store")

# Per route and batch, the newest samples prepared (see Writer._plan); the firsts of a path
# always go in. The proxy queues no more than this (Store._enqueue): every queued exchange
# is pickled on its side. When samples were prepared in the proxy, 50 per route per batch
# held the event loop for ~30 ms with every pair mismatching.
MAX_NEW_SAMPLES_PER_BATCH = 10


@dataclass(frozen=True, slots=True)
class Batch:
    """One flush: the counts, and the queued mismatches in arrival order."""

    delta: Delta
    samples: tuple[Exchange, ...] = ()


@dataclass(frozen=True, slots=True)
class _Head:
    """What starts a batch on the pipe: its counts, and how many sample frames follow."""

    delta: Delta
    samples: int


@dataclass(frozen=True, slots=True)
class _Judge:
    """Asks for the judgement of these routes' evidence as stored (see Store.judge)."""

    routes: tuple[str, ...]


# What the writer judges with (Store's `judge`): given to the process when it starts, so it
# must pickle (a module-level function, or a functools.partial of one).
Judge = Callable[[Evidence], object]


@dataclass(frozen=True, slots=True)
class LogLine:
    logger: str
    level: int
    message: str


@dataclass(frozen=True, slots=True)
class Written:
    """The reply to a batch (or to the stop): what the writer logged meanwhile, and whether
    it holds counts that failed to write (sent again with the next batch, even an empty one)."""

    logs: tuple[LogLine, ...] = ()
    unwritten: bool = False


@dataclass(frozen=True, slots=True)
class Judged:
    """The reply to a `_Judge`: the judgement, or None when there was none (the logs say why)."""

    result: object
    logs: tuple[LogLine, ...] = ()


class WriterGone(Exception):
    """The batch cannot reach a writer: the writer ended without replying, or a new one
    could not start. Either way the batch is lost; the text says which."""


class _Collect(logging.Handler):
    """Keeps the writer's log records for the next reply; the parent owns the log output."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[LogLine] = []

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.lines.append(LogLine(record.name, record.levelno, record.getMessage()))
        except Exception:
            self.handleError(record)

    def take(self) -> tuple[LogLine, ...]:
        lines, self.lines = tuple(self.lines), []
        return lines


@dataclass(slots=True)
class Writer:
    """The writer's state: its connection, and counts a failed write keeps for the next."""

    conn: sqlite3.Connection
    cfg: config.Store
    maker: SampleMaker
    path: str
    unwritten: Delta | None = field(default=None)

    def write(self, batch: Batch) -> None:
        conn, delta, queued = self.conn, batch.delta, batch.samples
        if self.unwritten is not None:
            self.unwritten.add(delta)
            delta, self.unwritten = self.unwritten, None
        if not delta.routes and not queued:
            return
        samples: list[PendingSample] | None = None
        try:
            samples = self._plan(queued, delta)
            conn.execute("BEGIN IMMEDIATE")
            write_delta(conn, delta)
            insert_samples(conn, samples, self.cfg.samples_per_route)
            conn.execute("COMMIT")
        except Exception as e:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            lost = [x.request.route for x in queued] if samples is None else [p.sample.route for p in samples]
            for route in lost:
                delta.route(route).count("samples_dropped")
            # Locked, busy, disk full: the next attempt may succeed. Anything else would fail
            # again and, kept, would hold every later count back with it.
            if isinstance(e, sqlite3.OperationalError):
                log.error("store: write to %s failed (%s); counts kept for the next attempt", self.path, e)
                self.unwritten = delta
            else:
                log.error("store: write to %s failed (%s); this batch is lost", self.path, type(e).__name__)

    def _plan(self, queued: tuple[Exchange, ...], delta: Delta) -> list[PendingSample]:
        """Prepare only the samples that will survive this batch: the newest N per route
        and each first of a field path (the rest would be evicted at once). Only a first
        of a path gets DeepDiff's explanation now; the rest are explained when read."""
        per_route: dict[str, int] = {}
        for ex in queued:
            per_route[ex.request.route] = per_route.get(ex.request.route, 0) + 1
        keep_newest = min(self.cfg.samples_per_route, MAX_NEW_SAMPLES_PER_BATCH)
        known: dict[str, set[str]] = {}
        seen: dict[str, int] = {}
        out: list[PendingSample] = []
        for ex in queued:
            route = ex.request.route
            paths = known.get(route)
            if paths is None:
                paths = known[route] = first_paths(self.conn, route)
            new: list[str] = []
            # First-of-path is about the field, not the element: `$.items[3].price` and
            # `$.items[7].price` are one field, and `line:12` one kind of text difference.
            for p in ex.comparison.paths if ex.comparison is not None else ():
                if p not in paths and len(paths) < MAX_FIRST_PATHS:
                    paths.add(p)
                    new.append(p)
            seen[route] = i = seen.get(route, 0) + 1
            newer = per_route[route] - i  # later mismatches of this route in this batch
            if not new and newer >= keep_newest:
                continue
            try:
                sample = self.maker.make(ex, explain=bool(new))
            except Exception as e:
                # The type only: an exception's text may quote the unredacted exchange.
                log.error("store: preparing a %s sample failed (%s); dropped", route, type(e).__name__)
                delta.route(route).count("samples_dropped")
                continue
            out.append(PendingSample(sample, tuple(new)))
        return out

    def close(self) -> None:
        if self.unwritten is not None:
            log.error("store: closing with counts that could not be written to %s", self.path)
        self.conn.close()


def serve(
    pipe: Connection,
    path: str,
    cfg: config.Store,
    redactor: Redactor,
    rules_for: Callable[[str], config.CompareRules],
    judge: Judge | None = None,
) -> None:
    """The writer process's main: write each batch received, or judge, and reply, until
    told to stop (None) or the parent is gone (end of file)."""
    # Its lifetime is the pipe's: a Ctrl-C or a SIGTERM to the whole process group must not
    # cut off the last flush the parent sends while it shuts down.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    collect = _Collect()
    root = logging.getLogger()
    root.handlers[:] = [collect]
    root.setLevel(logging.INFO)
    writer = Writer(open_writer(path), cfg, SampleMaker(cfg, redactor, rules_for), path)
    try:
        while True:
            try:
                head: _Head | _Judge | None = pipe.recv()
                if isinstance(head, _Judge):
                    pipe.send(Judged(_judgement(judge, path, head.routes), collect.take()))
                    continue
                frames = [pipe.recv_bytes() for _ in range(head.samples)] if head is not None else []
            except EOFError:
                return
            if head is None:
                return
            try:
                samples = tuple([plain.exchange_from(pickle.loads(f)) for f in frames])
                writer.write(Batch(head.delta, samples))
            except Exception as e:  # a bug here must not end the writer
                log.error("store: writing a batch failed (%s)", type(e).__name__)
            pipe.send(Written(collect.take(), writer.unwritten is not None))
    finally:
        writer.close()
        with contextlib.suppress(OSError):  # the parent is gone: nobody to tell
            pipe.send(Written(collect.take()))


def _judgement(judge: Judge | None, path: str, routes: tuple[str, ...]) -> object:
    if judge is None:
        log.error("store: asked for a verdict, but this store was given nothing to judge with")
        return None
    # Millions of pairs and ratios, none in a cycle: the collector's passes over them were
    # a third of the time (61 routes of 20,000 pairs: 380 against 500-530 ms).
    gc.disable()
    try:
        return judge(read_evidence(path, routes, None, samples=False))
    except Exception as e:  # the evidence holds no samples: its text quotes no exchange
        log.error("store: judging the stored evidence failed (%s: %s)", type(e).__name__, e)
        return None
    finally:
        gc.enable()


class WriterProcess:
    """The parent's handle on the writer process: the shipper thread writes through it, and
    any thread may ask for a judgement; one exchange on the pipe at a time."""

    def __init__(
        self,
        path: str,
        cfg: config.Store,
        redactor: Redactor,
        rules_for: Callable[[str], config.CompareRules],
        judge: Judge | None = None,
    ) -> None:
        self._args = (path, cfg, redactor, rules_for, judge)
        self._proc: BaseProcess | None = None
        self._pipe: Connection | None = None
        self._talk = threading.Lock()
        self._stopped = False

    def start(self) -> None:
        self._proc, self._pipe = children.spawn(serve, self._args, "shadowproxy-store-writer")
        # Registered after multiprocessing's own exit handler, so it runs first: a proxy that
        # exits without close() closes the pipe, the writer sees the end and exits, and
        # multiprocessing's join of its children returns.
        atexit.register(self._abandon)

    def write(self, delta: Delta, samples: Sequence[Exchange]) -> Written:
        with self._exchange() as pipe:
            pipe.send(_Head(delta, len(samples)))
            for ex in samples:
                # A frame each, not one pickle of the batch: every pipe write releases the
                # GIL, so the event loop waits for one sample's pickling at most (about
                # 0.1 ms for a 50 KB pair), not the batch's (5 ms for 50 of them).
                pipe.send_bytes(pickle.dumps(plain.exchange(ex), protocol=pickle.HIGHEST_PROTOCOL))
            reply: Written = pipe.recv()
        return reply

    def judge(self, routes: Sequence[str]) -> Judged:
        """The writer's judgement of these routes' stored evidence. The caller waits on the
        pipe, which holds no GIL, while the writer reads and ranks."""
        with self._exchange() as pipe:
            pipe.send(_Judge(tuple(routes)))
            reply: Judged = pipe.recv()
        return reply

    @contextlib.contextmanager
    def _exchange(self) -> Iterator[Connection]:
        """The pipe to a running writer (started if there is none), to this caller alone;
        a writer that ends mid-exchange is a WriterGone."""
        with self._talk:
            if self._stopped:
                raise WriterGone("the store is closed")
            if self._pipe is None:
                try:
                    self.start()
                except Exception as e:  # out of file descriptors, memory, the temporary directory...
                    raise WriterGone(f"no new writer process could start ({type(e).__name__}: {e})") from e
            assert self._pipe is not None
            try:
                yield self._pipe
            except (EOFError, OSError) as e:
                raise WriterGone(f"the writer process ended (exit code {self._reap()})") from e

    def stop(self, timeout_s: float = 30.0) -> Written | None:
        """Ask the writer to finish and wait for it; None when it was gone already."""
        with self._talk:
            self._stopped = True
            pipe = self._pipe
            if pipe is None:
                return None
            reply: Written | None = None
            try:
                pipe.send(None)
                if pipe.poll(timeout_s):
                    reply = pipe.recv()
            except (EOFError, OSError):
                pass
            self._reap(timeout_s)
            return reply

    def _reap(self, timeout_s: float = 5.0) -> int | None:
        atexit.unregister(self._abandon)
        proc, pipe = self._proc, self._pipe
        self._proc = self._pipe = None
        if pipe is not None:
            pipe.close()
        if proc is None:
            return None
        proc.join(timeout_s)
        if proc.exitcode is None:
            proc.kill()
            proc.join()
        return proc.exitcode

    def _abandon(self) -> None:
        if self._pipe is not None:
            self._pipe.close()
