"""Structural diff of two parsed JSON values under the compare rules.

This runs on every mismatching pair, so it is a plain walk of both values that skips equal
subtrees (C-speed `==`, confirmed by a walk over kinds so `true` never passes for `1`) and
stops once it holds `cap` differences. DeepDiff only explains stored samples (see compare.explain).
"""

from __future__ import annotations

import json
import math
import re
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Literal

import orjson

from shadowproxy import jsonpath
from shadowproxy.config import CompareRules, Normalize
from shadowproxy.exchange import DiffKind, FieldDiff
from shadowproxy.jsonpath import Segment

States = int  # a jsonpath.Matcher state id

IGNORED = "<ignored>"
# Deeper than this the walk compares whole subtrees: Python's stack is the limit otherwise.
MAX_DEPTH = 128
MAX_TEXT = 120
# Greedy pairing of leftover elements under a tolerance is quadratic; past this, pair in order.
_MAX_PAIRING = 2500

BUILTIN_PATTERNS = {
    "uuid": r"\b[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\b",
    # Date and time, optional seconds, fraction and zone: 2026-11-28T10:00:00.123+01:00.
    "iso8601": (
        r"\b\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(?::\d{2}(?:[.,]\d+)?)?"
        r"(?:Z|[+-]\d{2}(?::?\d{2})?)?(?![\w:])"
    ),
    # 13 digits: milliseconds from 2001-09 to 2286.
    "epoch_millis": r"(?<![\w.])[1-9]\d{12}(?![\w.])",
}
EVERY_LEAF = "$..*"

JsonKind = Literal["null", "boolean", "number", "string", "object", "array", "other"]


def kind_of(v: Any) -> JsonKind:
    t = type(v)
    if v is None:
        return "null"
    if t is bool:
        return "boolean"
    if t is int or t is float:
        return "number"
    if t is str:
        return "string"
    if t is dict:
        return "object"
    if t is list:
        return "array"
    return "other"


def dumps(v: Any) -> bytes:
    """Canonical bytes of a value (keys sorted); ints past 64 bits go through the json module."""
    try:
        return orjson.dumps(v, option=orjson.OPT_SORT_KEYS)
    except TypeError:
        return json.dumps(v, sort_keys=True, default=str).encode()


def summary(v: Any) -> Any:
    """A small stand-in for a value in a FieldDiff: short strings, container sizes."""
    t = type(v)
    if t is str:
        return v if len(v) <= MAX_TEXT else v[:MAX_TEXT] + "…"
    if t is dict:
        return f"{{object, {len(v)} keys}}"
    if t is list:
        return f"[array, {len(v)} items]"
    if t is int and not -(2**63) <= v < 2**63:
        return summary(str(v))
    return v


def same(a: Any, b: Any) -> bool:
    """Equal as JSON, without Python's `True == 1` and with key order ignored."""
    if a is b:
        return True
    t = type(a)
    if t is not type(b) or a != b:
        return False
    return (t is not dict and t is not list) or _same_container(a, b)


def _same_container(a: Any, b: Any) -> bool:
    """For two containers already `==`: no difference the walk would report either, which
    Python's `==` does not promise (`True == 1` inside). Key order does not count, and an
    int against an equal float is one number, as in the walk.

    A walk over the members' kinds: compiled, a few dozen instructions a member, where
    serialising both with orjson to compare the bytes cost 25,000 instructions per
    mismatching 1 KB document (callgrind), a seventh of its whole comparison."""
    # Typed locals and an index, not zip(): compiled, they are native dict and list reads.
    if type(a) is dict:
        da: dict[str, Any] = a
        db: dict[str, Any] = b
        return all(_same_kind(va, db[k]) for k, va in da.items())  # == held: the same keys
    la: list[Any] = a
    lb: list[Any] = b
    return all(_same_kind(la[i], lb[i]) for i in range(len(la)))


def _same_kind(a: Any, b: Any) -> bool:
    """Two members already `==`: of one JSON kind all the way down."""
    ta, tb = type(a), type(b)
    if ta is tb:
        return (ta is not dict and ta is not list) or _same_container(a, b)
    return (ta is int or ta is float) and (tb is int or tb is float)


@dataclass(frozen=True, slots=True)
class Normalizer:
    pattern: re.Pattern[str]
    replace: str
    epoch_millis: bool = False
    builtin: bool = False

    def __call__(self, v: Any) -> Any:
        t = type(v)
        if t is str:
            return self.pattern.sub(self._template, v)
        if t is int or t is float:
            if self.epoch_millis:
                return self.replace if 1e12 <= v < 1e13 else v
            if not self.builtin:
                text = str(v)
                out = self.pattern.sub(self._template, text)
                return v if out == text else out
        return v

    @property
    def _template(self) -> str:
        # The replacement is literal text: escape what re.sub would read as group references.
        return self.replace.replace("\\", "\\\\")


