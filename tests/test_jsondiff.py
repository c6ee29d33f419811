from __future__ import annotations

from typing import Any

import pytest

from shadowproxy import jsondiff
from shadowproxy.config import CompareRules, Normalize, Tolerance, Unordered
from shadowproxy.exchange import DiffKind, FieldDiff
from shadowproxy.jsondiff import BodyRules

R = CompareRules()
U1 = "3f2b8c1e-9d4a-4e6b-8f7c-1a2b3c4d5e6f"
U2 = "a0b1c2d3-e4f5-4a6b-9c8d-0e1f2a3b4c5d"


def D(path: str, kind: DiffKind, p: Any = None, s: Any = None) -> FieldDiff:
    return FieldDiff(path, kind, p, s)


CASES: list[tuple[str, Any, Any, CompareRules, list[FieldDiff]]] = [
    ("equal", {"a": [1, {"b": "x"}]}, {"a": [1, {"b": "x"}]}, R, []),
    ("key order is not a difference", {"a": 1, "b": 2}, {"b": 2, "a": 1}, R, []),
    ("changed leaf", {"a": {"b": 1}}, {"a": {"b": 2}}, R, [D("$.a.b", "changed", 1, 2)]),
    ("missing key", {"a": 1, "b": 2}, {"a": 1}, R, [D("$.b", "missing", 2)]),
    ("extra key", {"a": 1}, {"a": 1, "c": [1]}, R, [D("$.c", "extra", None, "[array, 1 items]")]),
    ("null vs missing", {"a": None}, {}, R, [D("$.a", "missing", None)]),
    ("null vs value", {"a": None}, {"a": 0}, R, [D("$.a", "type_changed", None, 0)]),
    ("int to string", {"id": 42}, {"id": "42"}, R, [D("$.id", "type_changed", 42, "42")]),
    (
        "bool is not a number",
        [True, 0],
        [1, False],
        R,
        [D("$[0]", "type_changed", True, 1), D("$[1]", "type_changed", 0, False)],
    ),
    ("int and float are one number", {"n": 1}, {"n": 1.0}, R, []),
    (
        "int and float inside equal containers beside another difference",
        {"x": [1, {"a": 2, "b": [True]}], "y": 1},
        {"x": [1.0, {"b": [True], "a": 2.0}], "y": 2},
        R,
        [D("$.y", "changed", 1, 2)],
    ),
    (
        "false is not 0 deep in a list of objects beside another difference",
        {"x": [{"a": [0, {"b": False}]}], "y": 1},
        {"x": [{"a": [0, {"b": 0}]}], "y": 2},
        R,
        [D("$.x[0].a[1].b", "type_changed", False, 0), D("$.y", "changed", 1, 2)],
    ),
    # The walk skips equal members by `==`; these are equal to Python but not as JSON, or
    # equal with keys in another order, next to a real difference so the walk runs.
    (
        "nested true is not 1 beside another difference",
        {"x": {"a": True}, "y": 1},
        {"x": {"a": 1}, "y": 2},
        R,
        [D("$.x.a", "type_changed", True, 1), D("$.y", "changed", 1, 2)],
    ),
    (
        "nested key order beside another difference",
        {"x": {"a": 1, "b": [2]}, "y": 1},
        {"x": {"b": [2], "a": 1}, "y": 2},
        R,
        [D("$.y", "changed", 1, 2)],
    ),
    ("ints past 64 bits", {"x": [2**70], "y": 1}, {"x": [2**70], "y": 2}, R, [D("$.y", "changed", 1, 2)]),
    (
        "same number of keys, one renamed",
        {"a": 1, "b": 2},
        {"a": 1, "c": 2},
        R,
        [D("$.b", "missing", 2), D("$.c", "extra", None, 2)],
    ),
    (
        "object to array",
        {"a": {}},
        {"a": []},
        R,
        [D("$.a", "type_changed", "{object, 0 keys}", "[array, 0 items]")],
    ),
    ("root type", {"a": 1}, [1], R, [D("$", "type_changed", "{object, 1 keys}", "[array, 1 items]")]),
    (
        "indices kept",
        {"data": [{"t": "a"}, {"t": "b"}]},
        {"data": [{"t": "a"}, {"t": "c"}]},
        R,
        [D("$.data[1].t", "changed", "b", "c")],
    ),
    ("shorter array", [1, 2, 3], [1], R, [D("$[1]", "missing", 2), D("$[2]", "missing", 3)]),
    ("longer array", [1], [1, {"x": 1}], R, [D("$[1]", "extra", None, "{object, 1 keys}")]),
    (
        "odd keys quoted",
        {"a b": {"it's": 1}},
        {"a b": {"it's": 2}},
        R,
        [D("$['a b']['it\\'s']", "changed", 1, 2)],
    ),
    # order: same elements elsewhere, on a path nobody declared unordered
    (
        "order",
        {"tags": ["a", "b", "c"]},
        {"tags": ["c", "a", "b"]},
        R,
        [D("$.tags", "order", "[array, 3 items]", "[array, 3 items]")],
    ),
    (
        "order of objects",
        [{"id": 1}, {"id": 2}],
        [{"id": 2}, {"id": 1}],
        R,
        [D("$", "order", "[array, 2 items]", "[array, 2 items]")],
    ),
    (
        "not just order",
        ["a", "b"],
        ["b", "c"],
        R,
        [D("$[0]", "changed", "a", "b"), D("$[1]", "changed", "b", "c")],
    ),
    # unordered, as a multiset
    (
        "multiset equal",
        {"t": ["a", "b", "a"]},
        {"t": ["a", "a", "b"]},
        CompareRules(unordered=(Unordered("$.t"),)),
        [],
    ),
    (
        "multiset counts",
        {"t": ["a", "b", "a"]},
        {"t": ["b", "b", "a"]},
        CompareRules(unordered=(Unordered("$.t"),)),
        [D("$.t[2]", "changed", "a", "b")],
    ),
    (
        "multiset missing",
        {"t": [1, 2, 3]},
        {"t": [3, 1]},
        CompareRules(unordered=(Unordered("$.t"),)),
        [D("$.t[1]", "missing", 2)],
    ),
    (
        "multiset extra",
        {"t": [1]},
        {"t": [2, 1, 3]},
        CompareRules(unordered=(Unordered("$.t"),)),
        [D("$.t[0]", "extra", None, 2), D("$.t[2]", "extra", None, 3)],
    ),
    (
        "multiset of objects",
        {"t": [{"a": 1, "b": 2}, {"a": 3}]},
        {"t": [{"a": 3}, {"b": 2, "a": 1}]},
        CompareRules(unordered=(Unordered("$.t"),)),
        [],
    ),
    (
        "multiset element changed",
        {"t": [{"a": 1}, {"a": 3}]},
        {"t": [{"a": 3}, {"a": 2}]},
        CompareRules(unordered=(Unordered("$.t"),)),
        [D("$.t[0].a", "changed", 1, 2)],
    ),
    (
        "nested unordered via wildcard",
        {"x": [{"t": [1, 2]}, {"t": [3, 4]}]},
        {"x": [{"t": [2, 1]}, {"t": [4, 3]}]},
        CompareRules(unordered=(Unordered("$.x[*].t"),)),
        [],
    ),
    # unordered, keyed by a field
    (
        "keyed equal",
        {"items": [{"id": 1, "v": "a"}, {"id": 2, "v": "b"}]},
        {"items": [{"id": 2, "v": "b"}, {"id": 1, "v": "a"}]},
        CompareRules(unordered=(Unordered("$.items", key="id"),)),
        [],
    ),
    (
        "keyed changed",
        {"items": [{"id": 1, "v": "a"}, {"id": 2, "v": "b"}]},
        {"items": [{"id": 2, "v": "B"}, {"id": 1, "v": "a"}]},
        CompareRules(unordered=(Unordered("$.items", key="id"),)),
        [D("$.items[1].v", "changed", "b", "B")],
    ),
    (
        "keyed missing and extra",
        {"items": [{"id": 1}, {"id": 2}]},
        {"items": [{"id": 3}, {"id": 1}]},
        CompareRules(unordered=(Unordered("$.items", key="id"),)),
        [D("$.items[1]", "missing", "{object, 1 keys}"), D("$.items[0]", "extra", None, "{object, 1 keys}")],
    ),
    (
        "keyed: id 1 is not id true",
        {"items": [{"id": 1}]},
        {"items": [{"id": True}]},
        CompareRules(unordered=(Unordered("$.items", key="id"),)),
        [D("$.items[0]", "missing", "{object, 1 keys}"), D("$.items[0]", "extra", None, "{object, 1 keys}")],
    ),
    (
        "keyed, elements without the key as a multiset",
        {"items": [{"id": 1}, "x", "y"]},
        {"items": ["y", {"id": 1}, "x"]},
        CompareRules(unordered=(Unordered("$.items", key="id"),)),
        [],
    ),
    # tolerance
    (
        "tolerance abs within",
        {"price": 10.0},
        {"price": 10.004},
        CompareRules(tolerance=(Tolerance("$.price", abs=0.01),)),
        [],
    ),
    (
        "tolerance abs over",
        {"price": 10.0},
        {"price": 10.02},
        CompareRules(tolerance=(Tolerance("$.price", abs=0.01),)),
        [D("$.price", "changed", 10.0, 10.02)],
    ),
    (
        "tolerance rel within",
        {"n": 1000},
        {"n": 1009},
        CompareRules(tolerance=(Tolerance("$..n", rel=0.01),)),
        [],
    ),
    (
        "tolerance rel over",
        {"n": 1000},
        {"n": 1011},
        CompareRules(tolerance=(Tolerance("$..n", rel=0.01),)),
        [D("$.n", "changed", 1000, 1011)],
    ),
    (
        "tolerance either passes",
        {"n": 0.0},
        {"n": 0.001},
        CompareRules(tolerance=(Tolerance("$.n", abs=0.01, rel=0.01),)),
        [],
    ),
    (
        "tolerance only on its path",
        {"a": 1.0, "b": 1.0},
        {"a": 1.001, "b": 1.001},
        CompareRules(tolerance=(Tolerance("$.a", abs=0.01),)),
        [D("$.b", "changed", 1.0, 1.001)],
    ),
    (
        "tolerance is not for strings",
        {"a": "1.0"},
        {"a": "1.001"},
        CompareRules(tolerance=(Tolerance("$.a", abs=0.01),)),
        [D("$.a", "changed", "1.0", "1.001")],
    ),
    (
        "tolerance in a multiset",
        {"p": [1.0, 5.0]},
        {"p": [5.001, 1.001]},
        CompareRules(unordered=(Unordered("$.p"),), tolerance=(Tolerance("$.p[*]", abs=0.01),)),
        [],
    ),
    # normalize
    (
        "uuid everywhere",
        {"id": U1, "x": [f"ref {U1}"]},
        {"id": U2, "x": [f"ref {U2}"]},
        CompareRules(normalize=(Normalize(builtin="uuid"),)),
        [],
    ),
    (
        "uuid only on its path",
        {"id": U1, "other": U1},
        {"id": U2, "other": U2},
        CompareRules(normalize=(Normalize(builtin="uuid", path="$.id"),)),
        [D("$.other", "changed", U1, U2)],
    ),
    (
        "iso8601",
        {"at": "2026-11-28T10:00:00.123Z", "d": "2026-01-02 03:04:05+01:00"},
        {"at": "2026-11-28T10:00:01Z", "d": "2027-01-02 03:04:05+0100"},
        CompareRules(normalize=(Normalize(builtin="iso8601"),)),
        [],
    ),
    (
        "iso8601 leaves dates alone",
        {"born": "1990-01-01"},
        {"born": "1990-01-02"},
        CompareRules(normalize=(Normalize(builtin="iso8601"),)),
        [D("$.born", "changed", "1990-01-01", "1990-01-02")],
    ),
    (
        "epoch millis number and string",
        {"t": 1764324000000, "s": "at 1764324000000"},
        {"t": 1764324000999, "s": "at 1764324001234"},
        CompareRules(normalize=(Normalize(builtin="epoch_millis"),)),
        [],
    ),
    (
        "epoch millis leaves small numbers",
        {"n": 17},
        {"n": 18},
        CompareRules(normalize=(Normalize(builtin="epoch_millis"),)),
        [D("$.n", "changed", 17, 18)],
    ),
    (
        "user regex",
        {"msg": "took 12ms", "n": 3},
        {"msg": "took 9ms", "n": 4},
        CompareRules(normalize=(Normalize(regex=r"\d+ms", replace="<ms>"),)),
        [D("$.n", "changed", 3, 4)],
    ),
    (
        "user regex on numbers",
        {"n": 3},
        {"n": 4},
        CompareRules(normalize=(Normalize(regex=r"^\d$", replace="<digit>"),)),
        [],
    ),
    (
        "replacement is literal text",
        {"a": "x1"},
        {"a": "x2"},
        CompareRules(normalize=(Normalize(regex=r"\d", replace=r"\1"),)),
        [],
    ),
    (
        "normalised to different texts",
        {"a": "id " + U1},
        {"a": "ID " + U2},
        CompareRules(normalize=(Normalize(builtin="uuid"),)),
        [D("$.a", "changed", "id <normalized>", "ID <normalized>")],
    ),
    # ignore
    (
        "ignore wildcard",
        {"data": [{"u": 1, "t": 1}, {"u": 2, "t": 2}]},
        {"data": [{"u": 9, "t": 1}, {"u": 8, "t": 3}]},
        CompareRules(ignore=("$.data[*].u",)),
        [D("$.data[1].t", "changed", 2, 3)],
    ),
    (
        "ignore subtree",
        {"meta": {"a": 1, "b": [1]}, "x": 1},
        {"meta": {"a": 2}, "x": 1},
        CompareRules(ignore=("$.meta",)),
        [],
    ),
    ("ignore missing key", {"a": 1, "trace": "x"}, {"a": 1}, CompareRules(ignore=("$.trace",)), []),
    ("ignore extra key", {"a": 1}, {"a": 1, "trace": "x"}, CompareRules(ignore=("$.trace",)), []),
    (
        "ignore recursive descent",
        {"u": 1, "a": {"u": 2, "b": [{"u": 3, "k": 1}]}},
        {"u": 9, "a": {"u": 8, "b": [{"u": 7, "k": 2}]}},
        CompareRules(ignore=("$..u",)),
        [D("$.a.b[0].k", "changed", 1, 2)],
    ),
    ("ignore an index", [1, 2, 3], [1, 9, 3], CompareRules(ignore=("$[1]",)), []),
    ("ignore everything", {"a": 1}, {"b": 2}, CompareRules(ignore=("$",)), []),
    (
        "ignore inside unordered",
        {"t": [{"id": 1, "at": 5}, {"id": 2, "at": 6}]},
        {"t": [{"id": 2, "at": 7}, {"id": 1, "at": 8}]},
        CompareRules(ignore=("$..at",), unordered=(Unordered("$.t"),)),
        [],
    ),
    (
        "normalise inside order check",
        {"t": [U1, "x"]},
        {"t": ["x", U2]},
        CompareRules(normalize=(Normalize(builtin="uuid"),)),
        [D("$.t", "order", "[array, 2 items]", "[array, 2 items]")],
    ),
    (
        "bad rule path is skipped",
        {"a": 1},
        {"a": 2},
        CompareRules(ignore=("$.[",)),
        [D("$.a", "changed", 1, 2)],
    ),
]


