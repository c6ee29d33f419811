"""The proxy's own answers when an upstream gives none (502, 504): small JSON bodies that
name the backend and the reason, so an on-call reader knows which side failed.

`error_body`/`error_headers` are the answer itself, for either engine; `error_response`
wraps them for aiohttp's server.
"""

from __future__ import annotations

import orjson
from aiohttp import web


def error_body(status: int, backend: str, reason: str, request_id: str) -> bytes:
    return orjson.dumps(
        {
            "error": "gateway_timeout" if status == 504 else "bad_gateway",
            "backend": backend,
            "reason": reason,
            "request_id": request_id,
        }
    )


def error_headers(request_id: str) -> list[tuple[str, str]]:
    return [("Content-Type", "application/json"), ("X-Request-Id", request_id)]


def error_response(status: int, backend: str, reason: str, request_id: str) -> web.Response:
    return web.Response(
        status=status, body=error_body(status, backend, reason, request_id), headers=error_headers(request_id)
    )
