"""The bounded memo behind the hot path's lookups: it remembers up to its bound, then only
answers what it knows, and always hands back the value it was given."""

from shadowproxy.memo import Memo


def test_a_memo_remembers_up_to_its_bound_and_no_further() -> None:
    m: Memo[str, int] = Memo(3)
    assert m.get("a") is None
    assert [m.keep(k, i) for i, k in enumerate("abcde")] == [0, 1, 2, 3, 4]
    assert len(m) == 3
    assert [m.get(k) for k in "abcde"] == [0, 1, 2, None, None]
    assert m.keep("a", 9) == 9 and m.get("a") == 9  # a known key is updated, not refused
