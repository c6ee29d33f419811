"""Compare a primary and a shadow answer: status, chosen headers, body (pure, no I/O).

`compare` runs for every shadowed pair, so it tries the cheap answers first: equal bytes,
then equal parsed JSON, and only walks the values with the rules when they differ.
`explain` (DeepDiff, slow) is for the few stored samples and runs off the event loop.
"""

from __future__ import annotations

import difflib
import functools
import hashlib
import json
import logging
import re
from dataclasses import dataclass
from typing import Any, Final

import orjson
from deepdiff import DeepDiff

from shadowproxy import decode, jsondiff
from shadowproxy.config import CompareRules
from shadowproxy.exchange import (
    HOP_BY_HOP,
    BodyMode,
    Comparison,
    DiffKind,
    FieldDiff,
    Headers,
    Part,
    UpstreamResult,
)
from shadowproxy.jsondiff import BodyRules
from shadowproxy.value import Value

log = logging.getLogger("shadowproxy.compare")

MAX_FIELD_DIFFS = 100
MAX_LINE_DIFFS = 10
# A body over the diff limit is compared by the hash of its decoded bytes, streamed; past
# this many times the limit we stop inflating (a bomb) and the pair counts as different.
HASH_CAP_FACTOR = 8

# Headers whose value is case-insensitive, and those that are unordered comma lists.
_CASELESS: Final = frozenset(
    {
        "content-type",
        "cache-control",
        "vary",
        "content-language",
        "content-encoding",
        "allow",
        "access-control-allow-methods",
        "access-control-allow-headers",
        "access-control-expose-headers",
        "x-content-type-options",
        "accept-ranges",
    }
)
_LISTS: Final = frozenset(
    {
        "cache-control",
        "vary",
        "content-language",
        "allow",
        "access-control-allow-methods",
        "access-control-allow-headers",
        "access-control-expose-headers",
    }
)
_AROUND_SEPARATORS = re.compile(r"\s*([,;=])\s*")


# Distinct header spellings remembered per rule set; past this, names are looked up each time.
_NAME_CACHE_MAX = 512


@dataclass(frozen=True, slots=True)
class _Compiled:
    """The rules of one route, prepared once (cached by compiled_rules)."""

    body: BodyRules
    headers: frozenset[str] | None  # None: every header that is not ignored ("*")
    ignored_headers: frozenset[str]
    max_diff_bytes: int
    # Header name as received -> its lower-case name when compared, "" when not: every pair
    # carries the same few names, so deciding once per spelling saves a lower() and a set
    # lookup per header per pair.
    names: dict[str, str]

    def compared_name(self, raw: str) -> str:
        name = self.names.get(raw)
        if name is None:
            lname = raw.lower()
            wanted = lname not in self.ignored_headers if self.headers is None else lname in self.headers
            name = lname if wanted else ""
            if len(self.names) < _NAME_CACHE_MAX:
                self.names[raw] = name
        return name


@functools.lru_cache(maxsize=128)
def _compile(rules: CompareRules) -> _Compiled:
    body = BodyRules(rules)
    for e in body.errors:
        log.warning("compare rule skipped: %s", e)
    ignored = frozenset(h.lower() for h in rules.ignore_headers)
    wanted = {h.lower() for h in rules.headers}
    return _Compiled(
        body=body,
        headers=None if "*" in wanted else frozenset(wanted - ignored),
        ignored_headers=ignored | HOP_BY_HOP,
        max_diff_bytes=max(rules.max_diff_bytes, 0),
        names={},
    )


# The rules object a caller passes is almost always the same one: look it up by identity
# before hashing it (a frozen dataclass hashes every field on each call).
_last: tuple[CompareRules, _Compiled] | None = None


def _compiled(rules: CompareRules) -> _Compiled:
    global _last
    last = _last
    if last is not None and last[0] is rules:
        return last[1]
    c = _compile(rules)
    _last = (rules, c)
    return c


@functools.lru_cache(maxsize=32)
def _matched(mode: BodyMode, hashed_only: bool) -> Comparison:
    """A match carries no per-pair data: one frozen instance per (mode, hashed_only)."""
    return Comparison(match=True, body_mode=mode, hashed_only=hashed_only)


def rule_errors(rules: CompareRules) -> list[str]:
    """Problems with the JSON paths, regexes and tolerances (for check-config); such rules
    are skipped, with a warning, by compare()."""
    return list(BodyRules(rules).errors)