def normalizer(n: Normalize) -> Normalizer:
    if n.builtin is not None:
        return Normalizer(
            re.compile(BUILTIN_PATTERNS[n.builtin]), n.replace, n.builtin == "epoch_millis", True
        )
    if not n.regex:
        raise ValueError("give a builtin or a non-empty regex")
    return Normalizer(re.compile(n.regex), n.replace)


@dataclass(frozen=True, slots=True)
class Effects:
    """What the rules say about one node."""

    ignored: bool = False
    unordered: bool = False
    key: str | None = None
    tolerances: tuple[tuple[float, float], ...] = ()  # (abs, rel)
    normalizers: tuple[Normalizer, ...] = ()


NO_EFFECTS = Effects()
_Action = tuple[str, Any]


class BodyRules:
    """The JSON rules of one CompareRules, compiled once (compare caches it)."""

    def __init__(self, rules: CompareRules) -> None:
        self.errors: list[str] = []
        patterns: list[jsonpath.Pattern] = []
        actions: list[_Action] = []
        text_norms: list[Normalizer] = []

        def add(path: str, action: _Action, what: str) -> None:
            try:
                patterns.append(jsonpath.parse(path))
                actions.append(action)
            except ValueError as e:
                self.errors.append(f"{what}: {e}")

        for p in rules.ignore:
            add(p, ("ignore", None), "ignore")
        for u in rules.unordered:
            add(u.path, ("unordered", u.key), "unordered")
        for t in rules.tolerance:
            if t.abs < 0 or t.rel < 0:
                self.errors.append(f"tolerance {t.path}: abs and rel must not be negative")
            add(t.path, ("tolerance", (max(t.abs, 0.0), max(t.rel, 0.0))), "tolerance")
        for n in rules.normalize:
            try:
                norm = normalizer(n)
            except (re.error, KeyError, ValueError) as e:
                self.errors.append(f"normalize {n.regex or n.builtin}: {e}")
                continue
            add(n.path, ("normalize", norm), "normalize")
            if n.path == EVERY_LEAF:
                text_norms.append(norm)
        self.matcher = jsonpath.Matcher(patterns)
        self.has_tolerance = any(a[0] == "tolerance" for a in actions)
        # Normalizers meant for every leaf also apply to each line of a text body.
        self.text_normalizers = tuple(text_norms)
        self._actions = tuple(actions)
        self._cache: list[Effects] = []
        self._lock = threading.Lock()

    def step(self, states: States, seg: Segment) -> States:
        return self.matcher.step(states, seg)

    def effects(self, states: States) -> Effects:
        cache = self._cache
        if states < len(cache):
            return cache[states]
        # Matcher states are few and only ever added: compute each one's effects once (under
        # a lock, as explain() runs in worker threads).
        with self._lock:
            while len(cache) <= states:
                ids = self.matcher.accepted(len(cache))
                cache.append(self._effects(ids) if ids else NO_EFFECTS)
        return cache[states]

    def _effects(self, ids: Iterable[int]) -> Effects:
        ignored = unordered = False
        key: str | None = None
        tolerances: list[tuple[float, float]] = []
        norms: list[Normalizer] = []
        for i in ids:
            what, arg = self._actions[i]
            if what == "ignore":
                ignored = True
            elif what == "unordered":
                unordered, key = True, key or arg
            elif what == "tolerance":
                tolerances.append(arg)
            else:
                norms.append(arg)
        return Effects(ignored, unordered, key, tuple(tolerances), tuple(norms))

    def ignored(self, states: States) -> bool:
        return self.effects(states).ignored

    def canonical(self, v: Any, states: States, depth: int = 0) -> Any:
        """The value as the rules see it: ignored keys gone, leaves normalised, unordered
        arrays sorted, integral floats as ints. Equal canonical forms compare equal."""
        if states == jsonpath.Matcher.DEAD:
            # No rule reaches this subtree: the value as it is (only `1.0` vs `1` then
            # differs here while diff() calls them equal; both backends being JavaScript,
            # neither writes `1.0`).
            return v
        eff = self.effects(states)
        if eff.ignored:
            return IGNORED
        t = type(v)
        if depth > MAX_DEPTH:
            return v
        if t is dict:
            out = {}
            for k, x in v.items():
                cs = self.step(states, k)
                if not self.ignored(cs):
                    out[k] = self.canonical(x, cs, depth + 1)
            return out
        if t is list:
            items = [self.canonical(x, self.step(states, i), depth + 1) for i, x in enumerate(v)]
            if eff.unordered:
                items.sort(key=_sort_key(eff.key))
            return items
        for norm in eff.normalizers:
            v = norm(v)
        if type(v) is float and v.is_integer():
            return int(v)
        return v


