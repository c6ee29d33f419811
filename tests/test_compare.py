from __future__ import annotations

import gzip
import hashlib
import zlib
from typing import Any

import brotli
import orjson
import pytest

from shadowproxy import compare as cmp
from shadowproxy.config import CompareRules, Normalize, Tolerance, Unordered
from shadowproxy.exchange import HOP_BY_HOP, Comparison, DiffKind, FieldDiff, UpstreamResult

R = CompareRules()
JSON = "application/json"
DOC = {"data": [{"id": i, "title": f"pitch {i}", "score": i * 1.5, "live": i % 2 == 0} for i in range(5)]}
DOC_BYTES = orjson.dumps(DOC)


def res(
    body: bytes | str = b"",
    ct: str | None = JSON,
    enc: str | None = None,
    status: int = 200,
    headers: tuple[tuple[str, str], ...] = (),
    backend: str = "primary",
    truncated: bool = False,
) -> UpstreamResult:
    data = body.encode() if isinstance(body, str) else body
    h: tuple[tuple[str, str], ...] = (("Content-Type", ct),) if ct else ()
    h += (("Content-Encoding", enc),) if enc else ()
    return UpstreamResult(
        backend,  # type: ignore[arg-type]
        status,
        h + headers,
        data,
        0.01,
        body_size=len(data) * (3 if truncated else 1),
        truncated=truncated,
    )


def D(path: str, kind: DiffKind, p: Any = None, s: Any = None) -> FieldDiff:
    return FieldDiff(path, kind, p, s)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


MATCHES: list[tuple[str, UpstreamResult, UpstreamResult, CompareRules, str]] = [
    ("same bytes", res(DOC_BYTES), res(DOC_BYTES), R, "identical"),
    ("both empty", res(b"", ct=None, status=204), res(b"", ct=None, status=204), R, "empty"),
    ("gzip vs plain", res(gzip.compress(DOC_BYTES), enc="gzip"), res(DOC_BYTES), R, "identical"),
    (
        "deflate vs br",
        res(zlib.compress(DOC_BYTES), enc="deflate"),
        res(brotli.compress(DOC_BYTES), enc="br"),
        R,
        "identical",
    ),
    (
        "json spacing and key order",
        res(DOC_BYTES),
        res(orjson.dumps(DOC, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS)),
        R,
        "json",
    ),
    (
        "json in latin-1",
        res('{"name": "Grüße"}'.encode("latin-1"), ct="application/json; charset=ISO-8859-1"),
        res('{"name":"Grüße"}'),
        CompareRules(headers=()),
        "json",
    ),
    (
        "json past 64-bit ints",
        res(b'{"n": 123456789012345678901234567890}'),
        res(b'{"n":123456789012345678901234567890}'),
        R,
        "json",
    ),
    ("json with a BOM", res(b'\xef\xbb\xbf{"a": 1}'), res(b'{"a":1}'), R, "json"),
    (
        "text same after charset",
        res("Grüße\n".encode("latin-1"), ct="text/plain; charset=latin-1"),
        res("Grüße\n", ct="text/plain; charset=utf-8"),
        CompareRules(headers=()),
        "text",
    ),
    (
        "rules remove every difference",
        res(b'{"a": 1, "at": "x"}'),
        res(b'{"a": 1.0, "at": "y"}'),
        CompareRules(ignore=("$.at",)),
        "json",
    ),
    (
        "text normalised by an every-leaf rule",
        res("id 3f2b8c1e-9d4a-4e6b-8f7c-1a2b3c4d5e6f\n", ct="text/html"),
        res("id a0b1c2d3-e4f5-4a6b-9c8d-0e1f2a3b4c5d\n", ct="text/html"),
        CompareRules(normalize=(Normalize(builtin="uuid"),)),
        "text",
    ),
    ("invalid json, same text", res(b"{oops\nline2"), res(b"{oops\r\nline2"), R, "text"),
    (
        "headers spelled differently",
        res(
            b"",
            ct="text/html; charset=UTF-8",
            headers=(
                ("Cache-Control", "public, max-age=60"),
                ("Vary", "Origin"),
                ("vary", "Accept-Encoding"),
            ),
        ),
        res(
            b"",
            ct="text/html;charset=utf-8",
            headers=(("cache-control", "max-age=60,public"), ("VARY", " accept-encoding ,  origin")),
        ),
        R,
        "empty",
    ),
    (
        "quoted charset",
        res(b"", ct='text/html; charset="utf-8"'),
        res(b"", ct="TEXT/HTML; Charset=utf-8"),
        R,
        "empty",
    ),
    (
        "ignored headers differ",
        res(b"", headers=(("Date", "Mon"), ("Server", "deno"), ("cf-ray", "1"))),
        res(b"", headers=(("Date", "Tue"), ("Server", "cloudflare"))),
        R,
        "empty",
    ),
    (
        "headers not compared differ",
        res(b"", headers=(("X-Foo", "1"),)),
        res(b"", headers=(("X-Foo", "2"),)),
        R,
        "empty",
    ),
    (
        "a route's ignore_headers wins over headers",
        res(b"", headers=(("Vary", "a"),)),
        res(b"", headers=(("Vary", "b"),)),
        CompareRules(ignore_headers=("VARY",)),
        "empty",
    ),
    (
        "identical over the limit: not hashed",
        res(DOC_BYTES),
        res(DOC_BYTES),
        CompareRules(max_diff_bytes=10),
        "identical",
    ),
]


