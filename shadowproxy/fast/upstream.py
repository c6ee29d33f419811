"""A backend served by the fast pool: same URL and header policy as transport.Upstream,
same `fetch` contract (UpstreamResult, never raises), on the httptools client."""

from __future__ import annotations

import asyncio
import ssl
import time
from urllib.parse import urlsplit

from shadowproxy import config
from shadowproxy.exchange import Backend, Headers, RequestSnapshot, UpstreamResult
from shadowproxy.fast.client import FAST_ERRORS, Pool
from shadowproxy.transport import Upstream, classify


class FastUpstream(Upstream):
    def __init__(
        self,
        role: Backend,
        cfg: config.Backend,
        *,
        extra_headers: Headers = (),
        tls: ssl.SSLContext | None = None,
    ) -> None:
        super().__init__(role, cfg, extra_headers=extra_headers)
        parts = urlsplit(cfg.url)
        self.https = parts.scheme == "https"
        self._addr = (parts.hostname or "", parts.port or (443 if self.https else 80))
        self._prefix = parts.path.rstrip("/")
        self._tls = tls
        self._pool: Pool | None = None

    async def start(self) -> None:
        # The aiohttp session stays available (it connects lazily, so it costs nothing idle).
        await super().start()
        tls = self._tls or (ssl.create_default_context() if self.https else None)
        self._pool = Pool(
            self._addr[0],
            self._addr[1],
            tls=tls,
            max_connections=self.cfg.max_connections,
            connect_timeout_s=self.cfg.connect_timeout_s,
        )

    @property
    def pool(self) -> Pool:
        assert self._pool is not None, "FastUpstream.start() was not awaited"
        return self._pool

    @property
    def ready(self) -> bool:
        return self._pool is not None and not self._pool.closed and super().ready

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
        await super().close()

    def target(self, path: str, query: str) -> str:
        """The request target: raw path and query, byte for byte, under the base URL's path."""
        return f"{self._prefix}{path}?{query}" if query else self._prefix + path

    async def fetch(
        self, req: RequestSnapshot, client_host: str | None, capture_limit: int
    ) -> UpstreamResult:
        started = time.perf_counter()
        timeout_s = self.cfg.timeout_s
        # Two trys, not one with an Optional response closed in a finally: compiled
        # (setup.py), that shape raised TypeError when the request itself had failed.
        try:
            resp = await self.pool.request(
                req.method,
                self.target(req.path, req.query),
                self.headers(req.headers, client_host),
                req.body or None,
                timeout_s,
            )
        except FAST_ERRORS as e:
            return UpstreamResult.failure(self.role, *classify(e), time.perf_counter() - started)
        size = 0
        try:
            whole = resp.whole()
            if whole is not None:
                size = len(whole)
                captured = whole[:capture_limit] if size > capture_limit else whole
            else:
                async with asyncio.timeout(timeout_s - (time.perf_counter() - started)):
                    buf = bytearray()
                    while chunk := await resp.body.read():
                        size += len(chunk)
                        buf += chunk[: capture_limit - len(buf)]
                        if size > capture_limit:
                            # Past the limit only the hash-compare would look: stop reading
                            # (the connection is closed, not returned to the pool).
                            break
                    captured = bytes(buf)
        except FAST_ERRORS as e:
            return UpstreamResult.failure(self.role, *classify(e), time.perf_counter() - started, size)
        finally:
            resp.close()
        return UpstreamResult(
            backend=self.role,
            status=resp.status,
            headers=tuple(resp.headers),
            body=captured,
            latency_s=time.perf_counter() - resp.sent_at,
            body_size=size,
            truncated=size > len(captured),
        )
