from __future__ import annotations

import pytest

from shadowproxy import jsonpath
from shadowproxy.jsonpath import Step


@pytest.mark.parametrize(
    ("path", "steps"),
    [
        ("$", ()),
        ("$.meta", (Step("meta"),)),
        ("$.data[*].updated_at", (Step("data"), Step(None), Step("updated_at"))),
        ("$.data[3].title", (Step("data"), Step(3), Step("title"))),
        ("$..updated_at", (Step("updated_at", deep=True),)),
        ("$..*", (Step(None, deep=True),)),
        ("$.a.*", (Step("a"), Step(None))),
        ("$['a b'].c", (Step("a b"), Step("c"))),
        ('$["x.y"]', (Step("x.y"),)),
        ("$['it\\'s']", (Step("it's"),)),
        ("$..['a b']", (Step("a b", deep=True),)),
        ("$.items-v2", (Step("items-v2"),)),
        ("$['*']", (Step("*"),)),
    ],
)
def test_parse(path: str, steps: tuple[Step, ...]) -> None:
    assert jsonpath.parse(path) == steps


@pytest.mark.parametrize("path", ["", "data", "$.", "$..", "$[", "$[x]", "$['open", "$.a[1", "$a", "$.a]"])
def test_parse_rejects(path: str) -> None:
    with pytest.raises(ValueError):
        jsonpath.parse(path)


@pytest.mark.parametrize(
    ("path", "seg", "expected"),
    [
        ("$", "data", "$.data"),
        ("$.data", 3, "$.data[3]"),
        ("$", "a b", "$['a b']"),
        ("$", "it's", "$['it\\'s']"),
        ("$", "3", "$['3']"),
        ("$", "*", "$['*']"),
        ("$", "_private9", "$._private9"),
        ("$", "a-b", "$['a-b']"),
        ("$", "café", "$['café']"),  # an identifier to Python, not to our dotted form
        ("$", "", "$['']"),
    ],
)
def test_child_round_trips(path: str, seg: str | int, expected: str) -> None:
    out = jsonpath.child(path, seg)
    assert out == expected
    assert jsonpath.parse(out)[-1] == Step(seg)


def test_long_keys_are_cut_in_paths() -> None:
    assert jsonpath.child("$", "k" * 500) == "$['" + "k" * jsonpath.MAX_KEY + "…']"


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("$.data[3].updated_at", "$.data[*].updated_at"),
        ("$[0][12]", "$[*][*]"),
        ("$['a[3]'].b", "$['a[3]'].b"),
        ("$.meta", "$.meta"),
        ("header:date", "header:date"),
        ("status", "status"),
    ],
)
def test_generic(path: str, expected: str) -> None:
    assert jsonpath.generic(path) == expected


def _matches(pattern: str, segments: list[str | int]) -> bool:
    m = jsonpath.Matcher([jsonpath.parse(pattern)])
    states = m.start
    for seg in segments:
        states = m.step(states, seg)
    return m.accepted(states) == (0,)


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("$.data[3].updated_at", "$.data[*].updated_at"),
        ("$.a[0][1].b", "$.a[*][*].b"),
        ("$['x y'][2]", "$['x y'][*]"),
        ("$.meta", "$.meta"),
        ("header:date", "header:date"),
        ("line:12", "line:*"),
        ("status", "status"),
        ("body", "body"),
    ],
)
def test_generic_path(path: str, expected: str) -> None:
    assert jsonpath.generic_path(path) == expected


def test_generic_path_stays_right_past_what_it_remembers() -> None:
    for i in range(5000):  # more distinct paths than the cache keeps
        assert jsonpath.generic_path(f"$.k{i}[{i}].v") == f"$.k{i}[*].v"
    assert (
        jsonpath.generic_path("line:7") == "line:*" and jsonpath.generic_path("header:date") == "header:date"
    )


def test_generic_paths_are_distinct_and_in_order() -> None:
    paths = ["$.data[3].updated_at", "$.data[7].updated_at", "header:vary", "line:4", "line:9", "status"]
    assert jsonpath.generic_paths(paths) == ("$.data[*].updated_at", "header:vary", "line:*", "status")
    assert jsonpath.generic_paths(["$.b", "$.a", "$.b"]) == ("$.b", "$.a")


@pytest.mark.parametrize(
    ("pattern", "segments", "expected"),
    [
        ("$", [], True),
        ("$", ["a"], False),
        ("$.meta", ["meta"], True),
        ("$.meta", ["meta", "x"], False),
        ("$.meta", ["other"], False),
        ("$.data[*].updated_at", ["data", 0, "updated_at"], True),
        ("$.data[*].updated_at", ["data", 7, "updated_at"], True),
        ("$.data[*].updated_at", ["data", "k", "updated_at"], True),
        ("$.data[*].updated_at", ["data", 0, "created_at"], False),
        ("$.data[2].t", ["data", 2, "t"], True),
        ("$.data[2].t", ["data", 3, "t"], False),
        # An index step does not match a dict key spelled like a number.
        ("$.data[2].t", ["data", "2", "t"], False),
        ("$..updated_at", ["updated_at"], True),
        ("$..updated_at", ["a", 3, "b", "updated_at"], True),
        ("$..updated_at", ["a", "updated_at", "x"], False),
        ("$..*", [], False),
        ("$..*", ["a"], True),
        ("$..*", ["a", 1, "b"], True),
        ("$.a..id", ["a", "id"], True),
        ("$.a..id", ["a", "x", 0, "id"], True),
        ("$.a..id", ["b", "id"], False),
        ("$..items[*].id", ["x", "items", 4, "id"], True),
    ],
)
def test_matcher(pattern: str, segments: list[str | int], expected: bool) -> None:
    assert _matches(pattern, segments) is expected


def test_matcher_tracks_several_patterns_at_once() -> None:
    m = jsonpath.Matcher([jsonpath.parse(p) for p in ("$.a", "$..b", "$.a.b")])
    s = m.step(m.step(m.start, "a"), "b")
    assert sorted(m.accepted(s)) == [1, 2]
    assert m.step(m.DEAD, "x") == m.DEAD
    assert m.step(m.step(m.start, "zzz"), "b") != m.DEAD  # `$..b` is still alive


def test_index_steps_are_told_apart_only_when_a_pattern_has_one() -> None:
    m = jsonpath.Matcher([jsonpath.parse("$[1]")])
    assert (m.accepted(m.step(m.start, 1)), m.accepted(m.step(m.start, 2))) == ((0,), ())
    w = jsonpath.Matcher([jsonpath.parse("$[*].a")])
    assert w.step(w.start, 2) == w.step(w.start, 3)
    assert w.accepted(w.step(w.step(w.start, 5), "a")) == (0,)