@pytest.mark.parametrize(("name", "p", "s", "rules", "mode"), MATCHES, ids=[m[0] for m in MATCHES])
def test_match(name: str, p: UpstreamResult, s: UpstreamResult, rules: CompareRules, mode: str) -> None:
    assert cmp.compare(p, s, rules) == Comparison(match=True, body_mode=mode)  # type: ignore[arg-type]


HTML_A = "<html>\n<p>one</p>\n<p>two</p>\n</html>\n"
HTML_B = "<html>\n<p>one</p>\n<p>TWO</p>\n</html>\n<!-- extra -->\n"
PNG_A = b"\x89PNG\r\n\x1a\n" + bytes(100)
PNG_B = b"\x89PNG\r\n\x1a\n" + bytes(99) + b"\x01"
BROKEN = b"\x1f\x8b broken"

MISMATCHES: list[
    tuple[str, UpstreamResult, UpstreamResult, CompareRules, tuple[str, ...], str, list[FieldDiff]]
] = [
    (
        "5xx vs 200",
        res(b"{}", status=200),
        res(b"{}", status=503),
        R,
        ("status",),
        "identical",
        [D("status", "changed", 200, 503)],
    ),
    (
        "status and body",
        res(b'{"a":1}', status=200),
        res(b'{"error":"x"}', status=404),
        R,
        ("status", "body"),
        "json",
        [D("status", "changed", 200, 404), D("$.a", "missing", 1), D("$.error", "extra", None, "x")],
    ),
    (
        "header missing",
        res(b"", headers=(("Location", "/a"),)),
        res(b""),
        R,
        ("headers",),
        "empty",
        [D("header:location", "missing", "/a")],
    ),
    (
        "header extra",
        res(b""),
        res(b"", headers=(("Cache-Control", "no-store"),)),
        R,
        ("headers",),
        "empty",
        [D("header:cache-control", "extra", None, "no-store")],
    ),
    (
        "header changed",
        res(b"", ct="application/json"),
        res(b"", ct="text/plain"),
        R,
        ("headers",),
        "empty",
        [D("header:content-type", "changed", "application/json", "text/plain")],
    ),
    (
        "location is case-sensitive",
        res(b"", headers=(("Location", "/A"),)),
        res(b"", headers=(("Location", "/a"),)),
        R,
        ("headers",),
        "empty",
        [D("header:location", "changed", "/A", "/a")],
    ),
    (
        "every header with *",
        res(b"", headers=(("X-Foo", "1"), ("Date", "x"))),
        res(b"", headers=(("X-Foo", "2"), ("Date", "y"))),
        CompareRules(headers=("*",)),
        ("headers",),
        "empty",
        [D("header:x-foo", "changed", "1", "2")],
    ),
    (
        "field difference in gzip vs br",
        res(gzip.compress(b'{"a":[1,2]}'), enc="gzip"),
        res(brotli.compress(b'{"a":[1,3]}'), enc="br"),
        R,
        ("body",),
        "json",
        [D("$.a[1]", "changed", 2, 3)],
    ),
    (
        "json vs garbage",
        res(b'{"a": 1}'),
        res(b"<html>502 Bad Gateway</html>", ct="text/html"),
        R,
        ("headers", "body"),
        "text",
        [
            D("header:content-type", "changed", JSON, "text/html"),
            D("body", "type_changed", '{"a": 1}', "<html>502 Bad Gateway</html>"),
        ],
    ),
    (
        "garbage vs json",
        res(b"{not json"),
        res(b"{}"),
        R,
        ("body",),
        "text",
        [D("body", "type_changed", "{not json", "{}")],
    ),
    (
        "json, one side empty",
        res(b'{"a":1}'),
        res(b""),
        R,
        ("body",),
        "empty",
        [D("body", "missing", '{"a":1}', "")],
    ),
    (
        "empty vs json",
        res(b"", status=200),
        res(b"[]"),
        R,
        ("body",),
        "empty",
        [D("body", "extra", "", "[]")],
    ),
    (
        "text by lines",
        res(HTML_A, ct="text/html"),
        res(HTML_B, ct="text/html"),
        R,
        ("body",),
        "text",
        [D("line:3", "changed", "<p>two</p>", "<p>TWO</p>"), D("line:5", "extra", None, "<!-- extra -->")],
    ),
    (
        "text missing lines",
        res("a\nb\nc", ct="text/plain"),
        res("a", ct="text/plain"),
        R,
        ("body",),
        "text",
        [D("line:2", "missing", "b"), D("line:3", "missing", "c")],
    ),
    (
        "binary by length and hash",
        res(PNG_A, ct="image/png"),
        res(PNG_B, ct="image/png"),
        R,
        ("body",),
        "binary",
        [D("body", "changed", f"<108 bytes, sha256 {sha(PNG_A)}>", f"<108 bytes, sha256 {sha(PNG_B)}>")],
    ),
    (
        "text vs binary",
        res("hello", ct="text/plain"),
        res(PNG_A, ct="text/plain", enc="br"),
        R,
        ("body",),
        "binary",
        [D("body", "type_changed", "hello", f"<108 bytes, sha256 {sha(PNG_A)}>")],
    ),
    (
        "corrupt gzip vs json",
        res(b'{"a":1}'),
        res(BROKEN, enc="gzip"),
        R,
        ("body",),
        "text",
        [D("body", "type_changed", '{"a":1}', f"<9 bytes, sha256 {sha(BROKEN)}>")],
    ),
    (
        "order",
        res(b'{"t":[1,2]}'),
        res(b'{"t":[2,1]}'),
        R,
        ("body",),
        "json",
        [D("$.t", "order", "[array, 2 items]", "[array, 2 items]")],
    ),
    (
        "true is not 1",
        res(b'{"a":true}'),
        res(b'{"a":1}'),
        R,
        ("body",),
        "json",
        [D("$.a", "type_changed", True, 1)],
    ),
    (
        "nested true is not 1",
        res(b'{"a":[{"b":false}]}'),
        res(b'{"a":[{"b":0}]}'),
        R,
        ("body",),
        "json",
        [D("$.a[0].b", "type_changed", False, 0)],
    ),
    (
        "truncated capture",
        res(DOC_BYTES, truncated=True),
        res(DOC_BYTES[:-1] + b"]", truncated=True),
        R,
        ("body",),
        "hash_only",
        [
            D(
                "body",
                "changed",
                f"<{len(DOC_BYTES)} bytes, sha256 {sha(DOC_BYTES)}>",
                f"<{len(DOC_BYTES)} bytes, sha256 {sha(DOC_BYTES[:-1] + b']')}>",
            )
        ],
    ),
]


