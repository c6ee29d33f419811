"""`python -m bench.instructions`: instructions per request on shadowproxy's event-loop thread,
counted by valgrind's callgrind, per scenario. req/s on a shared VM moves ±15-30 % between runs;
this count moves ±0.5 %, so a few per cent between two commits shows. Writes
bench/results/instructions.md and .json. Exit 0 when every row ran, 1 when one failed, 2 on a
usage or tool error."""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from bench import bodies, machine, scenarios, wrk
from bench.output import Params, machine_lines
from bench.run import RESULTS_DIR, SCENARIO_ERRORS, TREE_HELP, Bench, comma_list, guarded, tree_dir
from bench.scenarios import Scenario
from bench.servers import REPO

DEFAULT_SCENARIOS = ("shadowproxy-off", "shadowproxy-equal", "shadowproxy-mismatch")
BASELINE = "shadowproxy-off"
BODY = "1k"
CONNECTIONS = 8
WARMUP_S = 2
# valgrind translates CPython and every extension it loads before the first request: 15-40 s here.
START_TIMEOUT_S = 120.0
DUMP_TIMEOUT_S = 30.0
CONTROL_TIMEOUT_S = 60.0
# Ir is the first (here the only) event. The newline proves the line was written whole.
# `summary:` is not used: it subtracts a live counter taken at `-z` from a per-thread copy that
# callgrind refreshes only on thread switches, and came out 2.5 % below `totals:` here.
_TOTALS = re.compile(r"^totals:[ \t]*(\d+)[^\n]*\n", re.M)


class CallgrindError(Exception):
    """callgrind_control failed, or a dump is missing or incomplete."""


@dataclass(frozen=True, slots=True)
class Row:
    scenario: str
    requests: int = 0
    main_ir: int = 0  # thread 1, the event loop
    all_ir: int = 0
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and self.requests > 0

    @property
    def main_per_request(self) -> float | None:
        return per_request(self.main_ir, self.requests) if self.ok else None

    @property
    def all_per_request(self) -> float | None:
        return per_request(self.all_ir, self.requests) if self.ok else None


def per_request(instructions: int, requests: int) -> float:
    if requests < 1:
        raise ValueError("no request completed: nothing to divide by")
    return instructions / requests


def vs_baseline(row: Row, rows: Sequence[Row]) -> float | None:
    base = next((r.main_per_request for r in rows if r.scenario == BASELINE), None)
    mine = row.main_per_request
    return mine / base if mine is not None and base else None


def dump_total(path: Path) -> int:
    """The instructions counted in one callgrind dump file: its `totals:` line, written last."""
    try:
        text = path.read_text(errors="replace")
    except OSError as e:
        raise CallgrindError(f"{path}: cannot read the dump: {e.strerror}") from e
    found = _TOTALS.search(text)
    if found is None:
        raise CallgrindError(f"{path}: no `totals:` line; the dump is incomplete or not callgrind's")
    return int(found.group(1))