def _sort_key(key: str | None) -> Any:
    if key is None:
        return dumps
    return lambda e: (dumps(e.get(key)) if type(e) is dict else b"", dumps(e))


def close(a: Any, b: Any, tolerances: Iterable[tuple[float, float]]) -> bool:
    try:
        return any(math.isclose(a, b, rel_tol=rel, abs_tol=ab) for ab, rel in tolerances)
    except OverflowError:
        return False


def diff(a: Any, b: Any, rules: BodyRules, cap: int) -> list[FieldDiff]:
    """The differences between two parsed JSON values, at most `cap` of them."""
    d = _Differ(rules, cap)
    try:
        d.diff(a, b, "$", rules.matcher.start, 0)
    except RecursionError:
        # Only a pathological nesting gets here; say the whole body differs.
        return [FieldDiff("$", "changed", summary(a), summary(b))]
    return d.out


class _Differ:
    __slots__ = ("cap", "out", "rules")

    def __init__(self, rules: BodyRules, cap: int) -> None:
        self.rules = rules
        self.cap = cap
        self.out: list[FieldDiff] = []

    @property
    def full(self) -> bool:
        # Not on the per-key path (_object inlines it): a property call per key was a fifth
        # of a mismatching 1 KB document's diff.
        return len(self.out) >= self.cap

    def emit(self, path: str, kind: DiffKind, a: Any = None, b: Any = None) -> None:
        if len(self.out) < self.cap:
            self.out.append(FieldDiff(path, kind, summary(a), summary(b)))

    def diff(self, a: Any, b: Any, path: str, states: States, depth: int) -> None:
        eff = self.rules.effects(states)
        if eff.ignored:
            return
        for norm in eff.normalizers:
            a, b = norm(a), norm(b)
        ka, kb = kind_of(a), kind_of(b)
        if ka != kb:
            self.emit(path, "type_changed", a, b)
        elif depth > MAX_DEPTH:
            if not same(a, b):
                self.emit(path, "changed", a, b)
        elif ka == "object":
            self._object(a, b, path, states, depth)
        elif ka == "array":
            self._array(a, b, path, states, depth, eff)
        elif ka == "number":
            if a != b and not close(a, b, eff.tolerances):
                self.emit(path, "changed", a, b)
        elif a != b:
            self.emit(path, "changed", a, b)

    def _child(self, a: Any, b: Any, path: str, seg: Segment, states: States, depth: int) -> None:
        if not same(a, b):
            self.diff(a, b, jsonpath.child(path, seg), self.rules.step(states, seg), depth + 1)

    def _one_sided(self, path: str, seg: Segment, states: States, kind: DiffKind, v: Any) -> None:
        if not self.rules.ignored(self.rules.step(states, seg)):
            p = jsonpath.child(path, seg)
            if kind == "missing":
                self.emit(p, kind, v, None)
            else:
                self.emit(p, kind, None, v)

    def _rest(self, v: list[Any], idx: Iterable[int], path: str, states: States, kind: DiffKind) -> None:
        for i in idx:
            if self.full:
                return
            self._one_sided(path, i, states, kind, v[i])

    def _object(self, a: dict[str, Any], b: dict[str, Any], path: str, states: States, depth: int) -> None:
        out, cap = self.out, self.cap
        shared = 0
        for k, va in a.items():
            if len(out) >= cap:
                return
            if k not in b:
                self._one_sided(path, k, states, "missing", va)
                continue
            shared += 1
            vb = b[k]
            # same(), inlined: most keys of a mismatching document are equal scalars.
            t = type(va)
            alike = t is type(vb)
            leaves = alike and t is not dict and t is not list
            if va is vb or (alike and va == vb and (leaves or _same_container(va, vb))):
                continue
            cs = self.rules.step(states, k)
            if leaves and self.rules.effects(cs) is NO_EFFECTS:
                # Two leaves of one type that no rule touches: diff() would only say so.
                self.emit(jsonpath.child(path, k), "changed", va, vb)
                continue
            self.diff(va, vb, jsonpath.child(path, k), cs, depth + 1)
        if shared < len(b):
            for k, vb in b.items():
                if len(out) >= cap:
                    return
                if k not in a:
                    self._one_sided(path, k, states, "extra", vb)

    def _array(self, a: list[Any], b: list[Any], path: str, states: States, depth: int, eff: Effects) -> None:
        if eff.unordered:
            if eff.key is not None:
                self._keyed(a, b, path, states, depth, eff.key)
            else:
                self._multiset(a, b, list(range(len(a))), list(range(len(b))), path, states, depth)
            return
        mark = len(self.out)
        n = min(len(a), len(b))
        differing: list[int] = []
        for i in range(n):
            if self.full:
                differing += range(i, n)
                break
            before = len(self.out)
            self._child(a[i], b[i], path, i, states, depth)
            if len(self.out) > before:
                differing.append(i)
        self._rest(a, range(n, len(a)), path, states, "missing")
        self._rest(b, range(n, len(b)), path, states, "extra")
        if (
            differing
            and len(a) == len(b)
            and self._pair_equal(a, b, differing, differing, states, depth) == ([], [])
        ):
            # Same elements, other order, on a path not declared unordered: one `order`
            # difference tells the user which rule to add; element diffs would only confuse.
            # (Indices without a difference pair with themselves: only the others are checked.)
            del self.out[mark:]
            self.emit(path, "order", f"[array, {len(a)} items]", f"[array, {len(b)} items]")

    def _pair_equal(
        self, a: list[Any], b: list[Any], ia: list[int], ib: list[int], states: States, depth: int
    ) -> tuple[list[int], list[int]]:
        """Pair elements of a[ia] with equal elements of b[ib]; return the unpaired of each.

        Equal raw bytes first (orjson, C speed); canonical forms, which walk the rules in
        Python, only for what is left.
        """
        left_a, left_b = _pair_by(ia, ib, lambda i: dumps(a[i]), lambda j: dumps(b[j]))
        if left_a and left_b:
            rules = self.rules

            def canonical_key(v: list[Any]) -> Any:
                return lambda i: dumps(rules.canonical(v[i], rules.step(states, i), depth + 1))

            left_a, left_b = _pair_by(left_a, left_b, canonical_key(a), canonical_key(b))
        return left_a, left_b

    def _multiset(
        self,
        a: list[Any],
        b: list[Any],
        ia: list[int],
        ib: list[int],
        path: str,
        states: States,
        depth: int,
    ) -> None:
        if self.full:
            return
        left_a, left_b = self._pair_equal(a, b, ia, ib, states, depth)
        if self.rules.has_tolerance and left_a and left_b and len(left_a) * len(left_b) <= _MAX_PAIRING:
            # Canonical forms cannot see a tolerance: pair elements equal within it first.
            for i in list(left_a):
                for j in left_b:
                    probe = _Differ(self.rules, 1)
                    probe.diff(a[i], b[j], jsonpath.child(path, i), self.rules.step(states, i), depth + 1)
                    if not probe.out:
                        left_a.remove(i)
                        left_b.remove(j)
                        break
        # Whatever is left is most likely the same element changed: diff the leftovers pairwise.
        pairs = list(zip(left_a, left_b, strict=False))
        for i, j in pairs:
            if self.full:
                return
            self.diff(a[i], b[j], jsonpath.child(path, i), self.rules.step(states, i), depth + 1)
        self._rest(a, left_a[len(pairs) :], path, states, "missing")
        self._rest(b, left_b[len(pairs) :], path, states, "extra")

    def _keyed(self, a: list[Any], b: list[Any], path: str, states: States, depth: int, key: str) -> None:
        index: dict[bytes, list[int]] = {}
        loose_b: list[int] = []
        for j, e in enumerate(b):
            if type(e) is dict and key in e:
                index.setdefault(dumps(e[key]), []).append(j)
            else:
                loose_b.append(j)
        loose_a: list[int] = []
        for i, e in enumerate(a):
            if self.full:
                return
            if type(e) is not dict or key not in e:
                loose_a.append(i)
                continue
            js = index.get(dumps(e[key]))
            if js:
                self._child(e, b[js.pop(0)], path, i, states, depth)
            else:
                self._one_sided(path, i, states, "missing", e)
        self._rest(b, sorted(j for js in index.values() for j in js), path, states, "extra")
        if loose_a or loose_b:
            self._multiset(a, b, loose_a, loose_b, path, states, depth)


def _pair_by(
    ia: list[int], ib: list[int], key_a: Callable[[int], bytes], key_b: Callable[[int], bytes]
) -> tuple[list[int], list[int]]:
    pool: dict[bytes, list[int]] = {}
    for j in reversed(ib):
        pool.setdefault(key_b(j), []).append(j)
    left_a = []
    for i in ia:
        js = pool.get(key_a(i))
        if js:
            js.pop()
        else:
            left_a.append(i)
    return left_a, sorted(j for js in pool.values() for j in js)
