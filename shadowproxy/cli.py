"""Command-line front: run, check-config, report, demo.

Exit codes: 0 success (report: GO), 1 report NO-GO, 2 usage or config error,
3 report INCONCLUSIVE. A user mistake gets a message naming it, never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Sequence

from shadowproxy import __version__, config
from shadowproxy.logs import setup_logging
from shadowproxy.store_schema import StoreError

log = logging.getLogger("shadowproxy")
EXIT_USAGE = 2


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="shadowproxy",
        description="Shadow live traffic to a new backend, compare the answers, and gate the cutover.",
    )
    p.add_argument("--version", action="version", version=f"shadowproxy {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser(
        "run",
        help="run the proxy (primary path + shadowing)",
        description="Run the sidecar: proxy on listen:, admin API and /metrics on admin:.",
    )
    run.add_argument("-c", "--config", required=True, help="YAML config file")

    check = sub.add_parser(
        "check-config",
        help="validate a config file and exit",
        description="Validate a config: exit 0 with a summary, or 2 with every error.",
    )
    check.add_argument("-c", "--config", required=True, help="YAML config file")

    rep = sub.add_parser(
        "report",
        help="go/no-go verdict per route and overall",
        description="Judge the recorded evidence. Exit 0 GO, 1 NO-GO, 3 INCONCLUSIVE, 2 error.",
    )
    rep.add_argument("-c", "--config", required=True, help="YAML config file (criteria, routes)")
    src = rep.add_mutually_exclusive_group()
    src.add_argument("--store", help="SQLite store of one instance (default: store.path from the config)")
    src.add_argument("--prometheus", metavar="URL", help="Prometheus base URL: counts across every instance")
    rep.add_argument("--window", default="1h", help="with --prometheus: range for increase() (default 1h)")
    rep.add_argument("--format", choices=("md", "json", "html"), default="md")
    rep.add_argument("-o", "--output", help="write the report here instead of standard output")

    demo = sub.add_parser(
        "demo",
        help="run the whole product on simulated Deno and Workers backends",
        description="Start simulated backends and the proxy, drive traffic, print a report.",
    )
    demo.add_argument("--requests", type=int, default=4000, help="how many requests to send (default 4000)")
    demo.add_argument("--keep-running", action="store_true", help="leave everything up for exploration")
    demo.add_argument("--out-dir", default=".", help="where report.md and report.html go (default .)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "check-config":
            cfg = config.load(args.config)
            print(config.summary(cfg))
            return 0
        if args.command == "run":
            cfg = config.load(args.config)
            setup_logging(cfg.log, cfg.redact)
            from shadowproxy.serve import serve_forever

            return serve_forever(cfg)
        if args.command == "report":
            cfg = config.load(args.config)
            from shadowproxy.report_cmd import report_command

            return report_command(
                cfg,
                store=args.store,
                prometheus=args.prometheus,
                window=args.window,
                fmt=args.format,
                output=args.output,
            )
        if args.command == "demo":
            from shadowproxy.demo.run import run_demo

            return int(run_demo(requests=args.requests, keep_running=args.keep_running, out_dir=args.out_dir))
    except config.ConfigError as e:
        print(f"shadowproxy: {len(e.errors)} error(s) in the config:", file=sys.stderr)
        for err in e.errors:
            print(f"  {e.source}: {err}", file=sys.stderr)
        return EXIT_USAGE
    except StoreError as e:
        # `run` with a store.path it cannot write, or no temporary directory for the writer.
        print(f"shadowproxy: store: {e}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130
    raise AssertionError(f"unhandled command {args.command}")  # pragma: no cover


def use_uvloop() -> bool:
    try:
        import uvloop
    except ImportError:
        return False
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    return True
