"""The one place that removes secrets before anything is stored, logged or reported.

Pure and I/O free. It errs toward hiding too much: a field name *containing* a secret word
(`stripe_secret_key`, `accessToken`, `authtoken`) is hidden, so an innocent `cardinality`
is hidden too. A hidden harmless value costs a little readability; a stored credential
costs a rotation and an incident.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote_plus

from shadowproxy import config
from shadowproxy.exchange import Headers

REDACTED = "[REDACTED]"

# Whatever the config says: these carry credentials by definition.
ALWAYS_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie", "set-cookie"})

# Credentials recognisable by their shape alone, whatever name they are found under.
_TOKENS = re.compile(
    r"""eyJ[A-Za-z0-9_-]+\.eyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*   # JWT: base64url '{"' header and payload
      | \b[sr]k_(?:live|test)_[A-Za-z0-9]+                     # Stripe secret / restricted keys
      | \bgh[pousr]_[A-Za-z0-9]{20,}                           # GitHub tokens
      | \bAKIA[0-9A-Z]{16}\b                                   # AWS access key ids
      | \bxox[abprs]-[A-Za-z0-9-]+                             # Slack tokens
    """,
    re.VERBOSE,
)
_AUTH_SCHEME = re.compile(r"\b(Bearer|Basic|Digest)\s+[A-Za-z0-9._~+/=,\-\"]+", re.IGNORECASE)
# `"password": "x"`, `'token': 'x'` (Python reprs, DeepDiff), `"pin" = 1`; an unterminated
# string at the end of the text is a value cut by truncation and is hidden as well.
_QUOTED_PAIR = re.compile(
    r"""(["'])([^"'\\\n]{1,128})\1(\s*[:=]\s*)
        ("(?:[^"\\]|\\.)*(?:"|$)|'(?:[^'\\]|\\.)*(?:'|$)|[^\s,;}\]&]+)""",
    re.VERBOSE,
)
# `password=x` in query strings, form bodies and log lines.
_EQ_PAIR = re.compile(r"(?<![\w.\-\[\]%])([A-Za-z_][\w.\-\[\]%]{0,127})=([^\s&;,\"'<>]*)")
# `Cookie: a=b; c=d` or `token: x`: the rest of the line, as a header value runs to its end.
_COLON_PAIR = re.compile(r"(?<![\w\"'-])([A-Za-z_][\w-]{0,127}):[ \t]*([^\r\n]+)")
_XML_ELEMENT = re.compile(r"<([A-Za-z_][\w:.\-]{0,127})(\s[^>]*)?>([^<]*)</\1>")
# Multipart form part: the value runs from the blank line to the next boundary line.
_MULTIPART_PART = re.compile(
    r'(Content-Disposition:[^\r\n]*?\bname="([^"]*)"[^\r\n]*\r?\n(?:[^\r\n]+\r?\n)*\r?\n)(.*?)(?=\r?\n--|\Z)',
    re.IGNORECASE | re.DOTALL,
)
# Names inside a JSON path: `.name`, `['name']`, `["name"]`.
_PATH_NAMES = re.compile(r"\.([^.\[\]]+)|\['([^']*)'\]|\[\"([^\"]*)\"\]")
_NOT_ALNUM = re.compile(r"[^a-z0-9]")


def _norm(name: str) -> str:
    return _NOT_ALNUM.sub("", name.lower())


class Redactor:
    def __init__(self, cfg: config.Redact) -> None:
        self._cfg = cfg
        self._headers = ALWAYS_HEADERS | {h.lower() for h in cfg.headers}
        self._words = tuple(w for w in {_norm(f) for f in cfg.fields} if w)
        # Bodies repeat the same few keys; the cache keeps the substring scan off the profile.
        self.is_secret_name: Callable[[str], bool] = functools.lru_cache(maxsize=4096)(self._is_secret_name)

    def __reduce__(self) -> tuple[type, tuple[config.Redact]]:
        # Sent to the store's writer process; the lru_cache wrapper does not pickle.
        return (Redactor, (self._cfg,))

    def _is_secret_name(self, name: str) -> bool:
        n = _norm(name)
        return any(w in n for w in self._words)

    def is_secret_header(self, name: str) -> bool:
        return name.lower() in self._headers or self.is_secret_name(name)

    # ----------------------------------------------------------------- public API

    def headers(self, headers: Headers) -> Headers:
        return tuple((k, REDACTED if self.is_secret_header(k) else self.text(v)) for k, v in headers)

    def query(self, query: str) -> str:
        """Hide secret parameters' values; every other byte stays as received."""
        parts = re.split(r"([&;])", query)
        for i in range(0, len(parts), 2):
            key, eq, _ = parts[i].partition("=")
            if eq and self.is_secret_name(unquote_plus(key)):
                parts[i] = f"{key}={REDACTED}"
        return _TOKENS.sub(REDACTED, "".join(parts))

    def body(self, body: str, content_type: str | None) -> str:
        media = (content_type or "").split(";", 1)[0].strip().lower()
        if media == "application/x-www-form-urlencoded":
            return self.query(body)
        if media == "multipart/form-data":
            body = _MULTIPART_PART.sub(self._multipart_part, body)
        elif media == "application/json" or media.endswith("+json") or body.lstrip()[:1] in ("{", "["):
            try:
                return json.dumps(self._walk(json.loads(body)), ensure_ascii=False)
            except (ValueError, RecursionError):
                pass  # not JSON after all, or cut by truncation: the text patterns still apply
        return self.text(body)

    def value(self, path: str, value: Any) -> Any:
        """A FieldDiff value: hidden when any name on its path is secret (the body hides
        the whole subtree under a secret key, so the diff must too)."""
        if value is None:
            return None  # a missing side carries nothing and says "missing"
        if path.startswith("header:"):
            secret = self.is_secret_header(path[len("header:") :])
        else:
            secret = any(
                self.is_secret_name(next(g for g in m.groups() if g is not None))
                for m in _PATH_NAMES.finditer(path)
            )
        return REDACTED if secret else self._walk(value)

    def text(self, s: str) -> str:
        """Any free text (a log line, a non-JSON body, an explanation)."""
        s = _TOKENS.sub(REDACTED, s)
        s = _AUTH_SCHEME.sub(lambda m: f"{m.group(1)} {REDACTED}", s)
        s = _QUOTED_PAIR.sub(self._quoted_pair, s)
        s = _EQ_PAIR.sub(self._eq_pair, s)
        s = _COLON_PAIR.sub(self._colon_pair, s)
        return _XML_ELEMENT.sub(self._xml_element, s)

    # ----------------------------------------------------------------- helpers

    def _walk(self, v: Any) -> Any:
        if isinstance(v, dict):
            return {k: REDACTED if self.is_secret_name(str(k)) else self._walk(x) for k, x in v.items()}
        if isinstance(v, list | tuple):
            return [self._walk(x) for x in v]
        if isinstance(v, str):
            return self.text(v)
        return v

    def _quoted_pair(self, m: re.Match[str]) -> str:
        if not self.is_secret_name(m.group(2)):
            return m.group(0)
        q = m.group(1)
        return f"{q}{m.group(2)}{q}{m.group(3)}{q}{REDACTED}{q}"

    def _eq_pair(self, m: re.Match[str]) -> str:
        if not self.is_secret_name(unquote_plus(m.group(1))):
            return m.group(0)
        return f"{m.group(1)}={REDACTED}"

    def _colon_pair(self, m: re.Match[str]) -> str:
        if not self.is_secret_header(m.group(1)) or m.group(2) == REDACTED:
            return m.group(0)
        return f"{m.group(1)}: {REDACTED}"

    def _xml_element(self, m: re.Match[str]) -> str:
        if not self.is_secret_name(m.group(1)):
            return m.group(0)
        return f"<{m.group(1)}{m.group(2) or ''}>{REDACTED}</{m.group(1)}>"

    def _multipart_part(self, m: re.Match[str]) -> str:
        if not self.is_secret_name(m.group(2)):
            return m.group(0)
        return f"{m.group(1)}{REDACTED}"
