"""The SQLite sample store: redacted mismatch samples, per-field counts, paired latencies.

The event loop only touches memory: each `record_*` adds to a batch under a lock held
for microseconds, and mismatches are queued (bounded; over the bound they are dropped and
counted). A shipper thread swaps the batch out every `flush_interval_s` and hands it to
the writer process (store_writer.py), which does the slow work (decoding, redaction,
DeepDiff's explanation, SQLite) on a GIL of its own and writes it in one transaction.
"""

from __future__ import annotations

import dataclasses
import logging
import random
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Final

from shadowproxy import config
from shadowproxy.buckets import finite
from shadowproxy.evidence import Evidence, Sample
from shadowproxy.exchange import PARTS, SKIP_REASONS, Exchange, SkipReason
from shadowproxy.redact import Redactor
from shadowproxy.store_delta import Delta, RouteDelta
from shadowproxy.store_read import (
    RouteSummary,
    read_evidence,
    read_sample,
    read_samples,
    read_summaries,
)
from shadowproxy.store_sample import explain_stored
from shadowproxy.store_schema import MAX_FIRST_PATHS, StoreError, open_writer
from shadowproxy.store_writer import (
    MAX_NEW_SAMPLES_PER_BATCH,
    Judge,
    LogLine,
    WriterGone,
    WriterProcess,
)

__all__ = ["RouteSummary", "Store", "StoreError"]

log = logging.getLogger("shadowproxy.store")

MiB = 1024 * 1024
_PART_KEYS: Final = {p: f"part:{p}" for p in PARTS}
DROP_QUEUE_FULL = "store_queue_full"
DROP_BATCH_LOST = "store_batch_lost"  # the writer process died holding it
_SKIP_KEYS: Final[dict[str, str]] = {r: f"skip:{r}" for r in SKIP_REASONS}


def _size(ex: Exchange) -> int:
    return len(ex.request.body) + len(ex.primary.body) + len(ex.shadow.body)