@pytest.mark.parametrize(("name", "a", "b", "rules", "expected"), CASES, ids=[c[0] for c in CASES])
def test_diff(name: str, a: Any, b: Any, rules: CompareRules, expected: list[FieldDiff]) -> None:
    assert jsondiff.diff(a, b, BodyRules(rules), cap=100) == expected


def test_cap_bounds_the_differences() -> None:
    a = {f"k{i}": i for i in range(1000)}
    b = {f"k{i}": -i - 1 for i in range(1000)}
    out = jsondiff.diff(a, b, BodyRules(R), cap=100)
    assert len(out) == 100
    assert jsondiff.diff(list(range(5000)), [], BodyRules(R), cap=7) == [
        D(f"$[{i}]", "missing", i) for i in range(7)
    ]


def test_values_are_kept_small() -> None:
    out = jsondiff.diff({"s": "x" * 5000, "o": {"k": 1}}, {"s": "y" * 5000, "o": [1, 2]}, BodyRules(R), 10)
    assert out[0] == D("$.s", "changed", "x" * 120 + "…", "y" * 120 + "…")
    assert out[1] == D("$.o", "type_changed", "{object, 1 keys}", "[array, 2 items]")
    big = 2**70
    assert jsondiff.diff({"n": big}, {"n": 1}, BodyRules(R), 10) == [D("$.n", "changed", str(big), 1)]


