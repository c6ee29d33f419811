"""A backend served by the fast pool: same URL and header policy as transport.Upstream,
same `fetch` contract (UpstreamResult, never raises), on the httptools client."""

from __future__ import annotations

import asyncio
import ssl
import time
from urllib.parse import urlsplit

from shadowproxy import config
from shadowproxy.exchange import Backend, Headers, RequestSnapshot, UpstreamResult
from shadowproxy.fast.client import FAST_ERRORS, IDEMPOTENT, Body, Pool, end_head
from shadowproxy.fast.conn import Response, UpstreamError
from shadowproxy.transport import Done, Upstream, classify


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
        # What head() adds to every request, rendered once.
        self._preserve_host = cfg.host_header == "preserve"
        self._host_line = f"Host: {self._host}\r\n"
        self._extra_lines = "".join(f"{k}: {v}\r\n" for k, v in self._extra)
        self._extra_length = any(k.lower() == "content-length" for k, _ in self._extra)

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

    def head(
        self, method: str, path: str, query: str, forwarded: Headers, client_host: str | None, body: Body
    ) -> bytes:
        """The request head for this backend: the same bytes as request_head(method,
        self.target(path, query), self.headers(forwarded, client_host), body), in one
        pass, with no header list built in between. Both backends' heads are built on
        every shadowed request; the two steps cost about 7,500 instructions each
        (callgrind, compiled), this about 5,500 (tests/test_fast_client.py holds the two
        to the same bytes)."""
        parts = [method, " ", self._prefix, path]
        if query:
            parts.append("?")
            parts.append(query)
        parts.append(" HTTP/1.1\r\n")
        has_length = self._extra_length
        for k, v in forwarded:
            n = len(k)
            if n == 4 and k.lower() == "host":
                continue  # ours follows, per policy
            if n == 14 and k.lower() == "content-length":
                has_length = True
            parts.append(k)
            parts.append(": ")
            parts.append(v)
            parts.append("\r\n")
        parts.append(f"Host: {client_host}\r\n" if self._preserve_host and client_host else self._host_line)
        parts.append(self._extra_lines)
        return end_head(parts, method, body, has_length)

    def begin_fetch(
        self, req: RequestSnapshot, client_host: str | None, capture_limit: int, done: Done
    ) -> bool:
        """`fetch` on an idle connection, by callbacks (see Pool.send); False if none is idle."""
        pool = self.pool
        if not pool.has_idle:
            return False  # before building a head the task's fetch() would build again
        call = _Fetch(pool, self.role, req.method, capture_limit, done)
        body = req.body or None
        resp = pool.send(
            req.method,
            self.head(req.method, req.path, req.query, req.headers, client_host, body),
            body,
            self.cfg.timeout_s,
            call,
            call.ended,
            capture_limit,
        )
        if resp is None:
            return False
        call.resp = resp
        return True

    async def fetch(
        self, req: RequestSnapshot, client_host: str | None, capture_limit: int
    ) -> UpstreamResult:
        started = time.perf_counter()
        timeout_s = self.cfg.timeout_s
        # Two trys, not one with an Optional response closed in a finally: compiled
        # (setup.py), that shape raised TypeError when the request itself had failed.
        try:
            body = req.body or None
            resp = await self.pool.request(
                req.method,
                self.head(req.method, req.path, req.query, req.headers, client_host, body),
                body,
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
        return _answer(self.role, resp, captured, size)


def _answer(role: Backend, resp: Response, captured: bytes, size: int) -> UpstreamResult:
    return UpstreamResult(
        backend=role,
        status=resp.status,
        headers=tuple(resp.headers),
        body=captured,
        latency_s=time.perf_counter() - resp.sent_at,
        body_size=size,
        truncated=size > len(captured),
    )


class _Fetch:
    """One `begin_fetch` in flight: what `fetch` would have returned, reported to `done`.

    Its deadline (the pool's Deadlines) sees it as a future: `done()`, `set_exception()`."""

    __slots__ = ("_capture", "_done", "_method", "_over", "_pool", "_role", "_started", "resp")

    def __init__(self, pool: Pool, role: Backend, method: str, capture: int, done: Done) -> None:
        self._pool = pool
        self._role: Backend = role
        self._method = method
        self._capture = capture
        self._done = done
        self._started = time.perf_counter()
        self.resp: Response | None = None  # set once the pool has sent the request
        self._over = False

    def done(self) -> bool:
        return self._over

    def set_exception(self, exc: BaseException) -> None:
        """The deadline passed (never twice: Deadlines asks done() first)."""
        self._over = True
        resp = self.resp
        size = 0
        if resp is not None:
            size = resp.body.size
            resp.close()  # drops the connection; its on_end finds this call over
        self._report_failure(exc, size)

    def ended(self, exc: UpstreamError | None) -> None:
        """The connection's on_end: the response is complete (or cut at the capture), or failed."""
        if self._over:
            return
        self._over = True
        self._pool.forget(self)
        resp = self.resp
        if resp is None:  # pragma: no cover - on_end only comes from a started response
            return
        if exc is not None:
            if exc.retryable and self._method in IDEMPOTENT:
                # An idle connection the server had closed: fetch() sends it once more, on
                # another (the pool's own request() would have).
                self._done(None)
            else:
                self._report_failure(exc, resp.body.size)
            return
        body = resp.body.take()
        size = len(body)
        self._done(_answer(self._role, resp, body[: self._capture] if size > self._capture else body, size))

    def _report_failure(self, exc: BaseException, size: int) -> None:
        kind, detail = classify(exc)
        self._done(
            UpstreamResult.failure(self._role, kind, detail, time.perf_counter() - self._started, size)
        )
