"""What both engines do around forwarding a request to the primary: the headers it carries
both ways, starting the shadow beside it, and recording what the primary answered.

The engines' handlers (proxy.py on aiohttp, fast/handler.py on httptools) hold a ProxyCore
and do the I/O. This module is compiled in the compiled build, so it does none: no aiohttp,
no async generator (mypyc compiles neither well).
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Final

from shadowproxy import config
from shadowproxy.exchange import HOP_BY_HOP, ErrorKind, Headers, RequestSnapshot, SkipReason, UpstreamResult
from shadowproxy.recording import Recorder
from shadowproxy.routes import Router
from shadowproxy.shadow import ShadowDispatcher, Shadowed, ShadowPolicy
from shadowproxy.transport import classify, strip_hop_by_hop

log: Final = logging.getLogger("shadowproxy.proxy")


def request_id_for(incoming: str | None) -> str:
    """The client's X-Request-Id, or a new one: the same id reaches both backends."""
    # 128 random bits in hex. A correlation id, not a secret: the process's Mersenne Twister
    # (seeded from os.urandom in each worker) costs no syscall, where os.urandom's released
    # and re-took the GIL on every request. bytes.hex, not a format spec: 2,500 against
    # 4,700 instructions compiled (callgrind).
    return incoming or _ids.getrandbits(128).to_bytes(16, "big").hex()


_ids: Final = random.Random()


# Not forwarded as the client sent them: hop-by-hop, and the ones we set ourselves.
_REPLACED: Final = HOP_BY_HOP | {"x-forwarded-proto", "x-forwarded-host", "x-request-id"}


def forward_headers(
    raw: Iterable[tuple[str, str]], peer: str, scheme: str, host: str | None, request_id: str
) -> Headers:
    """The client's headers as forwarded: hop-by-hop gone, X-Forwarded-* and X-Request-Id ours."""
    out = strip_hop_by_hop(raw, _REPLACED)
    prior = [v for k, v in out if len(k) == 15 and k.lower() == "x-forwarded-for"]
    if prior:
        out = [(k, v) for k, v in out if len(k) != 15 or k.lower() != "x-forwarded-for"]
        out.append(("X-Forwarded-For", f"{', '.join(prior)}, {peer}"))
    else:
        out.append(("X-Forwarded-For", peer))
    out.append(("X-Forwarded-Proto", scheme))
    if host:
        out.append(("X-Forwarded-Host", host))
    out.append(("X-Request-Id", request_id))
    return tuple(out)


def client_headers(upstream: Iterable[tuple[str, str]], request_id: str) -> list[tuple[str, str]]:
    """The upstream's response headers as the client gets them: hop-by-hop gone, and the
    request id added unless the upstream sent its own."""
    kept = strip_hop_by_hop(upstream)
    for k, _ in kept:
        if len(k) == 12 and k.lower() == "x-request-id":
            return kept
    kept.append(("X-Request-Id", request_id))
    return kept


class ProxyCore:
    """The engine-neutral steps of the primary path, and what they need to know."""

    def __init__(
        self,
        cfg: config.Config,
        router: Router,
        policy: ShadowPolicy,
        dispatcher: ShadowDispatcher,
        recorder: Recorder,
    ) -> None:
        self.router = router
        self.policy = policy
        self.rec = recorder
        self.max_body = cfg.shadowing.max_body_bytes
        self.capture = cfg.shadowing.max_response_bytes
        self._dispatcher = dispatcher
        self._marker = (cfg.shadowing.marker_header, "1")

    def shadow_begin(
        self,
        skip: SkipReason | None,
        route: str,
        method: str,
        raw_path: str,
        query: str,
        forwarded: Headers,
        body: bytes | None,
        request_id: str,
        host: str | None,
    ) -> Shadowed | None:
        """Start the shadow call unless `skip` (or the in-flight cap) says no, and record a skip.
        Returns what the primary's result must be set on (see primary_done)."""
        if skip is None:
            snapshot = RequestSnapshot(
                method=method,
                path=raw_path,
                query=query,
                headers=(*forwarded, self._marker),
                body=body or b"",
                request_id=request_id,
                route=route,
            )
            started = self._dispatcher.try_start(snapshot, host)
            if isinstance(started, Shadowed):
                return started
            skip = started
        self.rec.skipped(route, method, skip)
        return None

    def primary_failed(
        self, route: str, method: str, exc: BaseException, started: float
    ) -> tuple[int, str, UpstreamResult]:
        """Record a primary that gave no answer; returns (status for the client, detail, result)."""
        kind, detail = classify(exc)
        result = failed_result(detail, kind, time.perf_counter() - started)
        self.rec.upstream(route, method, result)
        log.warning("primary %s %s: %s", method, route, detail)
        return (504 if kind == "timeout" else 502), detail, result

    def primary_answered(
        self,
        route: str,
        method: str,
        status: int,
        headers: Headers,
        captured: bytes,
        size: int,
        since: float,
        ended: float | None = None,
    ) -> UpstreamResult:
        """Record the primary's complete answer; the result the shadow side compares with.
        Its latency counts from `since`, the send where the engine can tell (fast engine),
        to `ended`, when the answer was all in if known, else now."""
        result = UpstreamResult(
            backend="primary",
            status=status,
            headers=headers,
            body=captured,
            latency_s=(time.perf_counter() if ended is None else ended) - since,
            body_size=size,
            truncated=size > len(captured),
        )
        self.rec.upstream(route, method, result)
        return result

    def primary_cut(self, route: str, method: str, exc: BaseException, started: float, size: int) -> None:
        """Record a primary that failed after its headers went to the client."""
        kind, detail = classify(exc)
        self.rec.upstream(route, method, failed_result(detail, kind, time.perf_counter() - started))
        log.warning("primary %s %s failed mid-body after %d bytes: %s", method, route, size, detail)


def primary_done(pair: Shadowed | None, result: UpstreamResult | None) -> None:
    """Hand the primary's answer to its shadowed pair (a failure if there was none)."""
    if pair is not None:
        # No result: the primary failed after its headers went out, or the client left.
        pair.primary_in(result or failed_result("primary gave no complete answer"))


Read = Callable[[], Awaitable[bytes]]  # the next chunk of a request body; b"" at its end


async def read_bounded(read: Read, limit: int) -> tuple[bytes, bool]:
    """Read the body up to `limit` bytes (a chunk more at most); True if more remains,
    then the rest still streams on through a Chain. Both engines capture this way."""
    buf = bytearray()
    while len(buf) <= limit:
        chunk = await read()
        if not chunk:
            return bytes(buf), False
        buf += chunk
    return bytes(buf), True


class Chain:
    """`head`, then the rest of the body as it arrives: an async iterator, written out
    because mypyc compiles no async generator."""

    def __init__(self, head: bytes, read: Read) -> None:
        self._head = head
        self._read = read
        self._done = False

    def __aiter__(self) -> Chain:
        return self

    async def __anext__(self) -> bytes:
        if self._head:
            head, self._head = self._head, b""
            return head
        if not self._done:
            chunk = await self._read()
            if chunk:
                return chunk
            self._done = True
        raise StopAsyncIteration


def failed_result(detail: str, kind: ErrorKind = "error", latency_s: float = 0.0) -> UpstreamResult:
    return UpstreamResult.failure("primary", kind, detail, latency_s)