def wait_for_dump(out: Path, pid: int, timeout_s: float) -> tuple[int, int]:
    """(event-loop thread, every thread) instructions of dump part 1 of `pid`. callgrind_control
    returns once valgrind has written it; the poll only covers a slow file system."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            main = dump_total(out / f"callgrind.{pid}.1-01")
            return main, sum(dump_total(p) for p in out.glob(f"callgrind.{pid}.1-*"))
        except CallgrindError:
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.1)


def callgrind_control(control: str, action: str, pid: int) -> None:
    argv = [control, action, str(pid)]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=CONTROL_TIMEOUT_S, check=False)
    # It exits 0 even when it finds no such run; only vgdb's "OK." says the command arrived.
    if done.returncode != 0 or "OK." not in done.stdout:
        raise CallgrindError(f"`{' '.join(argv)}` failed: {(done.stdout + done.stderr).strip()}")


def measure_scenario(bench: Bench, scenario: Scenario, valgrind: str, control: str) -> Row:
    out = (bench.params.keep or bench.workdir / "callgrind") / scenario.name
    shutil.rmtree(out, ignore_errors=True)  # a kept earlier run's files would be read as this one's
    out.mkdir(parents=True)
    wrapper = (
        valgrind,
        "--tool=callgrind",
        "--separate-threads=yes",
        f"--callgrind-out-file={out}/callgrind.%p",
    )
    try:
        with contextlib.ExitStack() as own:
            proxy = bench.target(scenario, own, wrapper=wrapper, timeout_s=START_TIMEOUT_S)
            url, pid = proxy.url + bodies.PATHS[BODY], proxy.process.pid
            wrk.run(url, CONNECTIONS, bench.params.warmup_s)
            # Start-up and warm-up (valgrind's translations, first-call caches) stay out of the count.
            callgrind_control(control, "-z", pid)
            result = wrk.run(url, CONNECTIONS, bench.params.duration_s)
            callgrind_control(control, "-d", pid)
            main_ir, all_ir = wait_for_dump(out, pid, DUMP_TIMEOUT_S)
            error = result.problem()
            if not proxy.process.alive():
                error = f"{proxy.process.name} exited during the run: {proxy.process.log_tail(5)}"
            return Row(scenario.name, result.requests, main_ir, all_ir, error)
    except (*SCENARIO_ERRORS, CallgrindError) as e:
        return Row(scenario.name, error=str(e))


COLUMNS = (
    "scenario",
    "requests measured",
    "instructions/request (event-loop thread)",
    "all threads",
    f"vs {BASELINE}",
)
EXPLAIN = (
    "Instructions/request is what valgrind counted on the proxy's threads between the end of the "
    "warm-up and the end of the load, divided by the requests wrk completed: a deterministic count "
    "that other work on the CPUs does not move, but one that weighs every instruction the same, so "
    "a cache miss counts no more than a hit and a syscall's time in the kernel is not in it at all "
    "(user space only)."
)


def _num(value: float | None, fmt: str) -> str:
    return "—" if value is None else format(value, fmt)


def markdown_table(rows: Sequence[Row]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|---|" + "---:|" * (len(COLUMNS) - 1)]
    for r in rows:
        cells = [
            r.scenario,
            _num(r.requests if r.ok else None, ","),
            _num(r.main_per_request, ",.0f"),
            _num(r.all_per_request, ",.0f"),
            _num(vs_baseline(r, rows), ".2f"),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    # A table cell cannot hold a log tail.
    lines += [f"\nFAILED {r.scenario}: {r.error}" for r in rows if r.error is not None]
    return "\n".join(lines)


def how(params: Params) -> str:
    return (
        f"Each scenario: a fresh `valgrind --tool=callgrind --separate-threads=yes python -m shadowproxy "
        f"run`, {BODY} body, `wrk -t1 -c{CONNECTIONS} -d{params.warmup_s}s` of warm-up, "
        f"`callgrind_control -z`, `wrk -t1 -c{CONNECTIONS} -d{params.duration_s}s` measured, "
        "`callgrind_control -d`; the event-loop thread is callgrind's thread 1."
    )


def markdown(info: dict[str, Any], params: Params, rows: Sequence[Row]) -> str:
    title = "# shadowproxy instructions per request (callgrind)"
    title += " (smoke: not a measurement)" if params.smoke else ""
    head = [title, "", *machine_lines(info), how(params), ""]
    return "\n".join([*head, markdown_table(rows), "", EXPLAIN, ""])


def json_document(info: dict[str, Any], params: Params, rows: Sequence[Row]) -> bytes:
    doc = {
        "machine": info,
        "params": {
            "scenarios": list(params.scenarios),
            "body": BODY,
            "connections": CONNECTIONS,
            "duration_s": params.duration_s,
            "warmup_s": params.warmup_s,
            "smoke": params.smoke,
        },
        "results": [
            {
                "scenario": r.scenario,
                "ok": r.ok,
                "error": r.error,
                "requests": r.requests,
                "event_loop_instructions": r.main_ir,
                "all_threads_instructions": r.all_ir,
                "event_loop_instructions_per_request": r.main_per_request,
                "all_threads_instructions_per_request": r.all_per_request,
                f"vs_{BASELINE}": vs_baseline(r, rows),
            }
            for r in rows
        ],
    }
    return orjson.dumps(doc, option=orjson.OPT_INDENT_2) + b"\n"


def parse_args(argv: Sequence[str] | None) -> Params:
    p = argparse.ArgumentParser(prog="python -m bench.instructions", description=__doc__)
    p.add_argument("--scenarios", type=comma_list, default=DEFAULT_SCENARIOS, help="comma-separated subset")
    p.add_argument("--duration", type=int, default=5, help="seconds of measured load (default 5)")
    p.add_argument(
        "--smoke", action="store_true", help="CI check: shadowproxy-equal, 1 s (overrides the other options)"
    )
    p.add_argument("--tree", type=tree_dir, default=None, help=TREE_HELP)
    p.add_argument(
        "--keep",
        type=Path,
        default=None,
        metavar="DIR",
        help="leave callgrind's files in DIR/<scenario> for callgrind_annotate (per-function costs)",
    )
    a = p.parse_args(argv)
    if a.smoke:
        return Params(
            ("shadowproxy-equal",), (BODY,), (CONNECTIONS,), duration_s=1, warmup_s=1, smoke=True, tree=a.tree
        )
    try:
        chosen = scenarios.select(list(a.scenarios))
    except ValueError as e:
        p.error(str(e))
    # valgrind follows one process: no workers, and nothing but shadowproxy to count.
    if wrong := [s.name for s in chosen if s.via != "shadowproxy" or s.workers != 1]:
        p.error(f"{', '.join(wrong)}: only single-process shadowproxy scenarios can be counted")
    if a.duration < 1:
        p.error("--duration must be >= 1")
    names = tuple(s.name for s in chosen)
    keep = a.keep.resolve() if a.keep is not None else None
    return Params(names, (BODY,), (CONNECTIONS,), a.duration, WARMUP_S, smoke=False, tree=a.tree, keep=keep)


def measure(params: Params, tools: dict[str, str], control: str) -> list[Row]:
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="shadowproxy-ir-") as tmp, contextlib.ExitStack() as stack:
        # nginx workers drop to an unprivileged user when started as root: they must read our files.
        os.chmod(tmp, 0o755)
        bench = Bench(tools["nginx"], Path(tmp), params, stack)
        for scenario in scenarios.select(list(params.scenarios)):
            print(f"{scenario.name}: starting under valgrind ...", flush=True)
            rows.append(measure_scenario(bench, scenario, tools["valgrind"], control))
            r = rows[-1]
            if r.error is not None:
                print(f"  FAILED {r.error}", flush=True)
            if r.main_per_request is not None:
                print(
                    f"  {r.requests:,} requests, {r.main_per_request:,.0f} instructions/request", flush=True
                )
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    params = parse_args(argv)
    load_before = machine.load_average()

    def work() -> tuple[dict[str, str], list[Row]]:
        tools = machine.ensure_tools(("nginx", "wrk", "valgrind"))
        control = machine.which("callgrind_control")
        if control is None:
            raise machine.ToolError("callgrind_control not found (Debian's valgrind package ships it)")
        return tools, measure(params, tools, control)

    tools, rows = guarded(work)
    info = machine.info(tools, REPO, load_before, params.tree)
    name = "instructions-smoke" if params.smoke else "instructions"
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    (RESULTS_DIR / f"{name}.md").write_text(markdown(info, params, rows))
    (RESULTS_DIR / f"{name}.json").write_bytes(json_document(info, params, rows))
    print()
    print(markdown_table(rows))
    print(f"\nwritten: {RESULTS_DIR / name}.md and .json")
    if failed := [r for r in rows if not r.ok]:
        print(f"bench: {len(failed)} row(s) failed to run", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
