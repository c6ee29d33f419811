"""Measurements, the ratios between them, and the table they print as. Pure: no I/O."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from bench.wrk import WrkResult


@dataclass(frozen=True, slots=True)
class Measurement:
    scenario: str
    body: str
    connections: int
    wrk: WrkResult | None = None
    # None where there is no proxy (direct) or the run failed.
    cpu_us_per_request: float | None = None
    peak_rss_kib: int | None = None
    error: str | None = None
    # With --repeat: the lowest and highest req/s over the rounds (this row is the median one),
    # and every round's p99, lowest first: on a shared 2-CPU machine one row's p99 moved by a
    # factor of two between rounds, whichever round had the median req/s.
    rps_range: tuple[float, float] | None = None
    p99_rounds: tuple[float, ...] = ()
    # The proxy's event loop late by more than 2 ms, per second of the run, and the share of
    # its client requests whose shadow answer it compared (bench/proxymetrics.py).
    loop_stalls_per_s: float | None = None
    compared_share: float | None = None
    # The proxy's process group's proportional set size at the end of the row (bench/procstat.py).
    pss_kib: int | None = None
    # Requests per second of a paced row (bench/paced.py); None for wrk's closed loop.
    rate: int | None = None
    # The machine's idle CPU time over the row, in CPUs (0.3: on average, 0.3 of a CPU was
    # idle): near 0, every process of the row (wrk, the upstreams, the proxy) competed for
    # the cores, and a second worker has none free to scale into.
    idle_cpus: float | None = None

    @property
    def ok(self) -> bool:
        return self.wrk is not None and self.error is None

    @property
    def median_p99_ms(self) -> float | None:
        """The median of the rounds' p99s (the one round's p99 without --repeat): what a p99
        target judges, as the p99 of the median-req/s round is one draw of a noisy number."""
        if self.p99_rounds:
            return self.p99_rounds[(len(self.p99_rounds) - 1) // 2]
        return self.wrk.p99_ms if self.wrk is not None else None


def median_of(rounds: list[Measurement]) -> Measurement:
    """The round with the median req/s, whole (its p50, p99 and CPU belong together), with
    the spread of every round; a row that failed in any round is reported as failed. Paced
    rows all run at the rate asked for: theirs is the round with the median p50."""
    failed = [m for m in rounds if not m.ok]
    if failed or len(rounds) == 1:
        return failed[0] if failed else rounds[0]
    if rounds[0].rate is not None:
        by_p50 = sorted(rounds, key=lambda m: m.wrk.p50_ms if m.wrk else 0.0)
        return by_p50[(len(by_p50) - 1) // 2]
    ranked = sorted(rounds, key=lambda m: m.wrk.rps if m.wrk else 0.0)
    rps = [m.wrk.rps for m in ranked if m.wrk]
    p99 = tuple(sorted(m.wrk.p99_ms for m in ranked if m.wrk))
    return dataclasses.replace(ranked[(len(ranked) - 1) // 2], rps_range=(rps[0], rps[-1]), p99_rounds=p99)


@dataclass(frozen=True, slots=True)
class Row:
    """A measurement with its comparisons to the baselines at the same body and connections."""

    m: Measurement
    vs_mirror: float | None
    vs_direct: float | None
    added_p50_ms: float | None


class Results:
    def __init__(self, measurements: list[Measurement]) -> None:
        self.measurements = measurements
        self._index = {(m.scenario, m.body, m.connections, m.rate): m for m in measurements}

    def get(self, scenario: str, body: str, connections: int, rate: int | None = None) -> WrkResult | None:
        m = self._index.get((scenario, body, connections, rate))
        return m.wrk if m is not None and m.ok else None

    def measurement(self, scenario: str, body: str, connections: int) -> Measurement | None:
        m = self._index.get((scenario, body, connections, None))
        return m if m is not None and m.ok else None

    def rows(self, paced: bool = False) -> list[Row]:
        """The closed-loop rows, or the paced ones. A paced row's req/s is the rate asked
        for, so only its added p50 compares."""
        out = []
        for m in self.measurements:
            if (m.rate is not None) != paced:
                continue
            mirror = self.get("nginx-mirror", m.body, m.connections, m.rate)
            direct = self.get("direct", m.body, m.connections, m.rate)
            w = m.wrk if m.ok else None
            out.append(
                Row(
                    m,
                    vs_mirror=_ratio(w.rps, mirror.rps) if w and mirror and not paced else None,
                    vs_direct=_ratio(w.rps, direct.rps) if w and direct and not paced else None,
                    added_p50_ms=w.p50_ms - direct.p50_ms if w and direct else None,
                )
            )
        return out


def _ratio(a: float, b: float) -> float | None:
    return a / b if b > 0 else None


COLUMNS = (
    "scenario",
    "body",
    "conns",
    "req/s",
    "req/s range",
    "p50 ms",
    "p99 ms",
    "p99 range",
    "proxy CPU µs/req",
    "idle CPUs",
    "proxy peak RSS MiB",
    "proxy PSS MiB",
    "loop stalls >2 ms /s",
    "pairs compared %",
    "req/s vs mirror",
    "req/s vs direct",
    "p50 added over direct ms",
    "note",
)


_LEFT = {"scenario", "body", "note"}


def _num(value: float | None, fmt: str) -> str:
    return "—" if value is None else format(value, fmt)


def cells(row: Row) -> list[str]:
    m, w = row.m, row.m.wrk if row.m.ok else None
    rss_mib = None if m.peak_rss_kib is None else m.peak_rss_kib / 1024
    pss_mib = None if m.pss_kib is None else m.pss_kib / 1024
    return [
        m.scenario,
        m.body,
        str(m.connections),
        _num(w.rps if w else None, ",.0f"),
        "—" if m.rps_range is None or not w else f"{m.rps_range[0]:,.0f} to {m.rps_range[1]:,.0f}",
        _num(w.p50_ms if w else None, ".2f"),
        _num(w.p99_ms if w else None, ".2f"),
        f"{m.p99_rounds[0]:.2f} to {m.p99_rounds[-1]:.2f}" if w and len(m.p99_rounds) > 1 else "—",
        _num(m.cpu_us_per_request if w else None, ".0f"),
        _num(m.idle_cpus if w else None, ".2f"),
        _num(rss_mib if w else None, ".1f"),
        _num(pss_mib if w else None, ".1f"),
        _num(m.loop_stalls_per_s if w else None, ".1f"),
        _num(m.compared_share * 100 if w and m.compared_share is not None else None, ".0f"),
        _num(row.vs_mirror, ".2f"),
        _num(row.vs_direct, ".2f"),
        _num(row.added_p50_ms, "+.2f"),
        _note(m),
    ]


def _note(m: Measurement) -> str:
    if m.error is not None:
        # One line: a table cell cannot hold a log tail.
        first = m.error.strip().splitlines()[0] if m.error.strip() else "failed"
        return "FAILED: " + first.replace("|", "/")[:120]
    if m.wrk is not None and m.wrk.failed:
        return f"{m.wrk.failed} failed requests"
    return ""


def markdown_table(rows: list[Row]) -> str:
    return _table(COLUMNS, [cells(r) for r in rows])


PACED_COLUMNS = (
    "scenario",
    "body",
    "conns",
    "req/s asked",
    "req/s",
    "p50 ms",
    "p99 ms",
    "proxy CPU µs/req",
    "p50 added over direct ms",
    "note",
)


def paced_cells(row: Row) -> list[str]:
    m, w = row.m, row.m.wrk if row.m.ok else None
    return [
        m.scenario,
        m.body,
        str(m.connections),
        _num(m.rate, ",d"),
        _num(w.rps if w else None, ",.0f"),
        _num(w.p50_ms if w else None, ".2f"),
        _num(w.p99_ms if w else None, ".2f"),
        _num(m.cpu_us_per_request if w else None, ".0f"),
        _num(row.added_p50_ms, "+.2f"),
        _note(m),
    ]


def paced_table(rows: list[Row]) -> str:
    return _table(PACED_COLUMNS, [paced_cells(r) for r in rows])


def _table(columns: tuple[str, ...], rows: list[list[str]]) -> str:
    lines = [
        "| " + " | ".join(columns) + " |",
        "|" + "|".join("---" if c in _LEFT else "---:" for c in columns) + "|",
    ]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)
