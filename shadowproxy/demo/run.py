"""`shadowproxy demo`: the whole product on the embedded default, end to end.

Starts the simulated Deno (primary) and Workers (shadow) backends and the sidecar on free
loopback ports with the packaged demo.yaml, drives a realistic mix of traffic through it,
then judges the evidence and writes report.md and report.html. Exit 0 when the demo came
out as designed (the planted regressions NO-GO, clean routes GO), 1 when it did not.
"""

from __future__ import annotations

import asyncio
import shutil
import sys
import tempfile
import time
from contextlib import AsyncExitStack
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from aiohttp import web

from shadowproxy import config
from shadowproxy.demo.backends import make_app
from shadowproxy.demo.traffic import drive
from shadowproxy.evidence import Evidence
from shadowproxy.gate import Decision
from shadowproxy.report import render
from shadowproxy.report_view import traffic as traffic_line

# What the planted differences must produce (see demo.yaml and demo/profiles.py).
EXPECTED_NO_GO = {"pitch_detail": "$.data.budget", "user": None, "notifications": None}
EXPECTED_GO = ("auth_login", "auth_me", "pitch_list")


@dataclass(frozen=True, slots=True)
class DemoResult:
    decision: Decision
    report_md: Path
    report_html: Path
    problems: tuple[str, ...]  # how the outcome differs from the design; empty when as designed


def demo_config_path() -> Path:
    return Path(str(resources.files("shadowproxy.demo").joinpath("demo.yaml")))


def run_demo(
    requests: int = 4000, keep_running: bool = False, out_dir: str = ".", concurrency: int = 32
) -> int:
    from shadowproxy.cli import use_uvloop

    use_uvloop()
    try:
        result = asyncio.run(
            demo(requests, Path(out_dir), concurrency=concurrency, keep_running=keep_running)
        )
    except KeyboardInterrupt:
        return 130
    if result.problems:
        print("\nThe demo did not come out as designed:", file=sys.stderr)
        for p in result.problems:
            print(f"  - {p}", file=sys.stderr)
        return 1
    return 0


async def demo(
    requests: int,
    out_dir: Path,
    *,
    concurrency: int = 32,
    keep_running: bool = False,
    latency_scale: float = 1.0,
    quiet: bool = False,
) -> DemoResult:
    from shadowproxy.app import running

    say = (lambda *_a, **_k: None) if quiet else print
    await asyncio.to_thread(out_dir.mkdir, parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="shadowproxy-demo-"))
    try:
        async with AsyncExitStack() as stack:
            deno = await _serve(stack, make_app("deno", latency_scale=latency_scale))
            workers = await _serve(stack, make_app("workers", latency_scale=latency_scale))
            env = {"DEMO_PRIMARY_URL": deno, "DEMO_SHADOW_URL": workers, "DEMO_STORE": str(work / "demo.db")}
            cfg = config.load(demo_config_path(), env=env)
            r = await stack.enter_async_context(running(cfg))
            say(_banner(deno, workers, r.proxy_url, r.admin_url, requests))
            started = time.monotonic()
            summary = await drive(
                r.proxy_url, requests, concurrency=concurrency, progress=None if quiet else _progress
            )
            if not quiet and sys.stderr.isatty():
                sys.stderr.write("\n")
            await r.sidecar.settle(30.0)
            await asyncio.to_thread(r.sidecar.store.flush)
            say(
                f"\nSent {summary.requests:,} requests and {summary.ws_sessions} WebSocket session(s) "
                f"in {time.monotonic() - started:.1f} s ({summary.errors} without an answer)."
            )
            decision = await asyncio.to_thread(r.sidecar.judge)
            evidence = await asyncio.to_thread(
                r.sidecar.store.evidence, [x.name for x in cfg.routes], cfg.noise, explain=True
            )
            md, _ = render(cfg, evidence, "md")
            html, _ = render(cfg, evidence, "html")
            report_md, report_html = out_dir / "report.md", out_dir / "report.html"
            report_md.write_text(md, encoding="utf-8")
            report_html.write_text(html, encoding="utf-8")
            say(_table(decision))
            say(_top_fields(evidence))
            problems = _problems(decision, evidence_fields(evidence), summary.errors, summary.requests)
            problems += _unaccounted(evidence)
            say(_as_designed() if not problems else "")
            say(f"Reports: {report_md.resolve()}  and  {report_html.resolve()}")
            say(f"Admin API: {r.admin_url}/api/verdict  {r.admin_url}/api/routes  {r.admin_url}/metrics")
            if keep_running:
                say(_explore(r.proxy_url, r.admin_url, deno, workers))
                await _wait_forever()
            return DemoResult(decision, report_md, report_html, problems)
    finally:
        shutil.rmtree(work, ignore_errors=True)


async def _serve(stack: AsyncExitStack, app: web.Application) -> str:
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    stack.push_async_callback(runner.cleanup)
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    return f"http://127.0.0.1:{runner.addresses[0][1]}"


def evidence_fields(evidence: Evidence) -> dict[str, set[str]]:
    return {r.route: {f.path for f in r.fields} for r in evidence.routes}


