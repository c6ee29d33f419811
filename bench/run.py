"""`python -m bench.run`: measure shadowproxy beside direct and nginx `mirror`, print the table
and the targets, write bench/results/<name>.md and .json. Exit 0 when every row ran, 1 when
one failed (socket errors, non-2xx, a proxy that did not start), 2 on a usage or tool error."""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

from bench import bodies, machine, paced, procstat, proxymetrics, scenarios, wrk
from bench.output import Params, json_document, markdown
from bench.procs import StartError, started
from bench.results import Measurement, Results, markdown_table, median_of, paced_table
from bench.scenarios import Run, Scenario
from bench.servers import (
    REPO,
    START_TIMEOUT_S,
    Server,
    start_nginx,
    start_shadowproxy,
    start_slow_shadow,
    start_upstream,
)
from bench.targets import evaluate

RESULTS_DIR = REPO / "bench" / "results"
# What makes a scenario fail without stopping the others.
SCENARIO_ERRORS = (StartError, wrk.WrkError, OSError, subprocess.SubprocessError)
# A staging sidecar's usual load: a request every 5 ms, each after an idle gap.
PACED_RATES = (200,)


def comma_list(text: str) -> tuple[str, ...]:
    return tuple(p.strip() for p in text.split(",") if p.strip())


def _whole_numbers(what: str, *, empty_ok: bool) -> Callable[[str], tuple[int, ...]]:
    """An argparse type: comma-separated whole numbers, each >= 1 (none at all if `empty_ok`)."""

    def parse(text: str) -> tuple[int, ...]:
        try:
            values = tuple(int(p) for p in comma_list(text))
        except ValueError:
            raise argparse.ArgumentTypeError(f"{what} must be whole numbers, not {text!r}") from None
        if (not values and not empty_ok) or (values and min(values) < 1):
            raise argparse.ArgumentTypeError(f"give {what} as whole numbers, each >= 1")
        return values

    return parse


_connections = _whole_numbers("connections", empty_ok=False)
_rates = _whole_numbers("rates", empty_ok=True)


def tree_dir(text: str) -> Path:
    """--tree: a directory holding the shadowproxy package (the compiled copy, `make compiled`)."""
    path = Path(text).resolve()
    if not (path / "shadowproxy" / "__init__.py").is_file():
        raise argparse.ArgumentTypeError(f"{text}: no shadowproxy package there (run `make compiled`?)")
    return path


TREE_HELP = "run shadowproxy from this copy of the tree (default: the repo itself, pure Python)"


def parse_args(argv: Sequence[str] | None) -> Params:
    p = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__)
    p.add_argument(
        "--scenarios", type=comma_list, default=tuple(scenarios.BY_NAME), help="comma-separated subset"
    )
    p.add_argument("--bodies", type=comma_list, default=bodies.BODY_KINDS, help="1k,50k (default both)")
    p.add_argument("--connections", type=_connections, default=(1, 8), help="default 1,8")
    p.add_argument(
        "--rates",
        type=_rates,
        default=PACED_RATES,
        help="fixed request rates for the paced rows, comma-separated ('' for none; default 200)",
    )
    p.add_argument("--duration", type=int, default=5, help="seconds per row and round (default 5)")
    p.add_argument("--warmup", type=int, default=1, help="seconds of unmeasured load per scenario (0: none)")
    p.add_argument(
        "--repeat",
        type=int,
        default=3,
        help="rounds of every scenario, in turn; each row reports the median round (default 3)",
    )
    p.add_argument(
        "--smoke",
        action="store_true",
        help="CI check that the harness runs: 1 s, 1 connection, 3 scenarios (overrides the other options)",
    )
    p.add_argument("--tree", type=tree_dir, default=None, help=TREE_HELP)
    a = p.parse_args(argv)
    if a.smoke:
        return Params(
            scenarios.SMOKE,
            ("1k",),
            (1,),
            duration_s=1,
            warmup_s=1,
            smoke=True,
            tree=a.tree,
            rates=PACED_RATES,
        )
    try:
        scenarios.select(list(a.scenarios))
    except ValueError as e:
        p.error(str(e))
    if unknown := [b for b in a.bodies if b not in bodies.BODY_KINDS]:
        p.error(f"unknown body {', '.join(unknown)}; known: {', '.join(bodies.BODY_KINDS)}")
    if a.duration < 1 or a.warmup < 0 or a.repeat < 1:
        p.error("--duration and --repeat must be >= 1, --warmup >= 0")
    return Params(
        a.scenarios,
        a.bodies,
        a.connections,
        a.duration,
        a.warmup,
        smoke=False,
        repeat=a.repeat,
        tree=a.tree,
        rates=a.rates,
    )


