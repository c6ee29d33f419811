"""The proxy's own answers when an upstream gives none (502, 504): small JSON bodies that
name the backend and the reason, so an on-call reader knows which side failed."""

from __future__ import annotations

import orjson
from aiohttp import web


def error_response(status: int, backend: str, reason: str, request_id: str) -> web.Response:
    body = orjson.dumps(
        {
            "error": "gateway_timeout" if status == 504 else "bad_gateway",
            "backend": backend,
            "reason": reason,
            "request_id": request_id,
        }
    )
    return web.Response(
        status=status, body=body, content_type="application/json", headers={"X-Request-Id": request_id}
    )