def _problems(decision: Decision, fields: dict[str, set[str]], errors: int, sent: int) -> tuple[str, ...]:
    verdicts = {r.route: r.verdict for r in decision.routes}
    out = []
    for route, field in EXPECTED_NO_GO.items():
        if verdicts.get(route) != "NO-GO":
            out.append(f"route {route} should be NO-GO (a planted regression) but is {verdicts.get(route)}")
        if field is not None and field not in fields.get(route, set()):
            out.append(f"route {route} should name the differing field {field}")
    if not any(verdicts.get(r) == "GO" for r in EXPECTED_GO):
        out.append(f"none of the clean routes ({', '.join(EXPECTED_GO)}) came out GO")
    if errors > max(5, sent // 100):
        out.append(f"{errors} of {sent} demo requests got no answer")
    return tuple(out)


def _unaccounted(evidence: Evidence) -> tuple[str, ...]:
    """Every request answered is shadowed or skipped for a reason: a pair lost on the way
    is counted as lost, and would make the evidence quietly thinner. The demo's backends
    answer well within their timeouts, so it expects none."""
    out = []
    for r in evidence.routes:
        lost = sum(r.lost.values())
        if lost:
            out.append(f"route {r.route}: {lost} shadowed pairs were lost before they were recorded")
        unaccounted = r.requests - r.shadowed - sum(r.skipped.values()) - lost
        if unaccounted:
            out.append(
                f"route {r.route}: {unaccounted} of {r.requests} requests were neither shadowed nor skipped"
            )
    return tuple(out)


def _banner(deno: str, workers: str, proxy: str, admin: str, requests: int) -> str:
    return (
        "shadowproxy demo: a Deno API (primary) and its Cloudflare Workers port (shadow), simulated.\n"
        f"  primary  (Deno)     {deno}\n"
        f"  shadow   (Workers)  {workers}\n"
        f"  proxy               {proxy}   <- clients talk to this; they get Deno's answers\n"
        f"  admin               {admin}   <- /metrics, /api/routes, /api/mismatches, /api/verdict\n"
        "Workers differs as a real port does: volatile ids and timestamps (ignored by rules),\n"
        "notifications in another order (an `unordered` rule), and three planted problems:\n"
        "pitch detail's `budget` became a string, /api/users/{id} is slow at p95, and 4% of\n"
        f"notifications fail with 503. Sending {requests:,} requests...\n"
    )


def _progress(done: int, total: int) -> None:
    """A bar redrawn in place on a terminal; in a log (CI, a pipe), a line every 10%."""
    width = 40
    filled = width * done // max(total, 1)
    if sys.stderr.isatty():
        if done == total or done % max(total // 200, 1) == 0:
            sys.stderr.write(f"\r  [{'#' * filled}{'.' * (width - filled)}] {done:>6,}/{total:,}")
            sys.stderr.flush()
    elif done == total or done % max(total // 10, 1) == 0:
        sys.stderr.write(f"  {done:>6,}/{total:,} requests\n")


def _table(d: Decision) -> str:
    rows = [("route", "verdict", "evidence / reason")]
    for r in d.routes:
        reason = r.reasons[0] if r.reasons else ""
        rows.append((r.route, r.verdict, reason))
    w0 = max(len(x[0]) for x in rows)
    w1 = max(len(x[1]) for x in rows)
    lines = [f"\nOVERALL: {d.verdict}" + (f" ({d.reasons[0]})" if d.reasons else ""), ""]
    for i, (a, b, c) in enumerate(rows):
        lines.append(f"  {a:<{w0}}  {b:<{w1}}  {c}")
        if i == 0:
            lines.append(f"  {'-' * w0}  {'-' * w1}  {'-' * 40}")
    lines.append("")
    for r in d.routes:
        if r.evidence.requests:
            lines.append(f"  {r.route}: {traffic_line(r)}")
    return "\n".join(lines)


def _top_fields(evidence: Evidence) -> str:
    lines = ["", "Fields that differ most (primary vs shadow), per route:"]
    for r in evidence.routes:
        if r.fields:
            top = ", ".join(f"{f.path} ({f.raw:,})" for f in r.fields[:3])
            lines.append(f"  {r.route}: {top}")
    return "\n".join(lines) if len(lines) > 2 else ""


def _as_designed() -> str:
    return (
        "\nAs designed: the three planted problems are caught (pitch_detail: `budget` changed type;\n"
        "user: more than 5% of Workers answers over 500 ms; notifications: 503s over the 1% error\n"
        "limit), the clean routes are GO once they have enough samples, and the noise (ids,\n"
        "timestamps, compression, list order) matched through the demo's rules. Writes, the\n"
        "webhook and the socket are never shadowed, so their routes stay INCONCLUSIVE by design.\n"
    )


def _explore(proxy: str, admin: str, deno: str, workers: str) -> str:
    return (
        "\nEverything stays up (Ctrl-C to stop). Try:\n"
        f"  curl -s {proxy}/api/pitches?limit=3               # through the proxy (Deno's answer)\n"
        f"  curl -s {admin}/api/verdict | head -40            # the live verdict\n"
        f"  curl -s '{admin}/api/mismatches?route=pitch_detail&limit=1'\n"
        f"  curl -s {admin}/api/routes\n"
        f"  curl -s {admin}/metrics | grep shadowproxy_comparisons_total\n"
        f"  curl -s {deno}/api/pitches/1                     # Deno itself\n"
        f"  curl -s --compressed {workers}/api/pitches/1     # the Workers port itself\n"
    )


async def _wait_forever() -> None:
    await asyncio.Event().wait()
