from __future__ import annotations

import gzip
import hashlib
import tracemalloc
import zlib
from collections.abc import Callable

import brotli
import pytest

from shadowproxy import decode

TEXT = "Grüße, naïve café — ünïcödé\n".encode() * 50
MiB = 1024 * 1024


def _deflate_raw(data: bytes) -> bytes:
    c = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    return c.compress(data) + c.flush()


@pytest.mark.parametrize(
    ("encoding", "encode"),
    [
        (None, lambda d: d),
        ("identity", lambda d: d),
        ("gzip", gzip.compress),
        ("x-gzip", gzip.compress),
        ("GZip", gzip.compress),
        ("deflate", zlib.compress),
        ("deflate", _deflate_raw),
        ("br", brotli.compress),
        # Applied in order: gzip first, then br; decoding undoes br first.
        ("gzip, br", lambda d: brotli.compress(gzip.compress(d))),
        ("deflate,gzip", lambda d: gzip.compress(zlib.compress(d))),
        # Several gzip members back to back are one body.
        ("gzip", lambda d: gzip.compress(d[:100]) + gzip.compress(d[100:])),
    ],
)
def test_decodes(encoding: str | None, encode: Callable[[bytes], bytes]) -> None:
    d = decode.decode(encode(TEXT), encoding, limit=10 * MiB)
    assert d == decode.Decoded(TEXT)


@pytest.mark.parametrize(
    ("body", "encoding", "error"),
    [
        (b"not gzip at all", "gzip", "cannot decode gzip"),
        (gzip.compress(TEXT)[:-20], "gzip", "ends early"),
        (b"garbage here", "br", "cannot decode br"),
        (brotli.compress(TEXT)[:10], "br", "ends early"),
        (b"\xff\xfe\xfd", "deflate", "cannot decode deflate"),
        (TEXT, "compress", "unsupported content-encoding 'compress'"),
        (gzip.compress(TEXT) + b"trailing junk", "gzip", "cannot decode gzip"),
    ],
)
def test_undecodable_bodies_keep_the_bytes_as_received(body: bytes, encoding: str, error: str) -> None:
    d = decode.decode(body, encoding, limit=MiB)
    assert error in d.error
    assert d.data == body


def _zeros_gzip(size: int) -> bytes:
    c = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    block = bytes(MiB)
    return b"".join(c.compress(block) for _ in range(size // MiB)) + c.flush()


def _zeros_br(size: int) -> bytes:
    c = brotli.Compressor(quality=1)
    block = bytes(MiB)
    out: bytes = b"".join(c.process(block) for _ in range(size // MiB)) + c.finish()
    return out


@pytest.mark.parametrize(("encoding", "bomb"), [("gzip", _zeros_gzip), ("br", _zeros_br)])
def test_a_bomb_never_inflates_past_the_limit(encoding: str, bomb: Callable[[int], bytes]) -> None:
    body = bomb(64 * MiB)
    assert len(body) < MiB
    tracemalloc.start()
    try:
        d = decode.decode(body, encoding, limit=MiB)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert d.over and not d.error
    assert d.data == bytes(MiB)
    # The limit plus a few output slices, not 64 MiB.
    assert peak < 4 * MiB
    _, size, complete = decode.digest(body, encoding, cap=4 * MiB)
    assert not complete and 4 * MiB < size < 5 * MiB


def test_identity_body_over_the_limit_is_cut() -> None:
    assert decode.decode(b"x" * 10, None, limit=4) == decode.Decoded(b"xxxx", over=True)


def test_digest_streams_the_decoded_body() -> None:
    body = gzip.compress(TEXT)
    assert decode.digest(body, "gzip", cap=MiB) == (hashlib.sha256(TEXT).hexdigest(), len(TEXT), True)
    assert decode.digest(body, "br", cap=MiB) == (hashlib.sha256(body).hexdigest(), len(body), False)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, ("", None)),
        ("", ("", None)),
        ("application/json", ("application/json", None)),
        ("Application/JSON; charset=UTF-8", ("application/json", "utf-8")),
        ('text/html;charset="ISO-8859-1"', ("text/html", "iso-8859-1")),
        ("text/plain; format=flowed; Charset = latin1 ", ("text/plain", "latin1")),
        ("garbage", ("", None)),
        ("text/plain; charset=", ("text/plain", None)),
    ],
)
def test_content_type(value: str | None, expected: tuple[str, str | None]) -> None:
    assert decode.content_type(value) == expected


@pytest.mark.parametrize(
    ("media", "data", "kind"),
    [
        ("application/json", b"{}", "json"),
        ("application/problem+json", b"{}", "json"),
        ("application/vnd.api+json", b"{}", "json"),
        ("text/html", b"<p>", "text"),
        ("application/xml", b"<a/>", "text"),
        ("application/atom+xml", b"<a/>", "text"),
        ("application/x-www-form-urlencoded", b"a=1", "text"),
        ("image/png", b"\x89PNG", "binary"),
        ("application/octet-stream", b"hello", "binary"),
        ("", b"plain words", "text"),
        ("", "caf\u00e9".encode() * 30000, "text"),  # a character cut at the sniffing window
        ("", b"\x00\x01\x02", "binary"),
        ("", b"\xff\xfe\xfa\xfb" * 10, "binary"),
    ],
)
def test_media_kind(media: str, data: bytes, kind: str) -> None:
    assert decode.media_kind(media, data) == kind


@pytest.mark.parametrize(
    ("data", "charset", "text"),
    [
        ("Grüße".encode("latin-1"), "iso-8859-1", "Grüße"),
        ("Grüße".encode("latin-1"), "latin1", "Grüße"),
        ("Grüße".encode(), None, "Grüße"),
        ("Grüße".encode(), "no-such-charset", "Grüße"),
        (b"\xef\xbb\xbf{}", "utf-8", "{}"),
        (b"caf\xe9", "utf-8", "caf\ufffd"),
        (b"aGk=", "base64", "aGk="),  # a bytes codec is no charset
        (b"uryyb", "rot13", "uryyb"),
    ],
)
def test_text_of(data: bytes, charset: str | None, text: str) -> None:
    assert decode.text_of(data, charset) == text


@pytest.mark.parametrize(
    ("encoding", "encode"),
    [("gzip", gzip.compress), ("deflate", zlib.compress), ("br", lambda d: brotli.compress(d, quality=5))],
)
def test_bodies_larger_than_one_output_slice_decode_whole(
    encoding: str, encode: Callable[[bytes], bytes]
) -> None:
    data = b"".join(
        b"row %d: %s\n" % (i, hashlib.sha256(b"%d" % i).hexdigest().encode()) for i in range(5000)
    )
    body = encode(data)
    assert decode.decode(body, encoding, limit=10 * MiB) == decode.Decoded(data)
    assert decode.digest(body, encoding, cap=10 * MiB) == (hashlib.sha256(data).hexdigest(), len(data), True)