@pytest.mark.parametrize(
    ("name", "p", "s", "rules", "parts", "mode", "fields"), MISMATCHES, ids=[m[0] for m in MISMATCHES]
)
def test_mismatch(
    name: str,
    p: UpstreamResult,
    s: UpstreamResult,
    rules: CompareRules,
    parts: tuple[str, ...],
    mode: str,
    fields: list[FieldDiff],
) -> None:
    c = cmp.compare(p, s, rules)
    assert (c.match, c.parts, c.body_mode, list(c.fields)) == (False, parts, mode, fields)
    assert not c.hashed_only or mode == "hash_only"


def test_rules_reach_the_body() -> None:
    rules = CompareRules(
        ignore=("$.data[*].updated_at", "$.meta"),
        unordered=(Unordered("$.data", key="id"),),
        tolerance=(Tolerance("$..score", rel=0.01),),
        normalize=(Normalize(builtin="uuid"),),
    )
    p = {
        "meta": {"took": 3},
        "data": [
            {"id": 1, "score": 100, "ref": "3f2b8c1e-9d4a-4e6b-8f7c-1a2b3c4d5e6f", "updated_at": 1},
            {"id": 2, "t": "a"},
        ],
    }
    s = {
        "meta": {"took": 9},
        "data": [
            {"id": 2, "t": "b"},
            {"id": 1, "score": 100.5, "ref": "a0b1c2d3-e4f5-4a6b-9c8d-0e1f2a3b4c5d", "updated_at": 2},
        ],
    }
    c = cmp.compare(res(orjson.dumps(p)), res(orjson.dumps(s)), rules)
    assert c.fields == (D("$.data[1].t", "changed", "a", "b"),)
    assert c.paths == ("$.data[*].t",)


