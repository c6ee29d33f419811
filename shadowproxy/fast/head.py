"""The start line and header lines of an HTTP/1.1 message, as the fast client (requests)
and server (responses) both write them: headers in the order given, names as given."""

from __future__ import annotations

from collections.abc import Sequence


def head_lines(start_line: str, headers: Sequence[tuple[str, str]]) -> tuple[list[str], bool]:
    """The lines so far (the caller adds framing and the blank line), and whether the
    headers already carry a Content-Length."""
    # A comprehension, then a search that usually runs to the end: 1.3 µs against 1.8 µs
    # for one loop doing both (timeit, 8 headers); this runs three times per shadowed request.
    lines = [start_line, *[f"{k}: {v}\r\n" for k, v in headers]]
    for k, _ in headers:
        if len(k) == 14 and k.lower() == "content-length":
            return lines, True
    return lines, False
