"""A real Prometheus for tests, and every PromQL expression our dashboards and rules contain.

    async with PromServer.run(["127.0.0.1:8123"]) as prom:
        await prom.wait_for("shadowproxy_requests_total", lambda r: len(r) > 0)

Debian's /usr/bin/prometheus on a free loopback port, scraping the given targets every
second and evaluating config/prometheus/rules.yml every second. Async, because the target
is usually an aiohttp app in the test's own event loop: a blocking client would stall the
very server Prometheus is trying to scrape.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import re
import shutil
import socket
import tempfile
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import aiohttp
import yaml

ROOT = Path(__file__).resolve().parent.parent
RULES = ROOT / "config" / "prometheus" / "rules.yml"
DASHBOARDS = ROOT / "dashboards"
PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"
PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"

# What Grafana would put in place of its built-in variables; long enough to hold the
# few seconds of 1 s scrapes a test has.
GRAFANA_BUILTINS = {"__rate_interval": "1m", "__interval": "15s", "__range": "5m"}


class PromError(Exception):
    """Prometheus answered a query with an error (a PromQL syntax error, say)."""


@dataclass(frozen=True, slots=True)
class Series:
    """One element of an instant-query result."""

    labels: dict[str, str]
    value: float


def finite(result: Sequence[Series]) -> bool:
    """True when the result holds at least one real number (not NaN, not +-Inf)."""
    return any(math.isfinite(s.value) for s in result)


class PromServer:
    def __init__(self, url: str, session: aiohttp.ClientSession) -> None:
        self.url = url
        self._session = session

    @classmethod
    @contextlib.asynccontextmanager
    async def run(
        cls,
        targets: Sequence[str],
        *,
        rules: Path | None = RULES,
        ready_timeout_s: float = 30.0,
    ) -> AsyncIterator[PromServer]:
        with tempfile.TemporaryDirectory(prefix="promserver-") as tmp:
            work = Path(tmp)
            config = {
                "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
                "rule_files": [str(rules)] if rules is not None else [],
                "scrape_configs": [
                    {"job_name": "shadowproxy", "static_configs": [{"targets": list(targets)}]}
                ],
            }
            (work / "prometheus.yml").write_text(yaml.safe_dump(config), encoding="utf-8")
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
                proc, url = await _start(work, session, ready_timeout_s)
                try:
                    yield cls(url, session)
                finally:
                    await _stop(proc)

    async def query(self, expr: str) -> list[Series]:
        """An instant query now; raises PromError when Prometheus rejects it."""
        async with self._session.post(f"{self.url}/api/v1/query", data={"query": expr}) as resp:
            body: dict[str, Any] = await resp.json()
        if body.get("status") != "success":
            raise PromError(f"{expr!r}: {body.get('errorType')}: {body.get('error')}")
        data = body["data"]
        if data["resultType"] == "scalar":
            return [Series({}, float(data["result"][1]))]
        if data["resultType"] != "vector":
            raise PromError(f"{expr!r}: unexpected result type {data['resultType']}")
        return [Series(dict(r["metric"]), float(r["value"][1])) for r in data["result"]]

    async def wait_for(
        self, expr: str, predicate: Callable[[list[Series]], bool], timeout_s: float = 20.0
    ) -> list[Series]:
        """Poll `expr` until `predicate(result)` holds; TimeoutError names the last result."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while True:
            result = await self.query(expr)
            if predicate(result):
                return result
            if loop.time() > deadline:
                raise TimeoutError(f"{expr!r} after {timeout_s}s: {result}")
            await asyncio.sleep(0.2)

    async def rules(self) -> list[dict[str, Any]]:
        """Every loaded rule with its health and last error, as /api/v1/rules gives it."""
        async with self._session.get(f"{self.url}/api/v1/rules") as resp:
            body = await resp.json()
        return [rule for group in body["data"]["groups"] for rule in group["rules"]]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def _start(
    work: Path, session: aiohttp.ClientSession, timeout_s: float
) -> tuple[asyncio.subprocess.Process, str]:
    # The free port may be taken between our probe and Prometheus's bind: try again then.
    last = ""
    for attempt in range(3):
        port = _free_port()
        log = work / f"prometheus-{attempt}.log"
        with log.open("wb") as log_file:
            proc = await asyncio.create_subprocess_exec(
                PROMETHEUS,
                f"--config.file={work / 'prometheus.yml'}",
                f"--storage.tsdb.path={work / f'data-{attempt}'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--log.level=warn",
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log_file,
                stderr=log_file,
            )
        url = f"http://127.0.0.1:{port}"
        if await _ready(proc, url, session, timeout_s):
            return proc, url
        await _stop(proc)
        last = log.read_text(errors="replace")[-2000:]
    raise RuntimeError(f"prometheus did not become ready:\n{last}")


