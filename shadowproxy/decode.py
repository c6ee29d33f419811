"""Turn captured body bytes into something comparable: undo Content-Encoding, find the charset,
classify the media type. Bounded: a compressed bomb never inflates past the limit asked for.
"""

from __future__ import annotations

import codecs
import functools
import hashlib
import itertools
import zlib
from collections.abc import Callable, Iterator
from typing import Final, Literal

import brotli

from shadowproxy.value import Value

MediaKind = Literal["json", "text", "binary"]

# Output is produced in slices this big, so memory stays bounded however the input inflates.
_CHUNK = 64 * 1024
_GZIP_OR_ZLIB = 32 + zlib.MAX_WBITS  # zlib auto-detects the gzip or zlib header
_RAW_DEFLATE = -zlib.MAX_WBITS

_TEXT_TYPES = frozenset(
    {
        "application/xml",
        "application/javascript",
        "application/ecmascript",
        "application/x-www-form-urlencoded",
        "application/x-ndjson",
        "application/yaml",
        "application/graphql",
        "image/svg+xml",
    }
)


class DecodeError(Exception):
    pass


class Decoded(Value):
    __match_args__ = ("data", "over", "error")

    def __init__(self, data: bytes, over: bool = False, error: str = "") -> None:
        self.data: Final = data  # decoded bytes, at most the limit asked for
        self.over: Final = over  # the decoded body is larger than the limit (data is its first bytes)
        self.error: Final = error  # why decoding failed; data then holds the bytes as received


def codings(content_encoding: str | None) -> tuple[str, ...]:
    """The codings applied, in the order they were applied (`gzip, br` = gzip first)."""
    if not content_encoding:
        return ()
    found = (c.strip().lower() for c in content_encoding.split(","))
    return tuple(c for c in found if c and c != "identity")


def decode(body: bytes, content_encoding: str | None, limit: int) -> Decoded:
    """Undo the content codings, keeping at most `limit` decoded bytes."""
    if not codings(content_encoding):
        return Decoded(body[:limit], over=len(body) > limit)
    out = bytearray()
    try:
        for chunk in _decoded_chunks(body, content_encoding):
            out += chunk
            if len(out) > limit:
                return Decoded(bytes(out[:limit]), over=True)
    except DecodeError as e:
        return Decoded(body[:limit], over=len(body) > limit, error=str(e))
    return Decoded(bytes(out))


def digest(body: bytes, content_encoding: str | None, cap: int) -> tuple[str, int, bool]:
    """sha256 of the decoded body, streamed so memory stays flat: (hex, bytes hashed, complete).

    Stops after `cap` decoded bytes (incomplete) so a bomb costs bounded CPU as well.
    """
    h = hashlib.sha256()
    size = 0
    try:
        for chunk in _decoded_chunks(body, content_encoding):
            h.update(chunk)
            size += len(chunk)
            if size > cap:
                return h.hexdigest(), size, False
    except DecodeError:
        return hashlib.sha256(body).hexdigest(), len(body), False
    return h.hexdigest(), size, True


def _decoded_chunks(body: bytes, content_encoding: str | None) -> Iterator[bytes]:
    stream: Iterator[bytes] = iter((body,))
    # The last coding applied is the first to undo.
    for coding in reversed(codings(content_encoding)):
        stream = _decoder(coding)(stream)
    return stream


def _decoder(coding: str) -> Callable[[Iterator[bytes]], Iterator[bytes]]:
    if coding in ("gzip", "x-gzip"):
        return _inflate
    if coding == "deflate":
        return _deflate
    if coding == "br":
        return _unbrotli
    raise DecodeError(f"unsupported content-encoding {coding!r}")