class Store:
    def __init__(
        self,
        path: str,
        cfg: config.Store,
        redactor: Redactor,
        rules_for: Callable[[str], config.CompareRules],
        *,
        max_queued_samples: int = 1000,
        max_queued_bytes: int = 64 * MiB,
        on_drop: Callable[[str], None] | None = None,
        judge: Judge | None = None,
    ) -> None:
        """`judge`: what `judge()` runs in the writer process over the stored evidence."""
        self.path = path
        self._cfg = cfg
        self._redactor = redactor
        self._rules_for = rules_for
        self._max_queued = max_queued_samples
        self._max_queued_bytes = max_queued_bytes
        # Told of each sample dropped for a full queue (metrics count it; so does the store),
        # and of each batch lost with a writer process that died.
        self._on_drop = on_drop
        # Guards the batch and the queue, shared by the loop (record_*) and the shipper thread
        # (the swap in _ship).
        self._lock = threading.Lock()
        self._pending = Delta()
        # The mismatches the writer will keep (see _enqueue), each with its arrival number.
        self._firsts: list[tuple[int, Exchange]] = []
        self._newest: dict[str, deque[tuple[int, Exchange]]] = {}
        self._keep_newest = min(cfg.samples_per_route, MAX_NEW_SAMPLES_PER_BATCH)
        self._paths_seen: dict[str, set[str]] = {}
        self._seq = 0
        self._queued = 0
        self._queued_bytes = 0
        self._pairs_seen: dict[str, int] = {}
        self._rng = random.Random()
        self._pairs_cap = cfg.latency_pairs_per_route  # per shadowed request: not via a dataclass
        # Writer lifecycle and flush handshakes.
        self._cond = threading.Condition()
        self._flush_requested = 0
        self._flush_done = 0
        self._stopping = False
        self._closed = False
        self._writer: threading.Thread | None = None
        self._child = WriterProcess(path, cfg, redactor, rules_for, judge)
        # The writer holds counts it failed to write: ship even an empty batch to retry them.
        self._unwritten = False
        self.internal_errors = 0

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        if self._writer is not None:
            return
        # Here, not only in the writer: a bad path or an old schema fails in the caller.
        try:
            conn = open_writer(self.path)
            try:
                seen = conn.execute("SELECT route, value FROM counters WHERE name = 'pairs_seen'").fetchall()
            finally:
                conn.close()
        except sqlite3.Error as e:
            raise StoreError(f"{self.path}: cannot open the store file for writing ({e})") from None
        with self._lock:
            for route, n in seen:
                self._pairs_seen[route] = self._pairs_seen.get(route, 0) + n
        try:
            self._child.start()
        except OSError as e:
            raise StoreError(
                f"cannot start the store's writer process ({e}); multiprocessing's forkserver needs "
                "a writable temporary directory (TMPDIR, else /tmp) for its socket"
            ) from None
        self._writer = threading.Thread(target=self._run, name="shadowproxy-store", daemon=True)
        self._writer.start()

    def close(self) -> None:
        with self._cond:
            if self._closed:
                return
            self._closed = True
            self._stopping = True
            self._cond.notify_all()
        if self._writer is not None:
            self._writer.join()

    def flush(self) -> None:
        with self._cond:
            writer = self._writer
            if writer is None or not writer.is_alive():
                return
            self._flush_requested += 1
            target = self._flush_requested
            self._cond.notify_all()
            # The timeout only re-checks that the writer is alive; the notify ends the wait.
            while self._flush_done < target and writer.is_alive():
                self._cond.wait(timeout=1.0)

    # ------------------------------------------------------------------ hot path

    def record_request(self, route: str) -> None:
        self._count(route, "requests")

    def record_skip(self, route: str, reason: SkipReason) -> None:
        self._count(route, _SKIP_KEYS.get(reason) or f"skip:{reason}")

    def record_lost(self, route: str, reason: str) -> None:
        """A shadow call made for this route whose pair was dropped before it could be
        recorded (at its deadline, or abandoned at shutdown)."""
        self._count(route, f"lost:{reason}")

    def _count(self, route: str, name: str) -> None:
        try:
            with self._lock:
                self._route(route).count(name)
        except Exception as e:
            self._internal_error(e)

    def record_exchange(self, ex: Exchange) -> None:
        try:
            with self._lock:
                self._record_exchange(ex)
        except Exception as e:
            self._internal_error(e)

    def _record_exchange(self, ex: Exchange) -> None:
        route = ex.request.route
        d = self._route(route)
        d.count("shadowed")
        if ex.shadow.failed:
            d.count("shadow_errors")
        if ex.shadow.error == "timeout":
            d.count("shadow_timeouts")
        if ex.primary.status is not None:
            d.primary.observe(ex.primary.latency_s)
        # A timeout is a slow answer (its latency is the time waited); a refused
        # connection is not a fast one, so it stays out of the histogram.
        if ex.shadow.status is not None or ex.shadow.error == "timeout":
            d.shadow.observe(ex.shadow.latency_s)
        if ex.primary.ok and ex.shadow.ok:
            self._add_pair(route, d, ex.primary.latency_s, ex.shadow.latency_s)
        cmp = ex.comparison
        if cmp is not None:
            d.count("compared")
            if cmp.hashed_only:
                d.count("hashed_only")
            if not cmp.match:
                d.count("mismatches")
                for part in cmp.parts:
                    d.count(_PART_KEYS.get(part) or f"part:{part}")
                # Keyed like the noise paths (and the metrics): once per request per field,
                # indices folded. Diffy's rule compares raw with noise for the same field.
                for path in cmp.paths:
                    d.count_field(path, 0)
                self._enqueue(ex, d, cmp.paths)
        if ex.secondary is not None:
            d.count("noise_total")
            for path in ex.noise_paths:
                d.count_field(path, 1)

    def _route(self, route: str) -> RouteDelta:
        if self._pending.first_at is None:
            self._pending.first_at = time.time()
        return self._pending.route(route)

    def _add_pair(self, route: str, d: RouteDelta, primary_s: float, shadow_s: float) -> None:
        if not (finite(primary_s) and finite(shadow_s)):
            return
        # Reservoir sampling (Vitter's algorithm R): every pair ever seen on the route
        # has the same chance to be in the kept set, restarts included (pairs_seen persists).
        n = self._pairs_seen.get(route, 0) + 1
        self._pairs_seen[route] = n
        d.count("pairs_seen")
        cap = self._pairs_cap
        # int(random() * n), not randrange(n): once the reservoir is full (20,000 pairs, four
        # seconds of the bench) this runs per shadowed request, and randrange is Python code,
        # 2,700 instructions (callgrind). The bias, under n / 2**53, is no concern here.
        slot = n - 1 if n <= cap else int(self._rng.random() * n)
        if slot < cap:
            d.add_pair(slot, primary_s, shadow_s)

    def _enqueue(self, ex: Exchange, d: RouteDelta, paths: tuple[str, ...]) -> None:
        """Queue only what the writer could keep: a mismatch showing a field path not seen
        on its route before (in this process; the writer checks the file), or one of the
        newest few per route. Queueing every mismatch for the writer to discard cost the
        GIL and the garbage collector: gen-2 pauses of 60 ms, the mismatch p99."""
        route = ex.request.route
        seen = self._paths_seen.setdefault(route, set())
        fresh = not seen.issuperset(paths) and len(seen) < MAX_FIRST_PATHS
        ring = None
        if not fresh:
            if not self._keep_newest:
                return
            ring = self._newest.get(route)
            if ring is None:
                ring = self._newest[route] = deque()
            if len(ring) == self._keep_newest:
                # The oldest of the few makes room: only the newest would be kept anyway.
                self._queued -= 1
                self._queued_bytes -= _size(ring.popleft()[1])
        size = _size(ex)
        if self._queued >= self._max_queued or self._queued_bytes + size > self._max_queued_bytes:
            d.count("samples_dropped")
            if self._on_drop is not None:
                self._on_drop(DROP_QUEUE_FULL)
            return
        self._seq += 1
        if ring is None:
            seen.update(paths)
            self._firsts.append((self._seq, ex))
        else:
            ring.append((self._seq, ex))
        self._queued += 1
        self._queued_bytes += size

    def _internal_error(self, e: Exception) -> None:
        self.internal_errors += 1
        if self.internal_errors == 1:  # once: a bug on the hot path would otherwise flood the log
            # The type only: an exception's text may quote the unredacted exchange.
            log.error("store: recording failed (%s); counts may be incomplete", type(e).__name__)

    # ------------------------------------------------------------------ readers

    def evidence(
        self,
        routes: Sequence[str] = (),
        noise: config.Noise | None = None,
        *,
        explain: bool = False,
    ) -> Evidence:
        """`explain`: give the example samples DeepDiff's explanation (a report wants it).
        The live verdict does not come through here: the writer process judges (`judge`)."""
        ev = read_evidence(self.path, routes, noise)
        if not explain:
            return ev
        explained = {route: tuple(self._explained(s) for s in ss) for route, ss in ev.samples.items()}
        return dataclasses.replace(ev, samples=explained)

    def judge(self, routes: Sequence[str]) -> object:
        """The store's `judge` applied to these routes' evidence as written (flush first for
        the newest counts), in the writer process: in a thread of this one, the statistics
        held the GIL the event loop needed for tens of milliseconds per refresh (see
        store_writer). Raises StoreError when there is no judgement; never judges here."""
        try:
            reply = self._child.judge(routes)
        except WriterGone as e:
            raise StoreError(f"no live verdict: {e}") from None
        _relay(reply.logs)
        if reply.result is None:
            raise StoreError("no live verdict: the store's writer process could not judge (logged above)")
        return reply.result

    def route_summaries(self) -> list[RouteSummary]:
        return read_summaries(self.path)

    def samples(self, route: str | None, limit: int) -> list[Sample]:
        return read_samples(self.path, route, limit)

    def sample(self, sample_id: int) -> Sample | None:
        s = read_sample(self.path, sample_id)
        return None if s is None else self._explained(s)

    def _explained(self, s: Sample) -> Sample:
        """DeepDiff's explanation is milliseconds of CPU and the GIL the event loop needs:
        computed when someone reads a sample, not for every mismatch written."""
        if s.explanation:
            return s
        return dataclasses.replace(s, explanation=explain_stored(s, self._rules_for, self._redactor))

    # ------------------------------------------------------------------ shipper thread

    def _run(self) -> None:
        while True:
            with self._cond:
                if not self._stopping and self._flush_requested == self._flush_done:
                    self._cond.wait(timeout=self._cfg.flush_interval_s)
                target, stopping = self._flush_requested, self._stopping
            try:
                self._ship()
            except Exception as e:
                log.error("store: writing a batch failed (%s)", type(e).__name__)
            if stopping:
                stopped = self._child.stop()
                _relay(stopped.logs if stopped is not None else ())
            with self._cond:
                self._flush_done = target
                self._cond.notify_all()
            if stopping:
                return

    def _ship(self) -> None:
        """Hand the batch to the writer process and wait until it is on disk."""
        with self._lock:
            delta, self._pending = self._pending, Delta()
            firsts, self._firsts = self._firsts, []
            newest, self._newest = self._newest, {}
            self._queued = self._queued_bytes = 0
        queued = tuple(ex for _, ex in sorted([*firsts, *(x for ring in newest.values() for x in ring)]))
        if not delta.routes and not queued and not self._unwritten:
            return
        try:
            reply = self._child.write(delta, queued)
        except WriterGone as e:
            self._unwritten = False
            if self._on_drop is not None:
                self._on_drop(DROP_BATCH_LOST)
            log.error(
                "store: %s; a batch of %d routes' counts is lost, a new writer takes the next",
                e,
                len(delta.routes),
            )
            return
        self._unwritten = reply.unwritten
        _relay(reply.logs)


def _relay(logs: Sequence[LogLine]) -> None:
    """Log what the writer process logged, through this process's handlers."""
    for line in logs:
        logging.getLogger(line.logger).log(line.level, "%s", line.message)