def test_deep_nesting_does_not_blow_the_stack() -> None:
    a: Any = "x"
    b: Any = "y"
    for _ in range(600):
        a, b = [a], [b]
    out = jsondiff.diff(a, b, BodyRules(R), 10)
    assert len(out) == 1
    assert out[0].kind == "changed"
    assert out[0].path.startswith("$[0][0]")


def test_rule_errors_are_reported() -> None:
    rules = CompareRules(
        ignore=("$.[", "$.ok"),
        tolerance=(Tolerance("$.x", abs=-1),),
        normalize=(Normalize(regex="("), Normalize()),
    )
    errors = BodyRules(rules).errors
    assert len(errors) == 4
    assert "ignore" in errors[0] and "negative" in errors[1]
    assert errors[2].startswith("normalize (") and "non-empty regex" in errors[3]


@pytest.mark.parametrize(
    ("rules", "value", "expected"),
    [
        (R, {"a": 1.0, "b": [2.5]}, {"a": 1, "b": [2.5]}),
        (
            CompareRules(ignore=("$.x", "$.l[0]")),
            {"x": 1, "y": 2, "l": [1, 2]},
            {"y": 2, "l": ["<ignored>", 2]},
        ),
        (CompareRules(unordered=(Unordered("$.t"),)), {"t": [3, 1, 2]}, {"t": [1, 2, 3]}),
        (
            CompareRules(unordered=(Unordered("$.t", key="id"),)),
            {"t": [{"id": 2}, {"id": 1, "z": 0}]},
            {"t": [{"id": 1, "z": 0}, {"id": 2}]},
        ),
        (CompareRules(normalize=(Normalize(builtin="uuid"),)), [U1], ["<normalized>"]),
    ],
)
def test_canonical(rules: CompareRules, value: Any, expected: Any) -> None:
    r = BodyRules(rules)
    assert r.canonical(value, r.matcher.start) == expected


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        (1, 1, True),
        (1, 1.0, False),
        (True, 1, False),
        ({"a": [True]}, {"a": [1]}, False),
        ({"a": 1, "b": 2}, {"b": 2, "a": 1}, True),
        ("x", "x", True),
    ],
)
def test_same(a: Any, b: Any, expected: bool) -> None:
    assert jsondiff.same(a, b) is expected
