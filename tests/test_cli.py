"""The command line, run as a user runs it: a real process."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from shadowproxy import __version__
from tests.conftest import run_config

ROOT = Path(__file__).resolve().parent.parent


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "shadowproxy", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=60,
        check=False,
    )


def test_version():
    out = cli("--version")
    assert out.returncode == 0 and out.stdout.strip() == f"shadowproxy {__version__}"


@pytest.mark.parametrize("sub", ["run", "check-config", "report", "demo"])
def test_every_subcommand_has_help(sub):
    out = cli(sub, "--help")
    assert out.returncode == 0
    assert f"usage: shadowproxy {sub}" in out.stdout


def test_check_config_on_the_readme_example_prints_ok():
    out = cli(
        "check-config", "-c", str(ROOT / "config/example.yaml"), env={"WORKERS_URL": "https://w.example"}
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("OK ") and "primary deno http://127.0.0.1:8001" in out.stdout
    assert len(out.stdout.strip().splitlines()) == 1


def test_check_config_on_a_broken_copy_lists_each_error_with_its_key_path(tmp_path):
    broken = (ROOT / "config/example.yaml").read_text()
    broken = broken.replace("timeout_s: 30", "timeout_s: soon").replace(
        "host_header: backend", "host_header: nope"
    )
    broken = (
        broken.replace('"http://127.0.0.1:8001"', '"127.0.0.1:8001"') + "\nshadowing: {max_in_flight: 0}\n"
    )
    path = tmp_path / "broken.yaml"
    path.write_text(broken)
    out = cli("check-config", "-c", str(path), env={"WORKERS_URL": "https://w.example"})
    assert out.returncode == 2
    assert "Traceback" not in out.stderr
    for line in (
        f"{path}: primary.timeout_s: must be a number, not the string 'soon'",
        f"{path}: shadow.host_header: must be one of preserve, backend, not 'nope'",
        f"{path}: primary.url: '127.0.0.1:8001' is not an http:// or https:// URL with a host",
        f"{path}: shadowing.max_in_flight: must be greater than 0, not 0",
    ):
        assert line in out.stderr, out.stderr
    assert "4 error(s)" in out.stderr


def test_a_missing_environment_variable_is_named(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "WORKERS_URL"}
    out = subprocess.run(
        [sys.executable, "-m", "shadowproxy", "check-config", "-c", str(ROOT / "config/example.yaml")],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert out.returncode == 2
    assert "shadow.url: environment variable WORKERS_URL is not set" in out.stderr


def test_run_with_a_store_it_cannot_write_says_so_in_one_line(tmp_path):
    # A directory where the file should be: SQLite cannot open it, whoever runs the test.
    (tmp_path / "store.db").mkdir()
    cfg = tmp_path / "run.yaml"
    cfg.write_text(
        "listen: {host: 127.0.0.1, port: 0}\nadmin: {host: 127.0.0.1, port: 0}\n"
        "primary: {url: 'http://127.0.0.1:9'}\nshadow: {url: 'http://127.0.0.1:9'}\n"
        f"store: {{path: '{tmp_path / 'store.db'}'}}\n"
    )
    out = cli("run", "-c", str(cfg))
    assert out.returncode == 2
    assert out.stderr == (
        f"shadowproxy: store: {tmp_path / 'store.db'}: cannot open the store file for writing "
        "(unable to open database file)\n"
    )


async def test_run_logs_a_startup_line_and_drains_in_flight_requests_on_sigterm(
    tmp_path, unused_tcp_port_factory, make_upstream
):
    release = asyncio.Event()
    arrived = asyncio.Event()

    async def slow(request: web.Request, up: object) -> web.Response:
        arrived.set()
        await release.wait()
        return web.Response(text="finished")

    upstream = (await make_upstream(slow)).url
    port, admin = unused_tcp_port_factory(), unused_tcp_port_factory()
    cfg = run_config(tmp_path, upstream, port, admin, "drain_timeout_s: 20\n")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "shadowproxy", "run", "-c", str(cfg), stderr=asyncio.subprocess.PIPE
    )
    try:
        assert proc.stderr is not None
        async with asyncio.timeout(30):
            line = (await proc.stderr.readline()).decode()
        assert f"listening on http://127.0.0.1:{port}" in line
        assert f"primary deno {upstream}" in line and f"shadow workers {upstream}" in line

        async with aiohttp.ClientSession() as s:
            # POST: not shadowed, so exactly one request is held at the upstream.
            pending = asyncio.ensure_future(s.post(f"http://127.0.0.1:{port}/work", data=b"x"))  # noqa: TID251
            async with asyncio.timeout(10):
                await arrived.wait()
            proc.send_signal(signal.SIGTERM)
            async with asyncio.timeout(10):
                assert "shutting down" in (await proc.stderr.readline()).decode()
            release.set()
            async with asyncio.timeout(10):
                resp = await pending
                assert resp.status == 200 and await resp.text() == "finished"
        async with asyncio.timeout(30):
            assert await proc.wait() == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
