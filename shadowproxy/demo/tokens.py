"""HS256 JWTs and Stripe webhook signatures for the demo backends (standard library only).

Only what the demo needs: one algorithm, one secret shared by both backends (as the real
Deno server and Workers port share JWT_SECRET), so a token issued by the primary is
accepted by the shadow.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import time
import uuid
from dataclasses import dataclass

_HEADER = {"alg": "HS256", "typ": "JWT"}
TOKEN_TTL_S = 24 * 3600
# Stripe's own libraries reject signatures older than five minutes (replay protection).
STRIPE_TOLERANCE_S = 300


@dataclass(frozen=True, slots=True)
class Claims:
    user_id: int
    portal: str
    expires: int


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _sign(signing_input: str, secret: bytes) -> str:
    return _b64(hmac.new(secret, signing_input.encode("ascii"), hashlib.sha256).digest())


def issue(user_id: int, portal: str, secret: bytes, *, now: float | None = None) -> tuple[str, Claims]:
    iat = int(time.time() if now is None else now)
    claims = Claims(user_id=user_id, portal=portal, expires=iat + TOKEN_TTL_S)
    payload = {
        "sub": str(user_id),
        "portal": portal,
        "iat": iat,
        "exp": claims.expires,
        "jti": str(uuid.uuid4()),
    }
    head = _b64(json.dumps(_HEADER, separators=(",", ":")).encode())
    body = _b64(json.dumps(payload, separators=(",", ":")).encode())
    return f"{head}.{body}.{_sign(f'{head}.{body}', secret)}", claims


def verify(token: str, secret: bytes, *, now: float | None = None) -> Claims | None:
    """The token's claims if it is ours, well formed and not expired; otherwise None."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    head, body, sig = parts
    if not hmac.compare_digest(sig, _sign(f"{head}.{body}", secret)):
        return None
    try:
        header = json.loads(_unb64(head))
        payload = json.loads(_unb64(body))
        claims = Claims(
            user_id=int(payload["sub"]), portal=str(payload["portal"]), expires=int(payload["exp"])
        )
    except (ValueError, KeyError, TypeError, binascii.Error):
        return None
    if header != _HEADER:
        return None
    if claims.expires <= (time.time() if now is None else now):
        return None
    return claims


def stripe_signature(payload: bytes, secret: str, *, timestamp: int | None = None) -> str:
    """The `Stripe-Signature` header value Stripe would send for this raw body."""
    t = int(time.time()) if timestamp is None else timestamp
    mac = hmac.new(secret.encode(), f"{t}.".encode() + payload, hashlib.sha256).hexdigest()
    return f"t={t},v1={mac}"


def stripe_verify(payload: bytes, header: str, secret: str, *, now: float | None = None) -> bool:
    """True when one `v1` signature matches the raw body and the timestamp is recent.

    Several `v1` entries may appear while Stripe rolls the endpoint secret.
    """
    t: int | None = None
    candidates: list[str] = []
    for item in header.split(","):
        key, _, value = item.strip().partition("=")
        if key == "t" and value.isdigit():
            t = int(value)
        elif key == "v1":
            candidates.append(value)
    if t is None or not candidates:
        return False
    if abs((time.time() if now is None else now) - t) > STRIPE_TOLERANCE_S:
        return False
    expected = hmac.new(secret.encode(), f"{t}.".encode() + payload, hashlib.sha256).hexdigest()
    return any(hmac.compare_digest(expected, c) for c in candidates)