async def _ready(
    proc: asyncio.subprocess.Process, url: str, session: aiohttp.ClientSession, timeout_s: float
) -> bool:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while proc.returncode is None and loop.time() < deadline:
        with contextlib.suppress(aiohttp.ClientError):
            async with session.get(f"{url}/-/ready") as resp:
                if resp.status == 200:
                    return True
        await asyncio.sleep(0.05)
    return False


async def _stop(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is not None:
        return
    proc.terminate()
    try:
        await asyncio.wait_for(proc.wait(), 10)
    except TimeoutError:
        proc.kill()
        await proc.wait()


# --------------------------------------------------------------------------- expressions


@dataclass(frozen=True, slots=True)
class Expr:
    where: str  # "overview.json: 'Mismatch ratio per route' A", "rules.yml: ShadowErrorRateHigh"
    promql: str  # variables already substituted
    kind: Literal["panel", "variable", "record", "alert"]


_VAR = re.compile(r"\$(?:\{(\w+)(?::[^}]*)?\}|(\w+))")
_LABEL_VALUES = re.compile(r"^\s*label_values\(\s*(?:(.*),\s*)?(\w+)\s*\)\s*$", re.DOTALL)


def substitute(expr: str, variables: Mapping[str, str]) -> str:
    """Fill Grafana variables (`$route`, `${route}`, `$__rate_interval`); unknown names raise."""
    values = {**GRAFANA_BUILTINS, **variables}

    def sub(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(2)
        if name not in values:
            raise KeyError(f"no value for Grafana variable ${name} in {expr!r}")
        return values[name]

    return _VAR.sub(sub, expr)


def variable_promql(query: str) -> str:
    """Grafana's `label_values(selector, label)` as the PromQL that returns the same values."""
    m = _LABEL_VALUES.match(query)
    if m is None:
        return query  # already plain PromQL
    selector, label = m.group(1), m.group(2)
    if selector is None:
        selector = f'{{{label}!=""}}'
    return f"group by ({label}) ({selector})"


def _panels(panels: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for p in panels:
        out.append(p)
        out.extend(_panels(p.get("panels", [])))  # collapsed rows hold their panels
    return out


def dashboard_expressions(path: Path, variables: Mapping[str, str]) -> list[Expr]:
    board = json.loads(path.read_text(encoding="utf-8"))
    found: list[Expr] = []
    for var in board.get("templating", {}).get("list", []):
        if var.get("type") != "query":
            continue
        q = var["query"]["query"] if isinstance(var["query"], dict) else var["query"]
        found.append(
            Expr(
                f"{path.name}: variable {var['name']}", substitute(variable_promql(q), variables), "variable"
            )
        )
    for p in _panels(board.get("panels", [])):
        for t in p.get("targets", []):
            if t.get("expr"):
                where = f"{path.name}: {p['title']!r} {t.get('refId', '')}"
                found.append(Expr(where, substitute(t["expr"], variables), "panel"))
    return found


def rule_expressions(path: Path = RULES) -> list[Expr]:
    doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    found: list[Expr] = []
    for group in doc["groups"]:
        for rule in group["rules"]:
            name = rule.get("record") or rule["alert"]
            found.append(
                Expr(f"{path.name}: {name}", rule["expr"], "record" if "record" in rule else "alert")
            )
    return found


def promql_expressions(
    variables: Mapping[str, str], dashboards: Path = DASHBOARDS, rules: Path = RULES
) -> list[Expr]:
    """Every PromQL expression of dashboards/*.json and the rules file, ready to send."""
    found: list[Expr] = []
    for board in sorted(dashboards.glob("*.json")):
        found.extend(dashboard_expressions(board, variables))
    found.extend(rule_expressions(rules))
    return found
