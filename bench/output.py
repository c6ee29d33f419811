"""The run as Markdown (for people and the PR) and JSON (for tools). Pure: strings only."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from bench.results import Results, markdown_table, paced_table
from bench.targets import Target


@dataclass(frozen=True, slots=True)
class Params:
    scenarios: tuple[str, ...]
    bodies: tuple[str, ...]
    connections: tuple[int, ...]
    duration_s: int
    warmup_s: int
    smoke: bool
    repeat: int = 1
    # Where `python -m shadowproxy` runs from: None for the repo itself (pure Python), or a
    # copy with the compiled build (`make compiled`).
    tree: Path | None = None
    # bench.instructions only: where callgrind's files stay, for callgrind_annotate (else a
    # temporary directory, removed).
    keep: Path | None = None
    # Fixed request rates of the paced rows (bench/paced.py); empty for none.
    rates: tuple[int, ...] = ()


HOW = """\
How: every process on 127.0.0.1; `wrk -t1 -c<conns> -d<duration>s --latency` per row after a warm-up.
Upstreams are nginx (worker_processes 1, keepalive, access_log off) serving the JSON body from a file;
the slow shadow answers after 200 ms and the hanging one never (shadow timeout_s 1), both a bare asyncio
process. proxy CPU = utime+stime of the proxy's process group over the row / requests; peak RSS = VmHWM
summed over the group (since the proxy started: one proxy process per scenario, rows in table order;
the group includes the store's writer, the comparison worker and their forkserver, whose shared pages
it counts twice); PSS = the group's proportional set size at the end of the row, shared pages counted
once; loop stalls = ticks of the proxy's 10 ms event-loop timer more than 2 ms late during the row,
per second; pairs compared = the proxy's comparisons over its client requests during the row (both
from its /metrics): under 100 % when it skipped shadows (saturated, compare_busy) or they failed,
so that row's req/s are those of less work. idle CPUs = the machine's idle time during the row
(/proc/stat, every process counted), in CPUs: near 0, wrk, the upstreams and the proxy shared
saturated cores, and the row's latencies include waiting for one.
Ratios compare with nginx-mirror and direct at the same body and connections."""

PACED_HOW = """\
Paced rows: `h2load --h1 -c1 --rps=<rate> -D<duration> --warm-up-time=1`, one connection sending a
request every 1/rate s, each after an idle gap (wrk's closed loop never lets the processes idle);
p50 and p99 from h2load's per-request log. On this kind of machine an idle process pays several times
its loaded CPU per request (bench/README, "At a fixed request rate"), so these rows show
the latency a staging client feels. Their req/s is the rate asked for: only the added p50 compares.
Their proxy CPU includes what the group does per second at any load (timers, flushes), spread
over few requests."""


def machine_lines(machine: dict[str, Any]) -> list[str]:
    """Where and when it ran, what with, and how busy the machine was before."""
    versions = ", ".join(f"{k} {v}" for k, v in machine.get("versions", {}).items())
    return [
        f"{machine.get('date')} on {machine.get('nproc')} CPU(s), {machine.get('cpu_model')}, "
        f"{machine.get('memory_gib')} GiB, Linux {machine.get('kernel')}, Python {machine.get('python')}; "
        f"{versions}; commit {machine.get('git_commit')}; shadowproxy build: {machine.get('build')}.",
        f"Load average before the run: {machine.get('loadavg_1m_before')} (1 min; well above 0 means other "
        "work competed for the CPUs and every number below is pessimistic).",
    ]


def markdown(machine: dict[str, Any], params: Params, results: Results, targets: list[Target]) -> str:
    head = [
        "# shadowproxy benchmark" + (" (smoke: not a measurement)" if params.smoke else ""),
        "",
        *machine_lines(machine),
        f"Duration {params.duration_s} s per row, warm-up {params.warmup_s} s per scenario, "
        f"connections {', '.join(map(str, params.connections))}"
        + (
            f"; {params.repeat} rounds, each starting every scenario afresh, in turn: a row is the "
            "round with the median req/s, and `req/s range` and `p99 range` the spread over the rounds."
            if params.repeat > 1
            else "."
        ),
        "",
    ]
    body = [markdown_table(results.rows()), ""]
    if paced_rows := results.rows(paced=True):
        body += ["At a fixed request rate:", "", paced_table(paced_rows), ""]
    body += ["Targets (reported, not asserted):", "", "```"]
    body += [t.line() for t in targets]
    body += ["```", "", HOW, ""]
    if paced_rows:
        body += [PACED_HOW, ""]
    return "\n".join(head + body)


def json_document(machine: dict[str, Any], params: Params, results: Results, targets: list[Target]) -> bytes:
    rows = []
    for row in results.rows() + results.rows(paced=True):
        m, w = row.m, row.m.wrk
        rows.append(
            {
                "scenario": m.scenario,
                "body": m.body,
                "connections": m.connections,
                "rate": m.rate,
                "ok": m.ok,
                "error": m.error,
                "requests": w.requests if w else None,
                "duration_s": w.duration_s if w else None,
                "rps": w.rps if w else None,
                "rps_range": list(m.rps_range) if m.rps_range else None,
                "p50_ms": w.p50_ms if w else None,
                "p99_ms": w.p99_ms if w else None,
                "p99_rounds_ms": list(m.p99_rounds),
                "socket_errors": w.socket_errors if w else None,
                "non_2xx": w.non_2xx if w else None,
                "proxy_cpu_us_per_request": m.cpu_us_per_request,
                "idle_cpus": m.idle_cpus,
                "proxy_peak_rss_kib": m.peak_rss_kib,
                "proxy_pss_kib": m.pss_kib,
                "loop_stalls_per_s": m.loop_stalls_per_s,
                "pairs_compared_share": m.compared_share,
                "rps_vs_mirror": row.vs_mirror,
                "rps_vs_direct": row.vs_direct,
                "p50_added_over_direct_ms": row.added_p50_ms,
            }
        )
    doc = {
        "machine": machine,
        "params": {
            "scenarios": list(params.scenarios),
            "bodies": list(params.bodies),
            "connections": list(params.connections),
            "duration_s": params.duration_s,
            "warmup_s": params.warmup_s,
            "repeat": params.repeat,
            "rates": list(params.rates),
            "smoke": params.smoke,
        },
        "results": rows,
        "targets": [{"name": t.name, "status": t.status, "detail": t.detail} for t in targets],
    }
    return orjson.dumps(doc, option=orjson.OPT_INDENT_2) + b"\n"
