"""The small typed values that travel between modules for one request.

Nothing here does I/O; every other module may import this one.
"""

from __future__ import annotations

import time
from dataclasses import field
from typing import Any, Literal

from shadowproxy.record import record

# Raw header pairs in wire order; repeated names (Set-Cookie) stay repeated.
Headers = tuple[tuple[str, str], ...]

Backend = Literal["primary", "shadow", "secondary"]
ErrorKind = Literal["timeout", "error"]
SkipReason = Literal[
    "sampled_out", "unsafe_method", "body_too_large", "saturated", "circuit_open", "websocket", "disabled"
]
SKIP_REASONS: tuple[SkipReason, ...] = (
    "sampled_out",
    "unsafe_method",
    "body_too_large",
    "saturated",
    "circuit_open",
    "websocket",
    "disabled",
)
Part = Literal["status", "headers", "body"]
PARTS: tuple[Part, ...] = ("status", "headers", "body")
DiffKind = Literal["changed", "type_changed", "missing", "extra", "order"]
BodyMode = Literal["identical", "json", "text", "binary", "hash_only", "empty"]


@record
class RequestSnapshot:
    """What the client asked, as forwarded upstream (hop-by-hop headers already removed)."""

    method: str
    path: str  # raw, still percent-encoded, exactly as received
    query: str  # raw query string without the '?'
    headers: Headers
    body: bytes
    request_id: str
    route: str
    received_at: float = field(default_factory=time.time)

    def header(self, name: str) -> str | None:
        lname = name.lower()
        return next((v for k, v in self.headers if k.lower() == lname), None)


@record
class UpstreamResult:
    """One backend's answer, or the reason there was none.

    `body` holds at most the configured capture limit; `body_size` counts every byte
    received, so a truncated capture is visible (`truncated`).
    """

    backend: Backend
    status: int | None
    headers: Headers
    body: bytes
    latency_s: float
    body_size: int = 0
    truncated: bool = False
    error: ErrorKind | None = None
    error_detail: str = ""

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


@record
class FieldDiff:
    """One difference. `path` is a JSON path (`$.data[3].title`), `header:<name>`,
    `status`, `body` (non-JSON bodies) or `line:<n>` for text bodies."""

    path: str
    kind: DiffKind
    primary: Any = None
    shadow: Any = None


@record
class Comparison:
    match: bool
    parts: tuple[Part, ...] = ()
    fields: tuple[FieldDiff, ...] = ()
    body_mode: BodyMode = "identical"
    # True when a body was over the diff limit and only its hash was compared.
    hashed_only: bool = False

    @staticmethod
    def equal(mode: BodyMode = "identical") -> Comparison:
        return Comparison(match=True, body_mode=mode)


@record
class Exchange:
    """A shadowed request, once both sides are in: what the store and metrics record."""

    request: RequestSnapshot
    primary: UpstreamResult
    shadow: UpstreamResult
    # None when the shadow (or primary) gave no comparable answer: see shadow.failed.
    comparison: Comparison | None
    secondary: UpstreamResult | None = None
    # Field paths where primary and secondary differed (Diffy's noise), when a secondary ran.
    noise_paths: tuple[str, ...] = ()
    at: float = field(default_factory=time.time)
