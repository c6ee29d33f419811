"""plain.py: an exchange crosses to a child process as plain tuples and comes back equal."""

from __future__ import annotations

import pickle

from shadowproxy import plain
from shadowproxy.exchange import Comparison, Exchange, FieldDiff, RequestSnapshot, UpstreamResult


def exchange(comparison: Comparison | None, shadow: UpstreamResult) -> Exchange:
    return Exchange(
        RequestSnapshot("GET", "/api/a%20b", "x=1", (("Host", "h"),), b"", "rid", "/api/{x}", 12.5),
        UpstreamResult("primary", 200, (("Content-Type", "application/json"),), b'{"a":1}', 0.01, 7),
        shadow,
        comparison,
        UpstreamResult("secondary", 200, (), b'{"a":1}', 0.02, 7, truncated=True),
        ("$.a",),
        99.0,
    )


def test_every_field_survives_the_round_trip_through_pickle() -> None:
    differing = Comparison(
        False,
        ("body", "status"),
        (FieldDiff("$.a", "changed", 1, 2.5), FieldDiff("$.b", "missing", {"k": [1]}, None)),
        "json",
        True,
    )
    failed = UpstreamResult.failure("shadow", "timeout", "no answer within the timeout", 5.0, 12)
    answered = UpstreamResult("shadow", 500, (("X", "y"),), b"boom", 0.03, 4)
    for ex in (exchange(differing, answered), exchange(None, failed)):
        back = plain.exchange_from(pickle.loads(pickle.dumps(plain.exchange(ex))))
        assert back == ex  # every field, the times included
        if ex.comparison is not None:
            assert back.comparison is not None and back.comparison.paths == ex.comparison.paths
