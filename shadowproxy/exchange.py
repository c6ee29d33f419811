"""The small typed values that travel between modules for one request.

Nothing here does I/O; every other module may import this one.
"""

from __future__ import annotations

import time
from typing import Any, Final, Literal, get_args

from shadowproxy.jsonpath import generic_paths
from shadowproxy.value import Value

# Raw header pairs in wire order; repeated names (Set-Cookie) stay repeated.
Headers = tuple[tuple[str, str], ...]

# RFC 9110 7.6.1: meaningful for one connection only, so never forwarded, and never compared.
HOP_BY_HOP: Final = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "trailers",
        "transfer-encoding",
        "upgrade",
    }
)

Backend = Literal["primary", "shadow", "secondary"]
ErrorKind = Literal["timeout", "error"]
SkipReason = Literal[
    "sampled_out",
    "unsafe_method",
    "body_too_large",
    "saturated",
    "compare_busy",
    "circuit_open",
    "websocket",
    "disabled",
]
SKIP_REASONS: tuple[SkipReason, ...] = get_args(SkipReason)
Part = Literal["status", "headers", "body"]
PARTS: tuple[Part, ...] = ("status", "headers", "body")
DiffKind = Literal["changed", "type_changed", "missing", "extra", "order"]
BodyMode = Literal["identical", "json", "text", "binary", "hash_only", "empty"]


class RequestSnapshot(Value):
    """What the client asked, as forwarded upstream (hop-by-hop headers already removed)."""

    __match_args__ = ("method", "path", "query", "headers", "body", "request_id", "route", "received_at")

    def __init__(
        self,
        method: str,
        path: str,  # raw, still percent-encoded, exactly as received
        query: str,  # raw query string without the '?'
        headers: Headers,
        body: bytes,
        request_id: str,
        route: str,
        received_at: float | None = None,  # None: now
    ) -> None:
        self.method: Final = method
        self.path: Final = path
        self.query: Final = query
        self.headers: Final = headers
        self.body: Final = body
        self.request_id: Final = request_id
        self.route: Final = route
        self.received_at: Final = time.time() if received_at is None else received_at

    def header(self, name: str) -> str | None:
        lname = name.lower()
        return next((v for k, v in self.headers if k.lower() == lname), None)


class UpstreamResult(Value):
    """One backend's answer, or the reason there was none.

    `body` holds at most the configured capture limit; `body_size` counts every byte
    received, so a truncated capture is visible (`truncated`).
    """

    __match_args__ = (
        "backend",
        "status",
        "headers",
        "body",
        "latency_s",
        "body_size",
        "truncated",
        "error",
        "error_detail",
    )

    def __init__(
        self,
        backend: Backend,
        status: int | None,
        headers: Headers,
        body: bytes,
        latency_s: float,
        body_size: int = 0,
        truncated: bool = False,
        error: ErrorKind | None = None,
        error_detail: str = "",
    ) -> None:
        self.backend: Final = backend
        self.status: Final = status
        self.headers: Final = headers
        self.body: Final = body
        self.latency_s: Final = latency_s
        self.body_size: Final = body_size
        self.truncated: Final = truncated
        self.error: Final = error
        self.error_detail: Final = error_detail

    @staticmethod
    def failure(
        backend: Backend, kind: ErrorKind, detail: str, latency_s: float, body_size: int = 0
    ) -> UpstreamResult:
        """A call that got no usable answer (the one shape every engine reports it in)."""
        return UpstreamResult(
            backend=backend,
            status=None,
            headers=(),
            body=b"",
            latency_s=latency_s,
            body_size=body_size,
            error=kind,
            error_detail=detail,
        )

    def with_body(self, headers: Headers, body: bytes) -> UpstreamResult:
        """The same answer with other headers and a whole body (a stored sample's copy)."""
        return UpstreamResult(
            self.backend,
            self.status,
            headers,
            body,
            self.latency_s,
            body_size=len(body),
            truncated=self.truncated,
            error=self.error,
            error_detail=self.error_detail,
        )

    @property
    def ok(self) -> bool:
        return self.error is None and self.status is not None

    @property
    def failed(self) -> bool:
        """Counts against the shadow error rate: transport error, timeout or 5xx."""
        return self.error is not None or (self.status is not None and self.status >= 500)

    def header(self, name: str) -> str | None:
        lname = name.lower()
        return next((v for k, v in self.headers if k.lower() == lname), None)


class FieldDiff(Value):
    """One difference. `path` is a JSON path (`$.data[3].title`), `header:<name>`,
    `status`, `body` (non-JSON bodies) or `line:<n>` for text bodies."""

    __match_args__ = ("path", "kind", "primary", "shadow")

    def __init__(self, path: str, kind: DiffKind, primary: Any = None, shadow: Any = None) -> None:
        self.path: Final = path
        self.kind: Final = kind
        self.primary: Final = primary
        self.shadow: Final = shadow


class Comparison(Value):
    __match_args__ = ("match", "parts", "fields", "body_mode", "hashed_only")

    def __init__(
        self,
        match: bool,
        parts: tuple[Part, ...] = (),
        fields: tuple[FieldDiff, ...] = (),
        body_mode: BodyMode = "identical",
        # True when a body was over the diff limit and only its hash was compared.
        hashed_only: bool = False,
    ) -> None:
        self.match: Final = match
        self.parts: Final = parts
        self.fields: Final = fields
        self.body_mode: Final = body_mode
        self.hashed_only: Final = hashed_only
        # Derived once here: the metrics, the store and its writer all key counts by them.
        self.paths: Final = generic_paths([f.path for f in fields]) if fields else ()

    @staticmethod
    def equal(mode: BodyMode = "identical") -> Comparison:
        return Comparison(match=True, body_mode=mode)


class Exchange(Value):
    """A shadowed request, once both sides are in: what the store and metrics record."""

    __match_args__ = ("request", "primary", "shadow", "comparison", "secondary", "noise_paths", "at")

    def __init__(
        self,
        request: RequestSnapshot,
        primary: UpstreamResult,
        shadow: UpstreamResult,
        # None when the shadow (or primary) gave no comparable answer: see shadow.failed.
        comparison: Comparison | None,
        secondary: UpstreamResult | None = None,
        # Field paths where primary and secondary differed (Diffy's noise), when a secondary ran.
        noise_paths: tuple[str, ...] = (),
        at: float | None = None,  # None: now
    ) -> None:
        self.request: Final = request
        self.primary: Final = primary
        self.shadow: Final = shadow
        self.comparison: Final = comparison
        self.secondary: Final = secondary
        self.noise_paths: Final = noise_paths
        self.at: Final = time.time() if at is None else at