def big_doc(n: int, seed: str = "") -> bytes:
    return orjson.dumps([{"i": i, "text": f"{seed}row {i} " + "x" * 60} for i in range(n)])


@pytest.mark.parametrize(
    ("name", "p", "s", "equal"),
    [
        (
            "equal, both plain",
            big_doc(2000),
            orjson.dumps(orjson.loads(big_doc(2000)), option=orjson.OPT_INDENT_2),
            False,
        ),
        ("equal, gzip vs br", res(gzip.compress(big_doc(2000)), enc="gzip").body, None, True),
        ("different", big_doc(2000), big_doc(2000, "!"), False),
    ],
)
def test_huge_body_compares_by_hash_only(name: str, p: bytes, s: bytes | None, equal: bool) -> None:
    rules = CompareRules(max_diff_bytes=64 * 1024)
    if s is None:
        pr, sr = res(p, enc="gzip"), res(brotli.compress(big_doc(2000), quality=5), enc="br")
    else:
        pr, sr = res(p), res(s)
    c = cmp.compare(pr, sr, rules)
    assert c.hashed_only and c.body_mode == "hash_only"
    assert c.match is equal
    if not equal:
        assert [(f.path, f.kind) for f in c.fields] == [("body", "changed")]


def test_a_gzip_bomb_counts_as_different_without_inflating() -> None:
    z = zlib.compressobj(9, zlib.DEFLATED, 31)
    bomb = b"".join(z.compress(bytes(1 << 20)) for _ in range(64)) + z.flush()
    c = cmp.compare(
        res(bomb, enc="gzip"), res(gzip.compress(b"{}"), enc="gzip"), CompareRules(max_diff_bytes=1 << 20)
    )
    assert (c.match, c.hashed_only, c.fields[0].path) == (False, True, "body")
    assert str(c.fields[0].primary).startswith(f"<{(8 << 20) + (64 << 10)}+ bytes")


def test_field_diffs_are_capped() -> None:
    p = {f"k{i}": i for i in range(500)}
    s = {f"k{i}": -1 for i in range(500)}
    hp = tuple((f"X-H{i}", "a") for i in range(80))
    c = cmp.compare(
        res(orjson.dumps(p), headers=hp), res(orjson.dumps(s), status=201), CompareRules(headers=("*",))
    )
    assert len(c.fields) == cmp.MAX_FIELD_DIFFS
    assert c.parts == ("status", "headers", "body")
    assert sum(f.path.startswith("$") for f in c.fields) == cmp.MAX_FIELD_DIFFS - 1 - cmp.MAX_FIELD_DIFFS // 2


