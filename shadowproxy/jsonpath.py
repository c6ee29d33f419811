"""JSON path patterns for compare rules: parse them, match them while walking a document.

The dialect is the small subset people write in ignore rules: `$`, `.name`, `['any key']`,
`[3]`, `[*]` / `.*` (any key or index) and `..` (any depth, `$..updated_at`). Concrete paths
we report keep their indices (`$.data[3].title`); `generic()` turns them back into a rule.

Matching runs as a small automaton while the comparison walks both documents, so each node
costs one cached transition instead of matching every rule against every full path.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import ClassVar

from shadowproxy.memo import Memo

Segment = str | int  # a dict key or a list index
_NfaState = tuple[int, int]  # (pattern id, steps matched)
_MAX_TRANSITIONS = 65536
MAX_KEY = 64

_NAME = re.compile(r"[^.\[\]'\"]+")
_INDEX = re.compile(r"\[(\d+)\]")


@dataclass(frozen=True, slots=True)
class Step:
    key: Segment | None  # None: any key or index
    deep: bool = False  # preceded by `..`: any number of segments may come first

    def matches(self, seg: Segment) -> bool:
        if self.key is None:
            return True
        # An int step only matches a list index, a str step only a dict key.
        return type(seg) is type(self.key) and seg == self.key


Pattern = tuple[Step, ...]


def parse(path: str) -> Pattern:
    """Parse a rule path; raise ValueError saying where it went wrong."""
    if not path.startswith("$"):
        raise ValueError(f"{path!r}: a JSON path starts with '$'")
    steps: list[Step] = []
    i, n = 1, len(path)
    while i < n:
        deep = path.startswith("..", i)
        if deep or path[i] == ".":
            i += 2 if deep else 1
            if i < n and path[i] == "[" and deep:
                continue_at, key = _bracket(path, i)
            elif i < n and path[i] == "*":
                continue_at, key = i + 1, None
            else:
                m = _NAME.match(path, i)
                if m is None:
                    raise ValueError(f"{path!r}: expected a name after '.' at offset {i}")
                continue_at, key = m.end(), m.group()
        elif path[i] == "[":
            continue_at, key = _bracket(path, i)
        else:
            raise ValueError(f"{path!r}: unexpected {path[i]!r} at offset {i}")
        steps.append(Step(key, deep))
        i = continue_at
    return tuple(steps)


def _bracket(path: str, i: int) -> tuple[int, Segment | None]:
    end = len(path)
    if path.startswith("[*]", i):
        return i + 3, None
    m = _INDEX.match(path, i)
    if m is not None:
        return m.end(), int(m.group(1))
    if i + 1 < end and path[i + 1] in "'\"":
        quote, j, chars = path[i + 1], i + 2, []
        while j < end and path[j] != quote:
            if path[j] == "\\" and j + 1 < end:
                j += 1
            chars.append(path[j])
            j += 1
        if path.startswith(quote + "]", j):
            return j + 2, "".join(chars)
    raise ValueError(f"{path!r}: expected [*], [<index>] or ['<key>'] at offset {i}")


def child(path: str, seg: Segment) -> str:
    """The concrete path of a child: `$.a` + 3 -> `$.a[3]`, + 'b c' -> `$.a['b c']`."""
    if type(seg) is int:
        return f"{path}[{seg}]"
    key = str(seg)
    if len(key) > MAX_KEY:
        # A key this long is data, not a field name; keep the path (and FieldDiff) small.
        key = key[:MAX_KEY] + "…"
    # [A-Za-z_][A-Za-z0-9_]*, without a regex call (~1,500 instructions from compiled code,
    # once per differing field): for ASCII text, isidentifier() is exactly that.
    if key.isascii() and key.isidentifier():
        return f"{path}.{key}"
    escaped = key.replace("\\", "\\\\").replace("'", "\\'")
    return f"{path}['{escaped}']"


def generic(path: str) -> str:
    """`$.data[3].updated_at` -> `$.data[*].updated_at`: usable as an ignore rule.

    A path that is not a JSON path we produced (`header:date`, `status`) comes back as is.
    """
    try:
        steps = parse(path)
    except ValueError:
        return path
    out = "$"
    for s in steps:
        if s.key is None or type(s.key) is int:
            out += "[*]"
        else:
            out = child(out, s.key)
    return out


# Every mismatching pair asks for its fields' generic paths (Comparison.paths), and the writer
# again for the samples it keeps; parsing one cost ~30 us. A route's paths repeat.
_GENERIC: Memo[str, str] = Memo(4096)


def generic_path(path: str) -> str:
    """The rule-shaped path of any reported difference: `$.data[3].updated_at` ->
    `$.data[*].updated_at`, `line:<n>` -> `line:*`; `header:date`, `status` and `body` as
    they are."""
    got = _GENERIC.get(path)
    if got is None:
        got = "line:*" if path.startswith("line:") else generic(path) if path.startswith("$") else path
        _GENERIC.keep(path, got)
    return got


def generic_paths(paths: Iterable[str]) -> tuple[str, ...]:
    """The distinct generic paths of some differences, in the order they differed: what
    per-field counts and noise paths are keyed by. In order, not a set's: past a cap the
    later ones fold into `other`, and they must be the same ones in every process."""
    out: dict[str, None] = {}
    for p in paths:
        out[generic_path(p)] = None
    return tuple(out)


class Matcher:
    """Tracks, while walking a document, which patterns match the current node.

    A lazily built DFA: each distinct set of NFA states (pattern id, steps matched) gets a
    small int id, and transitions are cached, so a step is one dict lookup. The sets reached
    are bounded by the rules (a document's keys that match no step all lead to the same
    set); the transition cache is bounded by clearing it.
    """

    DEAD: ClassVar[int] = 0  # no pattern can match here or below

    def __init__(self, patterns: Sequence[Pattern]) -> None:
        self._patterns = tuple(patterns)
        # Without index steps every list index behaves alike: cache them under one key.
        self._by_index = any(type(st.key) is int for p in self._patterns for st in p)
        self._sets: list[tuple[_NfaState, ...]] = []
        self._accepted: list[tuple[int, ...]] = []
        self._ids: dict[tuple[_NfaState, ...], int] = {}
        self._next: dict[tuple[int, Segment], int] = {}
        self._lock = threading.Lock()
        self._intern(())
        self.start: int = self._intern(tuple((pid, 0) for pid in range(len(self._patterns))))

    def step(self, sid: int, seg: Segment) -> int:
        if sid == self.DEAD:
            return sid
        key = (sid, seg if type(seg) is str or self._by_index else -1)
        nxt = self._next.get(key)
        if nxt is None:
            nxt = self._intern(self._nfa_step(self._sets[sid], seg))
            if len(self._next) >= _MAX_TRANSITIONS:
                self._next.clear()
            self._next[key] = nxt
        return nxt

    def accepted(self, sid: int) -> tuple[int, ...]:
        """Ids of the patterns that match the node this state describes."""
        return self._accepted[sid]

    def _nfa_step(self, states: tuple[_NfaState, ...], seg: Segment) -> tuple[_NfaState, ...]:
        out: dict[_NfaState, None] = {}
        for pid, pos in states:
            steps = self._patterns[pid]
            if pos == len(steps):
                continue
            st = steps[pos]
            if st.deep:
                out[(pid, pos)] = None  # `..` stays alive while it also advances
            if st.matches(seg):
                out[(pid, pos + 1)] = None
        return tuple(sorted(out))

    def _intern(self, states: tuple[_NfaState, ...]) -> int:
        sid = self._ids.get(states)
        if sid is not None:
            return sid
        # explain() walks the same compiled rules from worker threads.
        with self._lock:
            sid = self._ids.get(states)
            if sid is None:
                self._sets.append(states)
                self._accepted.append(tuple(pid for pid, pos in states if pos == len(self._patterns[pid])))
                sid = len(self._sets) - 1
                self._ids[states] = sid
        return sid
