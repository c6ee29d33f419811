"""A shadow that answers late (`--delay 0.2`) or never (`--hang`), as its own process.

nginx cannot delay an answer without extra modules, so this stands in for a slow or stuck
Workers port. It serves the same bodies as the equal shadow.

It is a bare asyncio protocol on uvloop, not an aiohttp app: the benchmark shares 2 cores
between wrk, nginx, the proxy and this server, and an aiohttp server answering ~1,300
delayed requests a second took CPU the proxy under test needed. It speaks just enough
HTTP/1.1 for the proxy's keep-alive GETs (no request bodies, no pipelining).
Run: python -m bench.slow_shadow --port P --root DIR (--delay S | --hang)
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path
from typing import cast

import uvloop

MAX_HEAD = 64 * 1024


def response(status: str, body: bytes) -> bytes:
    head = f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    return head.encode() + body


class Late(asyncio.Protocol):
    def __init__(self, answers: dict[str, bytes], delay_s: float | None) -> None:
        self._answers = answers
        self._delay_s = delay_s  # None: never answer
        self._buf = b""
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, only alike.
        self._transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self._buf += data
        while (end := self._buf.find(b"\r\n\r\n")) >= 0:
            head, self._buf = self._buf[:end], self._buf[end + 4 :]
            target = head.split(b" ", 2)[1].decode("latin-1") if head.count(b" ") >= 2 else ""
            answer = self._answers.get(target.partition("?")[0]) or response("404 Not Found", b"{}")
            if self._delay_s is not None:
                asyncio.get_running_loop().call_later(self._delay_s, self._send, answer)
        if len(self._buf) > MAX_HEAD and self._transport is not None:
            self._transport.close()

    def _send(self, answer: bytes) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(answer)

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None


def answers(root: Path) -> dict[str, bytes]:
    return {
        "/" + p.relative_to(root).as_posix(): response("200 OK", p.read_bytes()) for p in root.rglob("*.json")
    }


async def serve(port: int, answers: dict[str, bytes], delay_s: float | None) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: Late(answers, delay_s), "127.0.0.1", port)
    async with server:
        await server.serve_forever()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--root", type=Path, required=True, help="directory whose *.json files are served")
    p.add_argument("--delay", type=float, default=0.2, help="seconds before each answer")
    p.add_argument("--hang", action="store_true", help="never answer")
    args = p.parse_args()
    uvloop.run(serve(args.port, answers(args.root), None if args.hang else args.delay))


if __name__ == "__main__":
    main()