def test_text_line_diffs_are_capped() -> None:
    c = cmp.compare(res("a\n" * 50, ct="text/plain"), res("b\n" * 50, ct="text/plain"), R)
    assert [f.path for f in c.fields] == [f"line:{i}" for i in range(1, cmp.MAX_LINE_DIFFS + 1)]


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("not json", b"\x00\xff garbage {"),
        ("deep json", b"[" * 5000 + b"]" * 5000),
        ("nan", b'{"a": NaN}'),
        ("huge int", b'{"a": 1' + b"0" * 5000 + b"}"),
        ("unknown coding", b"abc"),
    ],
)
def test_garbage_never_raises(name: str, value: bytes) -> None:
    enc = "zstd" if name == "unknown coding" else None
    c = cmp.compare(res(b'{"a": 1}'), res(value, enc=enc), R)
    assert not c.match and c.parts == ("body",)
    assert cmp.explain(res(b'{"a": 1}'), res(value, enc=enc), R)
    assert cmp.decoded_text(res(value, enc=enc), 100)


def test_compiled_rules_are_cached() -> None:
    rules = CompareRules(ignore=("$.x",))
    assert cmp._compile(rules) is cmp._compile(CompareRules(ignore=("$.x",)))


def test_rule_errors() -> None:
    assert cmp.rule_errors(R) == []
    assert (
        len(cmp.rule_errors(CompareRules(ignore=("$..", "$.ok"), normalize=(Normalize(regex="[a-"),)))) == 2
    )


@pytest.mark.parametrize(
    ("name", "p", "s", "rules", "expected"),
    [
        (
            "json field",
            res(b'{"a": {"b": 1}, "c": 2}'),
            res(b'{"a": {"b": 3}, "c": 2}'),
            R,
            "Value of root['a']['b'] changed from 1 to 3.",
        ),
        (
            "rules applied",
            res(b'{"a": 1, "t": "x", "p": 1.0}'),
            res(b'{"a": 2, "t": "y", "p": 1.05}'),
            CompareRules(ignore=("$.t",), tolerance=(Tolerance("$.p", abs=0.1),)),
            "Value of root['a'] changed from 1 to 2.",
        ),
        (
            "unordered sorted first",
            res(b'{"l": [3, 1, 2]}'),
            res(b'{"l": [2, 3, 1]}'),
            CompareRules(unordered=(Unordered("$.l"),)),
            "the bodies are equal once the rules are applied",
        ),
        (
            "text",
            res("a\nb\n", ct="text/plain"),
            res("a\nc\n", ct="text/plain"),
            R,
            "--- primary\n+++ shadow\n@@ -1,2 +1,2 @@\n a\n-b\n+c",
        ),
        (
            "invalid json",
            res(b"{}"),
            res(b"{", backend="shadow"),
            R,
            "the shadow body is not valid JSON (application/json)",
        ),
        (
            "binary",
            res(b"\x01", ct="image/png"),
            res(b"\x02", ct="image/png"),
            R,
            f"binary bodies: primary <1 bytes, sha256 {sha(bytes([1]))}>, "
            f"shadow <1 bytes, sha256 {sha(bytes([2]))}>",
        ),
        (
            "over the limit",
            res(b"[1]"),
            res(b"[2]"),
            CompareRules(max_diff_bytes=2),
            "a body is over the diff limit of 2 bytes: compared by hash only",
        ),
        (
            "undecodable",
            res(b"xxxxxxxxxx", enc="gzip"),
            res(b"{}"),
            R,
            "primary: cannot decode gzip body: Error -3 while decompressing data: incorrect header check",
        ),
    ],
)
def test_explain(name: str, p: UpstreamResult, s: UpstreamResult, rules: CompareRules, expected: str) -> None:
    assert cmp.explain(p, s, rules) == expected


def test_explain_is_bounded() -> None:
    p = orjson.dumps({f"k{i}": "x" * 50 for i in range(300)})
    s = orjson.dumps({f"k{i}": "y" * 50 for i in range(300)})
    text = cmp.explain(res(p), res(s), R, max_chars=500)
    assert len(text) == 500 and text.endswith("…")


