"""`run` with `workers: 2`: two processes share the ports and the metrics add up."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import AsyncIterator

import aiohttp
import pytest

from shadowproxy.app import METRICS_FLUSH_S
from tests.conftest import run_config

N = 60


@contextlib.asynccontextmanager
async def two_workers(tmp_path, cfg) -> AsyncIterator[asyncio.subprocess.Process]:
    """`run` with workers: 2 in a subprocess, yielded once both workers listen; whatever
    is left of its process group is killed on the way out."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "shadowproxy", "run", "-c", str(cfg),
        stderr=asyncio.subprocess.PIPE,
        env={"PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "prom"), "PATH": "/usr/bin:/bin"},
        # Its own process group: on failure the workers go with the supervisor, and no
        # orphan keeps the stderr pipe (and so proc.wait()) open.
        start_new_session=True,
    )  # fmt: skip
    try:
        assert proc.stderr is not None
        started = 0
        said: list[str] = []  # what it logged, for the failure message
        try:
            async with asyncio.timeout(60):
                while started < 2:
                    line = (await proc.stderr.readline()).decode()
                    assert line, "shadowproxy exited before both workers started:\n" + "".join(said)
                    said.append(line)
                    started += "listening on" in line
        except TimeoutError:
            pytest.fail(f"{started} of 2 workers listening after 60 s; the log so far:\n{''.join(said)}")
        yield proc
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        await proc.wait()


async def test_two_workers_share_the_port_and_aggregate_metrics(
    tmp_path, unused_tcp_port_factory, make_upstream
):
    upstream = (await make_upstream()).url
    port, admin = unused_tcp_port_factory(), unused_tcp_port_factory()
    cfg = run_config(tmp_path, upstream, port, admin, "workers: 2\n")
    async with two_workers(tmp_path, cfg) as proc:
        # Fresh connections each time, so the kernel spreads them over both workers (all N
        # landing on one has odds of 2**-59); each worker counts its own share.
        for _ in range(N):
            async with aiohttp.ClientSession() as s, s.get(f"http://127.0.0.1:{port}/api/x") as resp:
                assert resp.status == 200
        async with aiohttp.ClientSession() as s:
            # Whichever worker answers the scrape reports every worker's counts: its own at
            # once, the other's once that worker's next flush (every second) is in.
            seen: list[float] = []
            async with asyncio.timeout(METRICS_FLUSH_S * 10):
                while not seen or seen[-1] != N:
                    async with s.get(f"http://127.0.0.1:{admin}/metrics") as resp:
                        text = await resp.text()
                    seen.append(
                        sum(
                            float(line.rsplit(" ", 1)[1])
                            for line in text.splitlines()
                            if line.startswith("shadowproxy_requests_total{")
                        )
                    )
                    await asyncio.sleep(METRICS_FLUSH_S / 10)
            assert max(seen) == N and seen == sorted(seen)  # never more than served, never back
        proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(30):
            assert await proc.wait() == 0


async def test_workers_leave_when_their_supervisor_is_killed(
    tmp_path, unused_tcp_port_factory, make_upstream
):
    """SIGKILL gives the supervisor no chance to stop its workers: they notice on their own
    (the parent's sentinel pipe closes), drain and exit, instead of holding the port."""
    upstream = (await make_upstream()).url
    port, admin = unused_tcp_port_factory(), unused_tcp_port_factory()
    cfg = run_config(tmp_path, upstream, port, admin, "workers: 2\ndrain_timeout_s: 1\n")
    async with two_workers(tmp_path, cfg) as proc:
        assert proc.stderr is not None
        proc.kill()  # the supervisor only, not its process group
        # The workers hold the stderr pipe too: EOF means the last of them has exited.
        async with asyncio.timeout(30):
            rest = await proc.stderr.read()
        assert rest.decode().count("supervisor") == 2  # each worker said why it stopped
        assert await proc.wait() == -signal.SIGKILL
