"""The per-request values (value.Value): equal, hashed and shown by their fields like the
frozen dataclasses they replaced, in the pure and the compiled build alike."""

import pickle

import pytest

from shadowproxy.exchange import Comparison, Exchange, FieldDiff, RequestSnapshot, UpstreamResult


def _result(status: int = 200, body: bytes = b"{}") -> UpstreamResult:
    return UpstreamResult("shadow", status, (("Content-Type", "application/json"),), body, 0.01, len(body))


def test_values_are_equal_and_hash_alike_by_their_fields() -> None:
    assert _result() == _result() and hash(_result()) == hash(_result())
    assert _result() != _result(status=500) and _result() != _result(body=b"[]")
    assert len({_result(), _result(), _result(status=500)}) == 2
    # Same field values, another kind of value: not equal.
    assert Comparison(match=True) == Comparison.equal() and Comparison(match=True) != _result()


def test_repr_names_every_field() -> None:
    shown = repr(Comparison(match=False, parts=("status",)))
    assert shown == (
        "Comparison(match=False, parts=('status',), fields=(), body_mode='identical', hashed_only=False)"
    )


def test_times_default_to_now_and_keep_a_given_one() -> None:
    req = RequestSnapshot("GET", "/p", "", (), b"", "id-1", "pitches")
    assert req.received_at > 0
    assert RequestSnapshot("GET", "/p", "", (), b"", "id-1", "pitches", received_at=5.0).received_at == 5.0
    ex = Exchange(req, _result(), _result(), Comparison.equal(), at=7.0)
    assert ex.at == 7.0 and ex == Exchange(req, _result(), _result(), Comparison.equal(), at=7.0)


def test_with_body_keeps_the_rest_of_the_answer() -> None:
    cut = UpstreamResult("shadow", 200, (), b"{", 0.2, body_size=900, truncated=True)
    whole = cut.with_body((("X", "1"),), b"{}")
    assert (whole.headers, whole.body, whole.body_size) == ((("X", "1"),), b"{}", 2)
    assert (whole.backend, whole.status, whole.latency_s, whole.truncated) == ("shadow", 200, 0.2, True)


def test_values_survive_a_pickle() -> None:
    req = RequestSnapshot("POST", "/p", "a=1", (("X", "1"),), b"{}", "id-1", "pitches", received_at=3.0)
    cmp = Comparison(match=False, parts=("body",), fields=(FieldDiff("$.a", "changed", 1, [2]),))
    ex = Exchange(req, _result(), _result(500), cmp, secondary=_result(), noise_paths=("$.t",), at=7.0)
    back = pickle.loads(pickle.dumps(ex))
    assert back == ex and type(back.request) is RequestSnapshot and back.comparison.fields[0].shadow == [2]


def test_match_args_name_every_constructor_field() -> None:
    # Equality, hash and repr see only what __match_args__ names: a field added to an
    # __init__ and not there would silently drop out of all three.
    import inspect

    from shadowproxy import compare, decode, exchange, value

    classes = [
        c
        for m in (exchange, compare, decode)
        for c in vars(m).values()
        if isinstance(c, type) and issubclass(c, value.Value) and c.__module__ == m.__name__
    ]
    assert len(classes) == 8
    for cls in classes:
        params = list(inspect.signature(cls.__init__).parameters)[1:]
        if params == ["args", "kwargs"]:
            pytest.skip("compiled __init__ has no signature to read; the pure run checks this")
        assert list(cls.__match_args__) == params, cls.__name__


def test_a_comparison_keys_its_differences_by_generic_path_once() -> None:
    fields = (
        FieldDiff("$.data[3].t", "changed"),
        FieldDiff("$.data[7].t", "changed"),
        FieldDiff("status", "changed"),
    )
    cmp = Comparison(match=False, parts=("status", "body"), fields=fields)
    assert cmp.paths == ("$.data[*].t", "status") and Comparison.equal().paths == ()
    assert pickle.loads(pickle.dumps(cmp)).paths == cmp.paths