@pytest.mark.parametrize(
    ("name", "r", "limit", "expected"),
    [
        ("gzip json", res(gzip.compress(b'{"a": 1}'), enc="gzip"), 100, '{"a": 1}'),
        ("latin-1 text", res("Grüße".encode("latin-1"), ct="text/plain; charset=iso-8859-1"), 100, "Grüße"),
        (
            "cut at the limit",
            res("abcdef", ct="text/plain"),
            3,
            "abc\n…[truncated at 3 decoded bytes; 6 bytes received]",
        ),
        ("binary", res(PNG_A, ct="image/png"), 100, f"<108 bytes binary, sha256 {sha(PNG_A)}>"),
        (
            "undecodable",
            res(b"nope", enc="br"),
            100,
            f"<4 bytes, cannot decode br body: brotli: decoder failed, sha256 {sha(b'nope')}>",
        ),
        ("empty", res(b""), 100, ""),
    ],
)
def test_decoded_text(name: str, r: UpstreamResult, limit: int, expected: str) -> None:
    assert cmp.decoded_text(r, limit) == expected


@pytest.mark.parametrize(
    ("name", "a", "b"),
    [
        ("charset spacing and case", "text/html; charset=UTF-8", "text/html;charset=utf-8"),
        ("quoted param", 'application/json; charset="utf-8"', "application/json;charset=utf-8"),
        ("param order", "text/plain; format=flowed; charset=utf-8", "text/plain;charset=utf-8;format=flowed"),
    ],
)
def test_normalize_content_type(name: str, a: str, b: str) -> None:
    assert cmp.normalize_header("content-type", a) == cmp.normalize_header("content-type", b)


@pytest.mark.parametrize(
    ("name", "header", "a", "b", "same"),
    [
        ("cache-control order", "cache-control", "public, max-age=60", "max-age=60,public", True),
        ("cache-control value", "cache-control", "max-age=60", "max-age=61", False),
        ("vary case", "vary", "Accept-Encoding", "accept-encoding", True),
        (
            "whitespace runs",
            "www-authenticate",
            'Bearer  realm="api" ,  error="x"',
            'Bearer realm="api",error="x"',
            True,
        ),
        ("www-authenticate case kept", "www-authenticate", 'Bearer realm="API"', 'Bearer realm="api"', False),
        ("location kept", "location", "/Next", "/next", False),
    ],
)
def test_normalize_header(name: str, header: str, a: str, b: str, same: bool) -> None:
    assert (cmp.normalize_header(header, a) == cmp.normalize_header(header, b)) is same


def test_header_decisions_hold_across_rule_sets_and_spellings() -> None:
    # compare() remembers per rule set which header spellings it compares: alternating
    # rule sets and spellings must each still get their own answer.
    strict = CompareRules(headers=("x-build",))
    p = res(DOC_BYTES, headers=(("X-Build", "1"),))
    s = res(DOC_BYTES, headers=(("x-build", "2"),))
    for _ in range(2):
        assert cmp.compare(p, s, strict).fields == (D("header:x-build", "changed", "1", "2"),)
        assert cmp.compare(p, s, R).match
        assert cmp.compare(p, s, CompareRules(headers=("*",), ignore_headers=("X-BUILD",))).match


def test_equal_answers_match_like_a_fresh_comparison() -> None:
    p = res(DOC_BYTES, headers=(("Date", "a"),))
    assert cmp.compare(p, res(DOC_BYTES, headers=(("Date", "b"),)), R) == Comparison.equal("identical")
    assert cmp.compare(p, p, R) == Comparison.equal("identical")
    big = cmp.compare(res(DOC_BYTES, truncated=True), res(DOC_BYTES, truncated=True), R)
    assert big == Comparison(match=True, body_mode="hash_only", hashed_only=True)


def test_hop_by_hop_headers_are_never_compared_even_when_every_header_is() -> None:
    # They describe each backend's connection to us, not the answer.
    every = CompareRules(headers=("*",))
    for name in HOP_BY_HOP:
        p = res(DOC_BYTES, headers=((name.title(), "a"),))
        assert cmp.compare(p, res(DOC_BYTES, headers=((name, "b"),)), every).match, name
    assert not cmp.compare(
        res(DOC_BYTES, headers=(("X-Build", "1"),)), res(DOC_BYTES, headers=(("X-Build", "2"),)), every
    ).match
