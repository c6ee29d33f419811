"""strip_hop_by_hop: the hop-by-hop headers and whatever Connection names are dropped, with
any `drop` set, also past the bound of the values it remembers."""

from shadowproxy.exchange import HOP_BY_HOP
from shadowproxy.transport import strip_hop_by_hop


def test_hop_by_hop_and_connection_named_headers_are_dropped_in_order() -> None:
    raw = [
        ("Host", "a"),
        ("Connection", "keep-alive, X-Hop"),
        ("X-Hop", "1"),
        ("Keep-Alive", "timeout=5"),
        ("Accept", "*/*"),
        ("x-hop", "2"),
    ]
    assert strip_hop_by_hop(raw) == [("Host", "a"), ("Accept", "*/*")]


def test_a_drop_set_of_the_callers_own_and_many_connection_values() -> None:
    drop = HOP_BY_HOP | {"x-request-id"}
    for i in range(300):  # more distinct values than are remembered
        raw = [("X-Request-Id", "r"), ("Connection", f"X-Name-{i}"), (f"X-Name-{i}", "v"), ("A", "b")]
        assert strip_hop_by_hop(raw, drop) == [("A", "b")], i
        assert strip_hop_by_hop(raw) == [("X-Request-Id", "r"), ("A", "b")], i