class Bench:
    """Owns the run's processes: shared upstreams live until the end, the rest per scenario."""

    def __init__(self, nginx: str, workdir: Path, params: Params, stack: contextlib.ExitStack) -> None:
        self.nginx, self.workdir, self.params, self.stack = nginx, workdir, params, stack
        self._shared: dict[str, Server] = {}

    def shared(self, name: str) -> Server:
        """An upstream every scenario may use, started on first need."""
        if name not in self._shared:
            if name == "nginx-mirror":
                primary, shadow = self.shared("primary"), self.shared("shadow-equal")
                ports = {"primary_port": primary.port, "shadow_port": shadow.port}
                server = start_nginx(self.nginx, self.workdir, name, "mirror.conf", **ports)
            else:
                server = start_upstream(self.nginx, self.workdir, name, mismatch=name == "shadow-mismatch")
            self.stack.enter_context(started(server.process))
            self._shared[name] = server
        return self._shared[name]

    def run_scenario(self, scenario: Scenario, runs: list[Run]) -> list[Measurement]:
        done: list[Measurement] = []
        try:
            with contextlib.ExitStack() as own:
                target = self.target(scenario, own)
                if self.params.warmup_s:
                    url = target.url + bodies.PATHS[runs[0].body]
                    wrk.run(url, max(r.connections for r in runs), self.params.warmup_s)
                # direct has no proxy in between: nothing of ours to measure there.
                group = None if scenario.via == "direct" else target.process.pid
                for run in runs:
                    done.append(self._measure(target, group, run))
                    _progress(done[-1])
        except SCENARIO_ERRORS as e:
            failed = [
                Measurement(r.scenario.name, r.body, r.connections, error=str(e)) for r in runs[len(done) :]
            ]
            for m in failed:
                _progress(m)
            done += failed
        return done

    def target(
        self,
        scenario: Scenario,
        own: contextlib.ExitStack,
        *,
        wrapper: Sequence[str] = (),
        timeout_s: float = START_TIMEOUT_S,
    ) -> Server:
        """What wrk loads for this scenario; what only it uses is stopped with `own`.
        `wrapper` and `timeout_s` go to `start_shadowproxy`."""
        if scenario.via == "direct":
            return self.shared("primary")
        if scenario.via == "nginx-mirror":
            return self.shared("nginx-mirror")
        if scenario.shadow in ("slow", "hanging"):
            shadow = start_slow_shadow(
                self.workdir, f"shadow-{scenario.shadow}", hang=scenario.shadow == "hanging"
            )
            own.enter_context(started(shadow.process))
        else:
            shadow = self.shared(f"shadow-{scenario.shadow}")
        primary = self.shared("primary")
        proxy = start_shadowproxy(
            self.workdir,
            scenario,
            primary.url,
            shadow.url,
            wrapper=wrapper,
            timeout_s=timeout_s,
            tree=self.params.tree,
        )
        own.enter_context(started(proxy.process))
        return proxy

    def _measure(self, target: Server, group: int | None, run: Run) -> Measurement:
        cpu_before = procstat.group_cpu_s(group) if group else 0.0
        machine_before = procstat.machine_cpu()
        before = proxymetrics.scrape(target.admin_url) if target.admin_url else None
        url, duration_s = target.url + bodies.PATHS[run.body], self.params.duration_s
        if run.rate is None:
            result = wrk.run(url, run.connections, duration_s)
        else:
            result = paced.run(url, run.rate, duration_s)
        idle = procstat.idle_cpus(machine_before, procstat.machine_cpu())
        after = proxymetrics.scrape(target.admin_url) if target.admin_url else None
        stalls = compared = None
        if before is not None and after is not None:
            compared = proxymetrics.compared_share(before, after)
            if result.duration_s > 0:
                stalls = (after.stalls - before.stalls) / result.duration_s
        cpu_us_per_request = rss_kib = pss_kib = None
        if group is not None:
            if result.requests:
                cpu_us_per_request = (procstat.group_cpu_s(group) - cpu_before) * 1e6 / result.requests
            rss_kib = procstat.group_peak_rss_kib(group)
            pss_kib = procstat.group_pss_kib(group)
        error = result.problem()
        if not target.process.alive():
            error = f"{target.process.name} exited during the run: {target.process.log_tail(5)}"
        elif error is not None and group is not None:
            # The proxy's last words usually say why; the table shows the first line only.
            last = target.process.log_tail(1) or "(empty log)"
            error = f"{error}; {target.process.name} log ends: {last}\n{target.process.log_tail(20)}"
        return Measurement(
            run.scenario.name,
            run.body,
            run.connections,
            result,
            cpu_us_per_request,
            rss_kib,
            error,
            loop_stalls_per_s=stalls,
            compared_share=compared,
            pss_kib=pss_kib,
            rate=run.rate,
            idle_cpus=idle,
        )


