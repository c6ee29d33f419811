"""The start line and header lines of an HTTP/1.1 message, as the fast client (requests)
and server (responses) both write them: headers in the order given, names as given."""

from __future__ import annotations

from collections.abc import Iterable


def head_lines(start_line: str, headers: Iterable[tuple[str, str]]) -> tuple[list[str], bool]:
    """The lines so far (the caller adds framing and the blank line), and whether the
    headers already carry a Content-Length."""
    lines = [start_line]
    has_length = False
    for k, v in headers:
        if len(k) == 14 and k.lower() == "content-length":
            has_length = True
        lines.append(f"{k}: {v}\r\n")
    return lines, has_length