def _inflate(chunks: Iterator[bytes], wbits: int = _GZIP_OR_ZLIB) -> Iterator[bytes]:
    d = zlib.decompressobj(wbits)
    try:
        for chunk in chunks:
            data = chunk
            while data:
                out = d.decompress(data, _CHUNK)
                if out:
                    yield out
                data = d.unconsumed_tail
                if d.eof and d.unused_data:
                    # A gzip body may be several members back to back.
                    data, d = d.unused_data, zlib.decompressobj(wbits)
        tail = d.flush()
    except zlib.error as e:
        raise DecodeError(f"cannot decode {'deflate' if wbits < 0 else 'gzip'} body: {e}") from None
    if tail:
        yield tail
    if not d.eof:
        raise DecodeError("compressed body ends early")


def _deflate(chunks: Iterator[bytes]) -> Iterator[bytes]:
    # `deflate` is meant to be zlib-wrapped, but servers send raw deflate often enough that
    # browsers accept both; the RFC 1950 header (method 8, check bits) tells them apart.
    head = b""
    for chunk in chunks:
        head += chunk
        if len(head) >= 2:
            break
    wrapped = len(head) >= 2 and head[0] & 0x0F == 8 and (head[0] << 8 | head[1]) % 31 == 0
    return _inflate(itertools.chain((head,), chunks), _GZIP_OR_ZLIB if wrapped else _RAW_DEFLATE)


def _unbrotli(chunks: Iterator[bytes]) -> Iterator[bytes]:
    d = brotli.Decompressor()
    try:
        for chunk in chunks:
            out = d.process(chunk, output_buffer_limit=_CHUNK)
            while True:
                if out:
                    yield out
                if d.can_accept_more_data():
                    break
                out = d.process(b"", output_buffer_limit=_CHUNK)
        # Input all taken is not output all given: drain what the decoder still holds.
        while not d.is_finished():
            out = d.process(b"", output_buffer_limit=_CHUNK)
            if not out:
                break
            yield out
    except brotli.error as e:
        raise DecodeError(f"cannot decode br body: {e}") from None
    if not d.is_finished():
        raise DecodeError("br body ends early")


# --------------------------------------------------------------------------- media types


def content_type(value: str | None) -> tuple[str, str | None]:
    """(`type/subtype` lowercased, charset or None) from a Content-Type value."""
    if not value:
        return "", None
    media, *params = value.split(";")
    media = media.strip().lower()
    charset = None
    for param in params:
        name, eq, val = param.partition("=")
        if eq and name.strip().lower() == "charset":
            charset = val.strip().strip("\"'").lower() or None
    return (media if "/" in media else ""), charset


def media_kind(media: str, data: bytes) -> MediaKind:
    if media.endswith(("/json", "+json")):
        return "json"
    if media.startswith("text/") or media in _TEXT_TYPES or media.endswith("+xml"):
        return "text"
    if media:
        return "binary"
    # No Content-Type: text when it reads as UTF-8 without control bytes, else binary.
    try:
        text = data[:_CHUNK].decode("utf-8")
    except UnicodeDecodeError as e:
        # A multi-byte character cut at the slice end is still text.
        if e.start < len(data[:_CHUNK]) - 3:
            return "binary"
        text = data[: e.start].decode("utf-8")
    return "binary" if "\x00" in text else "text"


@functools.lru_cache(maxsize=64)
def charset_codec(charset: str | None, default: str = "utf-8") -> str:
    """A Python text codec for a charset; unknown ones fall back to `default`.

    Python also has bytes-to-bytes codecs (`base64`, `zlib`, `rot13`) that `bytes.decode`
    refuses: a charset naming one is as unknown as a misspelt one.
    """
    if charset:
        try:
            name = codecs.lookup(charset).name
            b"a".decode(name, "replace")
            return name
        except LookupError:
            pass
    return default


def text_of(data: bytes, charset: str | None) -> str:
    codec = charset_codec(charset)
    if codec == "utf-8" and data.startswith(codecs.BOM_UTF8):
        data = data[len(codecs.BOM_UTF8) :]
    return data.decode(codec, errors="replace")
