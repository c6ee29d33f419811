"""Turn a mismatched exchange into a stored sample: decoded, redacted, then truncated.

Runs in the store's writer process, never in the proxy's: decoding a large body and
DeepDiff's explanation are slow.
"""

from __future__ import annotations

import importlib
import json
import logging
from collections.abc import Callable
from typing import Any

from shadowproxy import config
from shadowproxy.evidence import Sample
from shadowproxy.exchange import Backend, Exchange, FieldDiff, Headers, UpstreamResult
from shadowproxy.redact import Redactor

log = logging.getLogger("shadowproxy.store")

MiB = 1024 * 1024
# Bodies are decoded for redaction up to this much: JSON must parse whole to be redacted
# field by field (the text patterns catch the rest of a longer one).
DECODE_LIMIT = 8 * MiB
MAX_SAMPLE_FIELDS = 100
MAX_VALUE_CHARS = 2000
MAX_EXPLANATION_CHARS = 4000
NOT_EXPLAINED = ""  # explained on demand, from the stored (redacted) bodies: explain_stored()


class SampleMaker:
    def __init__(
        self, cfg: config.Store, redactor: Redactor, rules_for: Callable[[str], config.CompareRules]
    ) -> None:
        self._cfg = cfg
        self._redactor = redactor
        self._rules_for = rules_for
        self._decode: Callable[[UpstreamResult, int], str] = fallback_decode
        self._explain: Callable[..., str] | None = None
        # compare is written alongside this module; until it imports, bodies are shown as
        # UTF-8 and samples carry no explanation.
        try:
            compare = importlib.import_module("shadowproxy.compare")
            self._decode, self._explain = compare.decoded_text, compare.explain
        except Exception:
            log.warning("store: shadowproxy.compare unavailable; samples stored without decoding")

    def make(self, ex: Exchange, explain: bool = True) -> Sample:
        r = self._redactor
        req, cmp = ex.request, ex.comparison
        try:
            rules = self._rules_for(req.route)
        except Exception:
            rules = config.CompareRules()
        limit = min(rules.max_diff_bytes, DECODE_LIMIT)
        p_text = r.body(self._decoded(ex.primary, limit), ex.primary.header("content-type"))
        s_text = r.body(self._decoded(ex.shadow, limit), ex.shadow.header("content-type"))
        fields = cmp.fields[:MAX_SAMPLE_FIELDS] if cmp is not None else ()
        max_body = self._cfg.max_body_bytes
        return Sample(
            id=0,
            route=req.route,
            method=req.method,
            path=r.text(req.path),
            query=r.query(req.query),
            request_id=req.request_id,
            request_headers=r.headers(req.headers),
            primary_status=ex.primary.status,
            shadow_status=ex.shadow.status,
            primary_headers=r.headers(ex.primary.headers),
            shadow_headers=r.headers(ex.shadow.headers),
            primary_body=truncate(p_text, max_body),
            shadow_body=truncate(s_text, max_body),
            fields=tuple(
                FieldDiff(f.path, f.kind, _clip(r.value(f.path, f.primary)), _clip(r.value(f.path, f.shadow)))
                for f in fields
            ),
            parts=tuple(cmp.parts) if cmp is not None else (),
            primary_latency_s=ex.primary.latency_s,
            shadow_latency_s=ex.shadow.latency_s,
            at=ex.at,
            explanation=self._explanation(ex, p_text, s_text, rules) if explain else NOT_EXPLAINED,
        )

    def _decoded(self, result: UpstreamResult, limit: int) -> str:
        try:
            return self._decode(result, limit)
        except Exception:
            return fallback_decode(result, limit)

    def _explanation(self, ex: Exchange, p_text: str, s_text: str, rules: config.CompareRules) -> str:
        """DeepDiff's explanation, computed on the redacted texts: it quotes values, and
        it must not quote a secret."""
        if self._explain is None:
            return ""
        r = self._redactor
        try:
            text = self._explain(_redacted(ex.primary, r, p_text), _redacted(ex.shadow, r, s_text), rules)
        except Exception as e:
            log.warning("store: explaining a %s sample failed (%s)", ex.request.route, type(e).__name__)
            return ""
        return r.text(text)[:MAX_EXPLANATION_CHARS]


def explain_stored(s: Sample, rules_for: Callable[[str], config.CompareRules], redactor: Redactor) -> str:
    """DeepDiff's explanation of a stored sample, from its stored (already redacted and
    truncated) bodies. Never raises."""
    try:
        from shadowproxy.compare import explain

        rules = rules_for(s.route)

        def side(backend: Backend, status: int | None, headers: Headers, body: str) -> UpstreamResult:
            kept = tuple((k, v) for k, v in headers if k.lower() != "content-encoding")
            raw = body.encode()
            return UpstreamResult(backend, status, kept, raw, 0.0, body_size=len(raw))

        text = explain(
            side("primary", s.primary_status, s.primary_headers, s.primary_body),
            side("shadow", s.shadow_status, s.shadow_headers, s.shadow_body),
            rules,
        )
    except Exception as e:
        log.warning("store: explaining a %s sample failed (%s)", s.route, type(e).__name__)
        return ""
    return redactor.text(text)[:MAX_EXPLANATION_CHARS]


def fallback_decode(result: UpstreamResult, limit: int) -> str:
    return result.body[:limit].decode("utf-8", "replace")


def truncate(s: str, limit: int) -> str:
    b = s.encode()
    if len(b) <= limit:
        return s
    return b[:limit].decode("utf-8", "ignore") + f"\n[truncated: {len(b)} bytes in all]"


def _redacted(u: UpstreamResult, r: Redactor, text: str) -> UpstreamResult:
    body = text.encode()
    # The body is decoded text now: a stale Content-Encoding would make compare decode it again.
    headers = tuple((k, v) for k, v in r.headers(u.headers) if k.lower() != "content-encoding")
    return u.with_body(headers, body)


def _clip(v: Any) -> Any:
    if isinstance(v, str):
        return v if len(v) <= MAX_VALUE_CHARS else v[:MAX_VALUE_CHARS] + "…"
    if isinstance(v, dict | list):
        s = json.dumps(v, ensure_ascii=False, default=str)
        return v if len(s) <= MAX_VALUE_CHARS else s[:MAX_VALUE_CHARS] + "…"
    return v
