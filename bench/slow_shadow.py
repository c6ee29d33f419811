"""A shadow that answers late (`--delay 0.2`) or never (`--hang`), as its own process.

nginx cannot delay an answer without extra modules, so this small aiohttp server stands in
for a slow or stuck Workers port. It serves the same bodies as the equal shadow.
Run: python -m bench.slow_shadow --port P --root DIR (--delay S | --hang)
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

from aiohttp import web

BODIES = web.AppKey("bodies", dict[str, bytes])
DELAY = web.AppKey("delay", float)
HANG = web.AppKey("hang", bool)


async def answer(request: web.Request) -> web.Response:
    if request.app[HANG]:
        # Hold the connection open and never answer: only the caller's timeout ends this.
        await asyncio.Event().wait()
    await asyncio.sleep(request.app[DELAY])
    body = request.app[BODIES].get(request.path)
    if body is None:
        raise web.HTTPNotFound()
    return web.Response(body=body, content_type="application/json")


def build(root: Path, delay_s: float, hang: bool) -> web.Application:
    app = web.Application()
    app[BODIES] = {"/" + p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*.json")}
    app[DELAY] = delay_s
    app[HANG] = hang
    app.router.add_get("/{tail:.*}", answer)
    return app


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--root", type=Path, required=True, help="directory whose *.json files are served")
    p.add_argument("--delay", type=float, default=0.2, help="seconds before each answer")
    p.add_argument("--hang", action="store_true", help="never answer")
    args = p.parse_args()
    web.run_app(
        build(args.root, args.delay, args.hang), host="127.0.0.1", port=args.port, print=None, access_log=None
    )


if __name__ == "__main__":
    main()
