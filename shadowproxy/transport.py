"""One upstream backend: its client session, URL and header policy, and error translation.

aiohttp's client is tuned here to be transparent: no decompression, no redirects, no
cookie jar, no headers of its own. Library exceptions become our two error kinds
(`timeout`, `error`) at this one boundary, so nothing above it catches aiohttp types.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable
from typing import Final

import aiohttp
from yarl import URL

from shadowproxy import config
from shadowproxy.exchange import HOP_BY_HOP, Backend, ErrorKind, Headers, RequestSnapshot, UpstreamResult
from shadowproxy.fast.conn import UpstreamError
from shadowproxy.memo import Memo

# Where a fetch started by callbacks (Upstream.begin_fetch) reports: the result, or None
# for "fetch() it instead".
Done = Callable[[UpstreamResult | None], None]

# aiohttp's client adds these unless told not to; a transparent proxy adds nothing.
SKIP_AUTO_HEADERS = ("User-Agent", "Accept", "Accept-Encoding", "Content-Type")


# The name lengths of each `drop` set, worked out once: this runs three times per proxied
# request. Callers pass a few constant sets; bounded all the same.
_LENGTHS: Final[Memo[frozenset[str], frozenset[int]]] = Memo(16)


def _lengths(names: frozenset[str]) -> frozenset[int]:
    got = _LENGTHS.get(names)
    if got is None:
        got = _LENGTHS.keep(names, frozenset(len(n) for n in names))
    return got


def strip_hop_by_hop(
    raw: Iterable[tuple[str, str]], drop: frozenset[str] = HOP_BY_HOP
) -> list[tuple[str, str]]:
    """Drop hop-by-hop headers (or any names in `drop`, which must hold them) and every
    header the Connection header names. One pass in the common case: this runs twice per
    proxied request."""
    kept: list[tuple[str, str]] = []
    named: set[str] | None = None
    lengths = _lengths(drop)
    for k, v in raw:
        # Most names cannot be in `drop` by their length alone: no lower() for them.
        if len(k) in lengths and (lk := k.lower()) in drop:
            if lk == "connection" and (extra := _connection_names(v, drop)):
                named = (named or set()) | extra
        else:
            kept.append((k, v))
    if named:
        return [(k, v) for k, v in kept if k.lower() not in named]
    return kept


_NAMED: Final[Memo[frozenset[str], Memo[str, frozenset[str]]]] = Memo(16)


def _connection_names(value: str, drop: frozenset[str]) -> frozenset[str]:
    """The header names a Connection header lists beyond those dropped anyway. Almost every
    upstream sends `keep-alive` here: an empty answer, so no second pass. Remembered like
    _lengths (once per upstream response), for the first 64 values seen."""
    # Keyed by set, then value: no tuple to build and hash per call.
    known = _NAMED.get(drop)
    if known is None:
        known = _NAMED.keep(drop, Memo(64))
    got = known.get(value)
    if got is None:
        got = known.keep(value, frozenset(t.strip().lower() for t in value.split(",") if t.strip()) - drop)
    return got


def classify(exc: BaseException) -> tuple[ErrorKind, str]:
    """Translate a client-side failure into (kind, human detail)."""
    if isinstance(exc, UpstreamError):  # the fast client's, already in these terms
        return exc.kind, exc.detail
    if isinstance(exc, asyncio.TimeoutError | aiohttp.ServerTimeoutError):
        return "timeout", "no answer within the timeout"
    if isinstance(exc, aiohttp.ClientConnectorError):
        return "error", f"cannot connect: {exc.os_error.strerror or exc.os_error}"
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return "error", "upstream closed the connection"
    if isinstance(exc, aiohttp.ClientPayloadError):
        return "error", "upstream body was cut short or malformed"
    if isinstance(exc, aiohttp.ClientResponseError):
        return "error", f"invalid upstream response: {exc.message}"
    if isinstance(exc, aiohttp.ClientError | OSError):
        return "error", f"{type(exc).__name__}: {exc}"
    return "error", f"unexpected {type(exc).__name__}: {exc}"


TRANSPORT_ERRORS = (aiohttp.ClientError, asyncio.TimeoutError, OSError)


class Upstream:
    """A backend with one long-lived session and an explicit connection limit."""

    def __init__(self, role: Backend, cfg: config.Backend, *, extra_headers: Headers = ()) -> None:
        self.role = role
        self.cfg = cfg
        self.name = cfg.name or role
        base = URL(cfg.url)
        self._base = str(base).rstrip("/")
        self._host = base.raw_authority
        self._extra: Headers = tuple(cfg.headers.items()) + extra_headers
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        connector = aiohttp.TCPConnector(
            limit=self.cfg.max_connections,
            limit_per_host=self.cfg.max_connections,
            ttl_dns_cache=60,
            enable_cleanup_closed=True,
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            auto_decompress=False,
            cookie_jar=aiohttp.DummyCookieJar(),
            skip_auto_headers=SKIP_AUTO_HEADERS,
            # Our own timeouts are applied per call (headers vs body); the connect timeout
            # also bounds the wait for a free pool slot, so a saturated pool fails fast.
            timeout=aiohttp.ClientTimeout(total=None, connect=self.cfg.connect_timeout_s),
            raise_for_status=False,
        )

    @property
    def session(self) -> aiohttp.ClientSession:
        assert self._session is not None, "Upstream.start() was not awaited"
        return self._session

    @property
    def ready(self) -> bool:
        return self._session is not None and not self._session.closed

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    def url(self, path: str, query: str) -> URL:
        # encoded=True: the raw path and query reach the upstream byte for byte.
        return URL(self._base + path + (f"?{query}" if query else ""), encoded=True)

    def headers(self, forwarded: Headers, client_host: str | None) -> list[tuple[str, str]]:
        """The request headers for this backend: the client's (hop-by-hop already gone),
        Host per policy, and this backend's own extra headers."""
        out = [(k, v) for k, v in forwarded if len(k) != 4 or k.lower() != "host"]
        if self.cfg.host_header == "preserve" and client_host:
            out.append(("Host", client_host))
        else:
            out.append(("Host", self._host))
        out.extend(self._extra)
        return out

    def begin_fetch(
        self,
        req: RequestSnapshot,
        client_host: str | None,
        capture_limit: int,
        done: Done,
    ) -> bool:
        """Start `fetch` without a task where the engine can (the fast one can): `done` gets
        the result, or None to say "fetch() it instead". False when nothing was started."""
        return False

    async def fetch(
        self, req: RequestSnapshot, client_host: str | None, capture_limit: int
    ) -> UpstreamResult:
        """A whole exchange with bounded capture, for the shadow side. Never raises."""
        started = time.perf_counter()
        body = bytearray()
        size = 0
        try:
            async with asyncio.timeout(self.cfg.timeout_s):
                async with self.session.request(
                    req.method,
                    self.url(req.path, req.query),
                    headers=self.headers(req.headers, client_host),
                    data=req.body or None,
                    allow_redirects=False,
                ) as resp:
                    async for chunk in resp.content.iter_any():
                        size += len(chunk)
                        body += chunk[: capture_limit - len(body)]
                        if size > capture_limit:
                            # Past the limit only the hash-compare would look; stop reading
                            # (the unread connection is closed, not returned to the pool).
                            break
                    headers = tuple((k.decode("latin-1"), v.decode("latin-1")) for k, v in resp.raw_headers)
                    status = resp.status
        except TRANSPORT_ERRORS as e:
            return UpstreamResult.failure(self.role, *classify(e), time.perf_counter() - started, size)
        return UpstreamResult(
            backend=self.role,
            status=status,
            headers=headers,
            body=bytes(body),
            latency_s=time.perf_counter() - started,
            body_size=size,
            truncated=size > len(body),
        )
