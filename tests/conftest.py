"""Shared fixtures: real upstream servers on 127.0.0.1 ephemeral ports and a real sidecar."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry

import shadowproxy
from shadowproxy import config
from shadowproxy.redact import Redactor
from shadowproxy.store import Store

if TYPE_CHECKING:
    from shadowproxy.app import Running


def pytest_configure() -> None:
    # `make test-compiled` must test the compiled build, not quietly the pure one beside it.
    if os.environ.get("SHADOWPROXY_EXPECT_COMPILED") == "1" and not shadowproxy.compiled():
        raise pytest.UsageError(f"SHADOWPROXY_EXPECT_COMPILED=1 but {shadowproxy.__file__} is not compiled")


@dataclass
class Seen:
    """What an upstream received, for assertions."""

    method: str
    raw_path: str
    raw_headers: list[tuple[str, str]]
    body: bytes
    peer: tuple[str, int]

    def header(self, name: str) -> str | None:
        return next((v for k, v in self.raw_headers if k.lower() == name.lower()), None)

    def headers_named(self, name: str) -> list[str]:
        return [v for k, v in self.raw_headers if k.lower() == name.lower()]


@dataclass
class Upstream:
    url: str
    seen: list[Seen] = field(default_factory=list)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


async def _record(request: web.Request, up: Upstream, read_body: bool = True) -> Seen:
    body = await request.read() if read_body else b""
    peer = request.transport.get_extra_info("peername") if request.transport else ("", 0)
    s = Seen(
        method=request.method,
        raw_path=request.raw_path,
        raw_headers=[(k.decode("latin-1"), v.decode("latin-1")) for k, v in request.raw_headers],
        body=body,
        peer=tuple(peer[:2]),
    )
    up.seen.append(s)
    up.arrived.set()
    return s


@pytest.fixture
async def make_upstream() -> AsyncIterator[Callable[..., Awaitable[Upstream]]]:
    """Start an aiohttp app on 127.0.0.1:0. `handler(request, upstream)` answers; the
    default echoes method/path/body as JSON. Every request is recorded first (unless
    `read_body=False`, for streaming handlers that read the body themselves)."""
    runners: list[web.AppRunner] = []

    async def start(
        handler: Callable[[web.Request, Upstream], Awaitable[web.StreamResponse]] | None = None,
        *,
        read_body: bool = True,
    ) -> Upstream:
        up = Upstream(url="")

        async def entry(request: web.Request) -> web.StreamResponse:
            if read_body:
                await _record(request, up)
            if handler is None:
                return web.json_response({"method": request.method, "path": request.raw_path})
            return await handler(request, up)

        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", entry)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        runners.append(runner)
        up.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
        return up

    yield start
    for r in runners:
        await r.cleanup()


@dataclass
class RawUpstream:
    """A hand-written HTTP/1.1 server: answers every request with `response` bytes, so a
    test controls exactly which headers exist (aiohttp's server would add Date/Server)."""

    url: str
    requests: list[bytes] = field(default_factory=list)


@pytest.fixture
async def raw_upstream() -> AsyncIterator[Callable[[bytes], Awaitable[RawUpstream]]]:
    servers: list[asyncio.Server] = []

    async def start(response: bytes, *, close_after: bool = False) -> RawUpstream:
        up = RawUpstream(url="")

        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                while True:
                    head = await reader.readuntil(b"\r\n\r\n")
                    length = 0
                    for line in head.split(b"\r\n"):
                        if line.lower().startswith(b"content-length:"):
                            length = int(line.split(b":", 1)[1])
                    body = await reader.readexactly(length) if length else b""
                    up.requests.append(head + body)
                    writer.write(response)
                    await writer.drain()
                    if close_after:
                        # Abort rather than close: the peer sees a reset mid-body.
                        writer.transport.abort()
                        return
            except (asyncio.IncompleteReadError, ConnectionError):
                pass
            finally:
                writer.close()

        server = await asyncio.start_server(serve, "127.0.0.1", 0)
        servers.append(server)
        up.url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
        return up

    yield start
    for s in servers:
        s.close()
        await s.wait_closed()


def make_config(primary_url: str, shadow_url: str, tmp_path: Path, **overrides: Any) -> config.Config:
    """A config on ephemeral loopback ports; `overrides` replace top-level fields."""
    base = config.Config(
        primary=config.Backend(url=primary_url, name="deno", timeout_s=5.0),
        shadow=config.Backend(url=shadow_url, name="workers", timeout_s=2.0),
        listen=config.Listen(host="127.0.0.1", port=0),
        admin=config.Admin(host="127.0.0.1", port=0),
        store=config.Store(path=str(tmp_path / "store.db"), flush_interval_s=0.05),
        drain_timeout_s=2.0,
    )
    return dataclasses.replace(base, **overrides)


ENGINES = ("fast", "aiohttp")


@pytest.fixture(params=ENGINES)
async def sidecar(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[Callable[..., Awaitable[Running]]]:
    """Start a real sidecar (proxy + admin on ephemeral ports) with a fresh registry; every
    test using it runs once per engine, since both must behave the same."""
    # Imported here so that tests of pure modules do not need the whole app to import.
    from shadowproxy.app import running

    stack = contextlib.AsyncExitStack()
    engine = request.param

    async def start(cfg: config.Config) -> Running:
        cfg = dataclasses.replace(cfg, engine=engine)
        return await stack.enter_async_context(running(cfg, CollectorRegistry()))

    async with stack:
        yield start


async def raw_http(url: str, request: bytes, *, read_timeout_s: float = 10.0) -> bytes:
    """Send raw bytes to host:port of `url`; return everything read until the peer closes."""
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(request)
        await writer.drain()
        async with asyncio.timeout(read_timeout_s):
            return await reader.read()
    finally:
        writer.close()


def split_response(raw: bytes) -> tuple[str, list[tuple[str, str]], bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = [(k.strip(), v.strip()) for k, _, v in (line.partition(":") for line in lines[1:])]
    return lines[0], headers, body


def run_config(tmp_path: Path, upstream: str, port: int, admin: int, extra: str = "") -> Path:
    """A config file for `shadowproxy run` in a subprocess: both backends at `upstream`."""
    path = tmp_path / "run.yaml"
    path.write_text(
        f"listen: {{host: 127.0.0.1, port: {port}}}\nadmin: {{host: 127.0.0.1, port: {admin}}}\n"
        f"primary: {{name: deno, url: '{upstream}'}}\nshadow: {{name: workers, url: '{upstream}'}}\n"
        f"store: {{path: '{tmp_path / 's.db'}'}}\n{extra}"
    )
    return path


# ---- the sample store, started on a file of the test's own (tests/test_store*.py)

# The rules go to the writer process, pickled: a config's method (a lambda would not pickle,
# and a function of a test module would make every writer import it, and pytest).
STORE_RULES = config.Config(
    primary=config.Backend(url="http://127.0.0.1:9"), shadow=config.Backend(url="http://127.0.0.1:9")
).rules_for


def make_store(db: str, cfg: config.Store | None = None, **kw: Any) -> Store:
    return Store(db, cfg or config.Store(flush_interval_s=60.0), Redactor(config.Redact()), STORE_RULES, **kw)


@pytest.fixture
def db(tmp_path: Path) -> str:
    return str(tmp_path / "shadowproxy.db")


@pytest.fixture
def store(db: str) -> Iterator[Store]:
    s = make_store(db)
    s.start()
    yield s
    s.close()