def compare(primary: UpstreamResult, shadow: UpstreamResult, rules: CompareRules) -> Comparison:
    """Match or mismatch, with the parts and (at most MAX_FIELD_DIFFS) field differences.

    Both results must have answered (`ok`); the caller accounts for failures.
    """
    c = _compiled(rules)
    parts: list[Part] = []
    diffs: list[FieldDiff] = []
    if primary.status != shadow.status:
        parts.append("status")
        diffs.append(FieldDiff("status", "changed", primary.status, shadow.status))
    header_diffs = _header_diffs(primary.headers, shadow.headers, c)
    if header_diffs:
        parts.append("headers")
        diffs += header_diffs[: MAX_FIELD_DIFFS // 2]
    body = _body(primary, shadow, c, MAX_FIELD_DIFFS - len(diffs))
    if body.diffs:
        parts.append("body")
        diffs += body.diffs
    elif not parts:
        # The common case, equal answers: no new Comparison to build.
        return _matched(body.mode, body.hashed_only)
    return Comparison(
        match=not parts,
        parts=tuple(parts),
        fields=tuple(diffs),
        body_mode=body.mode,
        hashed_only=body.hashed_only,
    )


# --------------------------------------------------------------------------- headers


def normalize_header(name: str, value: str) -> str:
    """Spelling differences that mean the same thing vanish: `text/html; charset=UTF-8` and
    `text/html;charset=utf-8`, `public, max-age=60` and `max-age=60,public`."""
    v = _AROUND_SEPARATORS.sub(r"\1", " ".join(value.split()))
    if name in _CASELESS:
        v = v.lower()
    if name == "content-type":
        media, *params = v.split(";")
        v = ";".join([media, *sorted(p.replace('"', "") for p in params if p)])
    elif name in _LISTS:
        v = ",".join(sorted({t for t in v.split(",") if t}))
    return v


def _header_values(headers: Headers, c: _Compiled) -> dict[str, str]:
    out: dict[str, str] = {}
    names = c.names
    for k, v in headers:
        name = names.get(k)
        if name is None:
            name = c.compared_name(k)
        if not name:
            continue
        # Repeated fields mean the same as one comma-joined field (RFC 9110 5.3).
        out[name] = f"{out[name]}, {v}" if name in out else v
    return out


def _header_diffs(primary: Headers, shadow: Headers, c: _Compiled) -> list[FieldDiff]:
    if primary == shadow:
        return []
    p, s = _header_values(primary, c), _header_values(shadow, c)
    if p == s:
        return []
    diffs = []
    for name in sorted(p.keys() | s.keys()):
        pv, sv = p.get(name), s.get(name)
        if pv == sv:
            continue
        if sv is None:
            diffs.append(FieldDiff(f"header:{name}", "missing", jsondiff.summary(pv), None))
        elif pv is None:
            diffs.append(FieldDiff(f"header:{name}", "extra", None, jsondiff.summary(sv)))
        elif normalize_header(name, pv) != normalize_header(name, sv):
            diffs.append(FieldDiff(f"header:{name}", "changed", jsondiff.summary(pv), jsondiff.summary(sv)))
    return diffs


# --------------------------------------------------------------------------- bodies


class _Body(Value):
    __match_args__ = ("mode", "diffs", "hashed_only")

    def __init__(self, mode: BodyMode, diffs: list[FieldDiff], hashed_only: bool = False) -> None:
        self.mode: Final = mode
        self.diffs: Final = diffs
        self.hashed_only: Final = hashed_only


class _Side(Value):
    """One body, decoded and classified."""

    __match_args__ = ("result", "decoded", "media", "charset", "kind")

    def __init__(
        self,
        result: UpstreamResult,
        decoded: decode.Decoded,
        media: str,
        charset: str | None,
        kind: decode.MediaKind,
    ) -> None:
        self.result: Final = result
        self.decoded: Final = decoded
        self.media: Final = media
        self.charset: Final = charset
        self.kind: Final = kind

    @staticmethod
    def of(r: UpstreamResult, limit: int, heads: tuple[str | None, str | None] | None = None) -> _Side:
        coding, ctype = heads or _coding_and_type(r.headers)
        d = decode.decode(r.body, coding, limit)
        media, charset = decode.content_type(ctype)
        kind = "binary" if d.error else decode.media_kind(media, d.data)
        return _Side(r, d, media, charset, kind)

    def text(self) -> str:
        return decode.text_of(self.decoded.data, self.charset)


_IDENTICAL: Final = _Body("identical", [])  # shared: nobody appends to a _Body's diffs
_EMPTY: Final = _Body("empty", [])


def _coding_and_type(headers: Headers) -> tuple[str | None, str | None]:
    """Content-Encoding and Content-Type in one pass (this runs per compared pair)."""
    coding = ctype = None
    for k, v in headers:
        n = len(k)
        if n == 16 and coding is None and k.lower() == "content-encoding":
            coding = v
        elif n == 12 and ctype is None and k.lower() == "content-type":
            ctype = v
    return coding, ctype


def _body(p: UpstreamResult, s: UpstreamResult, c: _Compiled, cap: int) -> _Body:
    hp, hs = _coding_and_type(p.headers), _coding_and_type(s.headers)
    same_coding = hp[0] == hs[0] or decode.codings(hp[0]) == decode.codings(hs[0])
    if p.truncated or s.truncated:
        # Only part of a body was captured: nothing to decode or parse, compare what we have.
        equal = same_coding and p.body == s.body and p.body_size == s.body_size
        return _Body("hash_only", [] if equal else [_changed_body(p.body, s.body)], hashed_only=True)
    if same_coding and p.body == s.body:
        return _IDENTICAL if p.body else _EMPTY
    sp, ss = _Side.of(p, c.max_diff_bytes, hp), _Side.of(s, c.max_diff_bytes, hs)
    if sp.decoded.over or ss.decoded.over:
        return _hashed(p, s, c.max_diff_bytes * HASH_CAP_FACTOR)
    dp, ds = sp.decoded.data, ss.decoded.data
    if dp == ds:
        return _Body("identical" if dp else "empty", [])
    if not dp or not ds:
        kind: DiffKind = "missing" if not ds else "extra"
        return _Body("empty", [FieldDiff("body", kind, _preview(sp), _preview(ss))])
    if "json" in (sp.kind, ss.kind):
        vp, vs = _parse_json(sp), _parse_json(ss)
        if vp is not _INVALID and vs is not _INVALID:
            return _json_body(vp, vs, c, cap)
        if (vp is _INVALID) != (vs is _INVALID):
            return _Body("text", [FieldDiff("body", "type_changed", _preview(sp), _preview(ss))])
        return _text_body(sp, ss, c, cap)
    if sp.kind == ss.kind == "text":
        return _text_body(sp, ss, c, cap)
    how: DiffKind = "changed" if sp.kind == ss.kind else "type_changed"
    return _Body("binary", [FieldDiff("body", how, _preview(sp), _preview(ss))])


def _json_body(vp: Any, vs: Any, c: _Compiled, cap: int) -> _Body:
    # No `vp == vs` first: the bytes differed, so the values mostly do too, and the walk
    # compares each key with `==` anyway (the extra pass was 8,700 instructions per
    # mismatching 1 KB pair, callgrind). Equal values come back with no differences, and
    # the walk keeps `true` apart from `1` without serialising both documents to check.
    return _Body("json", jsondiff.diff(vp, vs, c.body, cap))


def _text_body(sp: _Side, ss: _Side, c: _Compiled, cap: int) -> _Body:
    tp, ts = sp.text(), ss.text()
    if tp == ts:
        return _Body("text", [])
    lp, ls = tp.splitlines(), ts.splitlines()
    norms = c.body.text_normalizers
    diffs: list[FieldDiff] = []
    limit = min(cap, MAX_LINE_DIFFS)
    for i in range(max(len(lp), len(ls))):
        a = lp[i] if i < len(lp) else None
        b = ls[i] if i < len(ls) else None
        for n in norms:
            a, b = (None if a is None else n(a)), (None if b is None else n(b))
        if a == b:
            continue
        kind: DiffKind = "missing" if b is None else "extra" if a is None else "changed"
        diffs.append(FieldDiff(f"line:{i + 1}", kind, jsondiff.summary(a), jsondiff.summary(b)))
        if len(diffs) >= limit:
            break
    return _Body("text", diffs)


def _hashed(p: UpstreamResult, s: UpstreamResult, cap: int) -> _Body:
    hp = decode.digest(p.body, p.header("content-encoding"), cap)
    hs = decode.digest(s.body, s.header("content-encoding"), cap)
    if hp[2] and hs[2] and hp[0] == hs[0]:
        return _Body("hash_only", [], hashed_only=True)
    diff = FieldDiff("body", "changed", _digest_text(hp), _digest_text(hs))
    return _Body("hash_only", [diff], hashed_only=True)


def _digest_text(d: tuple[str, int, bool]) -> str:
    return f"<{d[1]}{'' if d[2] else '+'} bytes, sha256 {d[0][:16]}>"


def _changed_body(a: bytes, b: bytes) -> FieldDiff:
    return FieldDiff("body", "changed", _hash_text(a), _hash_text(b))


def _hash_text(data: bytes) -> str:
    return f"<{len(data)} bytes, sha256 {hashlib.sha256(data).hexdigest()[:16]}>"


def _preview(side: _Side) -> str:
    if not side.decoded.data:
        return ""
    if side.kind == "binary":
        return _hash_text(side.decoded.data)
    return str(jsondiff.summary(side.text()))


_INVALID: Any = object()


def _parse_json(side: _Side) -> Any:
    data = side.decoded.data
    codec = decode.charset_codec(side.charset)
    try:
        return orjson.loads(data if codec == "utf-8" else data.decode(codec, errors="replace"))
    except orjson.JSONDecodeError:
        pass
    # orjson refuses integers past 64 bits and a BOM; the json module takes both.
    try:
        return json.loads(side.text(), parse_constant=_reject)
    except (ValueError, RecursionError):
        return _INVALID


def _reject(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


# --------------------------------------------------------------------------- for people


def explain(
    primary: UpstreamResult, shadow: UpstreamResult, rules: CompareRules, max_chars: int = 4000
) -> str:
    """DeepDiff's human-readable explanation of the body difference (after decoding, rules
    applied). Slow; call off the event loop. Never raises: returns a short message on trouble."""
    try:
        text = _explain(primary, shadow, _compile(rules))
    except Exception as e:  # a best-effort text for a stored sample must not lose the sample
        text = f"no explanation ({type(e).__name__})"  # its message may quote a body
    return text if len(text) <= max_chars else text[: max(max_chars - 1, 0)] + "…"


def _explain(primary: UpstreamResult, shadow: UpstreamResult, c: _Compiled) -> str:
    if primary.truncated or shadow.truncated:
        return "a body was captured only in part: compared by hash only"
    sp, ss = _Side.of(primary, c.max_diff_bytes), _Side.of(shadow, c.max_diff_bytes)
    if sp.decoded.over or ss.decoded.over:
        return f"a body is over the diff limit of {c.max_diff_bytes} bytes: compared by hash only"
    errors = [f"{side.result.backend}: {side.decoded.error}" for side in (sp, ss) if side.decoded.error]
    if errors:
        return "; ".join(errors)
    if "json" in (sp.kind, ss.kind):
        vp, vs = _parse_json(sp), _parse_json(ss)
        if vp is not _INVALID and vs is not _INVALID:
            return _explain_json(vp, vs, c.body)
        if (vp is _INVALID) != (vs is _INVALID):
            bad = sp if vp is _INVALID else ss
            return f"the {bad.result.backend} body is not valid JSON ({bad.media or 'no content-type'})"
    if sp.kind == "binary" or ss.kind == "binary":
        return f"binary bodies: primary {_preview(sp) or 'empty'}, shadow {_preview(ss) or 'empty'}"
    lines = difflib.unified_diff(
        sp.text().splitlines(), ss.text().splitlines(), "primary", "shadow", n=1, lineterm=""
    )
    return "\n".join(lines) or "the bodies are equal"


def _explain_json(vp: Any, vs: Any, rules: BodyRules) -> str:
    start = rules.matcher.start
    cp, cs = rules.canonical(vp, start), rules.canonical(vs, start)
    dd = DeepDiff(
        cp,
        cs,
        custom_operators=[_Tolerance(rules)] if rules.has_tolerance else None,
        ignore_numeric_type_changes=True,
        threshold_to_diff_deeper=0,
        max_diffs=200,
    )
    return str(dd.pretty()) or "the bodies are equal once the rules are applied"


class _Tolerance:
    """A DeepDiff operator: numbers within a tolerance rule of their path are equal."""

    def __init__(self, rules: BodyRules) -> None:
        self.rules = rules

    def match(self, level: Any) -> bool:
        return jsondiff.kind_of(level.t1) == jsondiff.kind_of(level.t2) == "number"

    def give_up_diffing(self, level: Any, diff_instance: Any) -> bool:
        states = self.rules.matcher.start
        for seg in level.path(output_format="list"):
            states = self.rules.step(states, seg)
        return jsondiff.close(level.t1, level.t2, self.rules.effects(states).tolerances)


def decoded_text(result: UpstreamResult, limit: int) -> str:
    """The body decoded (content-encoding, charset) as readable text for a stored sample;
    binary -> a `<N bytes binary, sha256 ...>` line. Never raises."""
    size = max(result.body_size, len(result.body))
    side = _Side.of(result, max(limit, 0))
    if side.decoded.error:
        return f"<{size} bytes, {side.decoded.error}, sha256 {hashlib.sha256(result.body).hexdigest()[:16]}>"
    if side.kind == "binary":
        return f"<{size} bytes binary, sha256 {hashlib.sha256(result.body).hexdigest()[:16]}>"
    text = side.text()
    if side.decoded.over or result.truncated:
        text += f"\n…[truncated at {limit} decoded bytes; {size} bytes received]"
    return text