def _progress(m: Measurement) -> None:
    where = f"{m.scenario} {m.body} @{m.connections}" + ("" if m.rate is None else f" at {m.rate} req/s")
    if m.error:
        print(f"  {where}: FAILED {m.error}", flush=True)
    if m.wrk is not None and m.wrk.requests:
        w = m.wrk
        print(f"  {where}: {w.rps:,.0f} req/s, p50 {w.p50_ms:.2f} ms, p99 {w.p99_ms:.2f} ms", flush=True)


def measure(params: Params, nginx: str) -> list[Measurement]:
    """Every scenario, `params.repeat` times over: round by round rather than row by row,
    so a spell of noise on a shared machine hits one round of every scenario, not every
    round of one."""
    rounds: dict[tuple[str, str, int, int | None], list[Measurement]] = {}
    with tempfile.TemporaryDirectory(prefix="shadowproxy-bench-") as tmp, contextlib.ExitStack() as stack:
        # nginx workers drop to an unprivileged user when started as root: they must read our files.
        os.chmod(tmp, 0o755)
        bench = Bench(nginx, Path(tmp), params, stack)
        for i in range(params.repeat):
            for scenario in scenarios.select(list(params.scenarios)):
                runs = scenarios.plan(scenario, params.bodies, params.connections, params.rates)
                if runs:
                    turn = f" (round {i + 1}/{params.repeat})" if params.repeat > 1 else ""
                    print(f"{scenario.name}{turn}:", flush=True)
                    for m in bench.run_scenario(scenario, runs):
                        rounds.setdefault((m.scenario, m.body, m.connections, m.rate), []).append(m)
    return [median_of(ms) for ms in rounds.values()]


T = TypeVar("T")


def guarded(work: Callable[[], T]) -> T:
    """Run a bench command's measuring part. A missing tool, an upstream that does not start
    or Ctrl-C ends the command with its exit code (2, 1, 130) after saying so; `kill` takes
    the same way out, through every `finally` that stops a process."""
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        return work()
    except machine.ToolError as e:
        print(f"bench: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    except StartError as e:
        print(f"bench: an upstream did not start: {e}", file=sys.stderr)
        raise SystemExit(1) from None
    except KeyboardInterrupt:
        print("bench: interrupted; every process it started is stopped", file=sys.stderr)
        raise SystemExit(130) from None


def main(argv: Sequence[str] | None = None) -> int:
    params = parse_args(argv)
    load_before = machine.load_average()

    def work() -> tuple[dict[str, str], list[Measurement]]:
        tools = machine.ensure_tools()
        return tools, measure(params, tools["nginx"])

    tools, measurements = guarded(work)
    results = Results(measurements)
    targets = evaluate(results, params.connections)
    info = machine.info(tools, REPO, load_before, params.tree)
    name = "smoke" if params.smoke else "latest"
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    (RESULTS_DIR / f"{name}.md").write_text(markdown(info, params, results, targets))
    (RESULTS_DIR / f"{name}.json").write_bytes(json_document(info, params, results, targets))
    print()
    print(markdown_table(results.rows()))
    if paced_rows := results.rows(paced=True):
        print()
        print(paced_table(paced_rows))
    print()
    for t in targets:
        print(t.line())
    print(f"\nwritten: {RESULTS_DIR / name}.md and .json")
    failed = [m for m in measurements if not m.ok]
    if failed:
        print(f"bench: {len(failed)} row(s) failed to run", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
