"""The optional compiled build: with SHADOWPROXY_COMPILE=1, the request path is compiled with
mypyc (part of mypy) into C extensions; without it, the package installs as pure Python.

Compiled, a proxied request costs about a third fewer instructions (`make bench-ir`). The
Docker image ships it; `make test-compiled` runs the whole suite against it, because compiled
code checks declared types at run time where Python would not. The metadata stays in
pyproject.toml: this file only adds the extension modules.
"""

from __future__ import annotations

import os

from setuptools import setup

# What a proxied request runs through: the fast engine and the steps both engines share,
# shadow dispatch, compare, and the metrics and store tallies. Not here: app (its async
# generator cannot be compiled), the aiohttp engine (proxy, websocket: the fast engine is
# the one that must be fast) and everything off the request path (config, gate, reports),
# where compiling buys nothing. store_pairs is not on the request path, but the writer
# thread runs it holding the GIL the event loop waits for.
COMPILED = [
    "shadowproxy/breaker.py",
    "shadowproxy/buckets.py",
    "shadowproxy/compare.py",
    "shadowproxy/decode.py",
    "shadowproxy/exchange.py",
    "shadowproxy/fast/body.py",
    "shadowproxy/fast/client.py",
    "shadowproxy/fast/conn.py",
    "shadowproxy/fast/deadlines.py",
    "shadowproxy/fast/handler.py",
    "shadowproxy/fast/head.py",
    "shadowproxy/fast/server.py",
    "shadowproxy/fast/upstream.py",
    "shadowproxy/fast/wire.py",
    "shadowproxy/forwarding.py",
    "shadowproxy/jsondiff.py",
    "shadowproxy/jsonpath.py",
    "shadowproxy/memo.py",
    "shadowproxy/metrics.py",
    "shadowproxy/noise.py",
    "shadowproxy/plain.py",
    "shadowproxy/recording.py",
    "shadowproxy/responses.py",
    "shadowproxy/routes.py",
    "shadowproxy/shadow.py",
    "shadowproxy/store.py",
    "shadowproxy/store_delta.py",
    "shadowproxy/store_pairs.py",
    "shadowproxy/tasks.py",
    "shadowproxy/transport.py",
    "shadowproxy/value.py",
]


def ext_modules() -> list[object]:
    if os.environ.get("SHADOWPROXY_COMPILE") != "1":
        return []
    from mypyc.build import mypycify

    return list(mypycify(COMPILED, opt_level="3"))


setup(ext_modules=ext_modules())
