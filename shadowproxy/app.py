"""Wiring: one Sidecar per process owns the upstreams, shadow dispatch, metrics and store,
and builds the proxy and admin applications around them."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol

from aiohttp import web
from prometheus_client import CollectorRegistry

from shadowproxy import config
from shadowproxy.compare_process import CompareProcess
from shadowproxy.fast.handler import FastProxy
from shadowproxy.fast.server import FastServer
from shadowproxy.fast.upstream import FastUpstream
from shadowproxy.forwarding import ProxyCore
from shadowproxy.gate import Decision, evaluate_live
from shadowproxy.loopwatch import LoopWatch
from shadowproxy.metrics import VERDICT_VALUES, Metrics
from shadowproxy.proxy import ProxyHandler, strip_server_defaults
from shadowproxy.recording import Recorder
from shadowproxy.redact import Redactor
from shadowproxy.routes import Router
from shadowproxy.shadow import ShadowDispatcher, ShadowPolicy
from shadowproxy.store import Store
from shadowproxy.tasks import TaskTracker
from shadowproxy.transport import Upstream

log = logging.getLogger("shadowproxy")

METRICS_FLUSH_S = 1.0


class Sidecar:
    """Everything one process runs."""

    def __init__(self, cfg: config.Config, registry: CollectorRegistry | None = None) -> None:
        self.cfg = cfg
        self.router = Router(cfg.routes, cfg.routing)
        make = _upstream_class(cfg)
        self.primary = make("primary", cfg.primary)
        self.shadow = make("shadow", cfg.shadow)
        self.secondary = _secondary(cfg)
        self.metrics = Metrics(registry)
        self.store = Store(
            cfg.store.path,
            cfg.store,
            Redactor(cfg.redact),
            cfg.rules_for,
            on_drop=self.metrics.dropped,
            judge=functools.partial(evaluate_live, cfg),
        )
        self.recorder = Recorder(self.metrics, self.store)
        self.tracker = TaskTracker(on_failure=self.metrics.task_failed)
        self.policy = ShadowPolicy(cfg)
        self.comparer = (
            CompareProcess(cfg.rules_by_route(), cfg.compare) if cfg.shadowing.compare_process else None
        )
        self.dispatcher = ShadowDispatcher(
            cfg, self.shadow, self.tracker, self.recorder, self.secondary, self.comparer
        )
        self.core = ProxyCore(cfg, self.router, self.policy, self.dispatcher, self.recorder)
        self.ready = False
        self._verdicts: asyncio.Task[None] | None = None
        self._flusher: asyncio.Task[None] | None = None
        self._watch = LoopWatch(self.metrics.loop_lag)
        self._housekeeping = TaskTracker(on_failure=self.metrics.task_failed)

    # ---- the live verdict (blocking: it waits for the store's writer process, which reads
    # and judges; call it in a thread)
    def judge(self) -> Decision:
        decision = self.store.judge([r.name for r in self.cfg.routes])
        if not isinstance(decision, Decision):  # pragma: no cover - the store runs evaluate_live
            raise TypeError(f"the store judged with something other than the gate: {type(decision)}")
        self.metrics.set_verdicts({r.route: VERDICT_VALUES[r.verdict] for r in decision.routes})
        return decision

    # ---- lifetime
    async def start(self) -> None:
        for up in self._upstreams():
            await up.start()
        try:
            await asyncio.to_thread(self.store.start)
        except BaseException:
            for up in self._upstreams():
                await up.close()
            raise
        if self.comparer is not None:
            # The store's writer started through the same forkserver, so this rarely fails;
            # when it does, the loop compares everything until a restart works.
            try:
                await self.comparer.start()
            except Exception as e:
                log.error("compare: the worker process did not start (%s: %s)", type(e).__name__, e)
        # Its own tracker: `tracker` holds shadow work, which drains; this loop never ends.
        self._verdicts = self._housekeeping.spawn(self._refresh_verdicts(), name="verdict refresh")
        self._flusher = self._housekeeping.spawn(self._flush_metrics(), name="metrics flush")
        self._watch.start()
        self.ready = True

    async def _flush_metrics(self) -> None:
        # A scrape of this process flushes first; this bounds how stale the counts of the
        # other workers are (workers: N), and keeps multiprocess files current.
        while True:
            await asyncio.sleep(METRICS_FLUSH_S)
            self.metrics.flush()

    async def _refresh_verdicts(self) -> None:
        while True:
            await asyncio.sleep(self.cfg.verdict_interval_s)
            try:
                await asyncio.to_thread(self.store.flush)
                await asyncio.to_thread(self.judge)
            except Exception:
                # A failed refresh leaves the last verdict standing; the next one may succeed.
                log.exception("live verdict refresh failed")

    async def settle(self, timeout_s: float) -> int:
        """Let the shadowed pairs in flight finish, up to `timeout_s`; abandon the rest
        (unrecorded) and return how many."""
        abandoned = await self.dispatcher.idle(timeout_s)
        # What is left is the tasks of abandoned pairs, and of finished ones on their way out.
        await self.tracker.drain(1.0 if abandoned else timeout_s)
        return abandoned

    async def stop(self, drain_timeout_s: float) -> None:
        self.ready = False
        self._watch.stop()
        for task in (self._verdicts, self._flusher):
            if task is not None:
                task.cancel()
        await self._housekeeping.drain(1.0)
        abandoned = await self.settle(drain_timeout_s)
        if abandoned:
            log.warning("shutdown: %d shadow calls still running were abandoned", abandoned)
        if self.comparer is not None:
            await self.comparer.close()
        self.metrics.flush()
        for up in self._upstreams():
            await up.close()
        await asyncio.to_thread(self.store.close)

    def _upstreams(self) -> list[Upstream]:
        return [u for u in (self.primary, self.shadow, self.secondary) if u is not None]

    def proxy_app(self) -> web.Application:
        app = web.Application(handler_args={"max_field_size": 16 * 1024})
        handler = ProxyHandler(self.core, self.primary)
        app.router.add_route("*", "/{tail:.*}", handler.handle)
        app.on_response_prepare.append(strip_server_defaults)
        return app

    def fast_server(self) -> FastServer:
        assert isinstance(self.primary, FastUpstream)
        handler = FastProxy(self.core, self.primary)
        return FastServer(handler)

    def admin_app(self) -> web.Application:
        from shadowproxy.admin import build_admin

        return build_admin(self)


def _secondary(cfg: config.Config) -> Upstream | None:
    sec = cfg.secondary
    if sec is None:
        return None
    url = sec.url if sec.url is not None else cfg.primary.url
    backend = config.Backend(
        url=url,
        name="secondary",
        timeout_s=sec.timeout_s,
        host_header=cfg.primary.host_header,
        max_connections=cfg.primary.max_connections,
        headers=cfg.primary.headers,
    )
    return _upstream_class(cfg)("secondary", backend)


def _upstream_class(cfg: config.Config) -> type[Upstream]:
    return FastUpstream if cfg.engine == "fast" else Upstream


@dataclass(frozen=True, slots=True)
class Running:
    sidecar: Sidecar
    proxy_url: str
    admin_url: str


@contextlib.asynccontextmanager
async def running(
    cfg: config.Config, registry: CollectorRegistry | None = None, *, reuse_port: bool = False
) -> AsyncIterator[Running]:
    """Start the sidecar on its ports (0 picks a free one), yield its URLs, then drain and stop.

    Leaving the block is the graceful shutdown: stop accepting, let in-flight requests
    finish up to drain_timeout_s, then let shadow work finish in what is left of it.
    """
    sidecar = Sidecar(cfg, registry)
    await sidecar.start()
    admin_runner = web.AppRunner(
        sidecar.admin_app(), access_log=None, handle_signals=False, shutdown_timeout=1.0
    )
    await admin_runner.setup()
    proxy: _Proxy = _FastProxy(sidecar) if cfg.engine == "fast" else _AiohttpProxy(sidecar)
    try:
        proxy_url = await proxy.start(cfg.listen.host, cfg.listen.port, reuse_port)
        admin_site = web.TCPSite(admin_runner, cfg.admin.host, cfg.admin.port, reuse_port=reuse_port or None)
        await admin_site.start()
        yield Running(sidecar, proxy_url, _url(admin_runner))
    finally:
        await proxy.stop(cfg.drain_timeout_s)
        await sidecar.stop(cfg.drain_timeout_s)
        await admin_runner.cleanup()


class _Proxy(Protocol):
    async def start(self, host: str, port: int, reuse_port: bool) -> str: ...
    async def stop(self, drain_timeout_s: float) -> None: ...


class _AiohttpProxy:
    def __init__(self, sidecar: Sidecar) -> None:
        self._runner = web.AppRunner(
            sidecar.proxy_app(),
            access_log=None,
            handle_signals=False,
            shutdown_timeout=sidecar.cfg.drain_timeout_s,
        )

        self._set_up = False

    async def start(self, host: str, port: int, reuse_port: bool) -> str:
        await self._runner.setup()
        self._set_up = True
        await web.TCPSite(self._runner, host, port, reuse_port=reuse_port or None).start()
        return _url(self._runner)

    async def stop(self, drain_timeout_s: float) -> None:
        if self._set_up:
            await self._runner.cleanup()  # its shutdown_timeout is the drain


class _FastProxy:
    def __init__(self, sidecar: Sidecar) -> None:
        self._server = sidecar.fast_server()

    async def start(self, host: str, port: int, reuse_port: bool) -> str:
        await self._server.start(host, port, reuse_port=reuse_port)
        return self._server.url

    async def stop(self, drain_timeout_s: float) -> None:
        await self._server.close(drain_timeout_s)


def _url(runner: web.AppRunner) -> str:
    host, port = runner.addresses[0][:2]
    if ":" in host:
        host = f"[{host}]"
    if host in ("0.0.0.0", "[::]"):
        host = "127.0.0.1"
    return f"http://{host}:{port}"
