"""`shadowproxy report`: gather evidence from the store or Prometheus, judge it, render it.

Every way the source can fail (no store file, wrong schema, Prometheus down, a bad window)
is a usage error, exit 2, with one line naming it: a pipeline must tell "NO-GO" (1) from
"could not look" (2).
"""

from __future__ import annotations

import sys

from shadowproxy import config
from shadowproxy.evidence import Evidence
from shadowproxy.report import EXIT_USAGE, run_report


def report_command(
    cfg: config.Config,
    *,
    store: str | None,
    prometheus: str | None,
    window: str,
    fmt: str,
    output: str | None,
) -> int:
    try:
        evidence = load_evidence(cfg, store=store, prometheus=prometheus, window=window)
    except EvidenceError as e:
        print(f"shadowproxy report: {e}", file=sys.stderr)
        return EXIT_USAGE
    return run_report(cfg, evidence, fmt, output)


class EvidenceError(Exception):
    pass


def load_evidence(cfg: config.Config, *, store: str | None, prometheus: str | None, window: str) -> Evidence:
    declared = [r.name for r in cfg.routes]
    if prometheus is not None:
        from shadowproxy.promsource import PrometheusError, evidence_from_prometheus

        try:
            return evidence_from_prometheus(prometheus, window, cfg)
        except (ValueError, PrometheusError) as e:
            raise EvidenceError(str(e)) from None
    from shadowproxy.redact import Redactor
    from shadowproxy.store import Store, StoreError

    path = store or cfg.store.path
    reader = Store(path, cfg.store, Redactor(cfg.redact), cfg.rules_for)
    try:
        return reader.evidence(routes=declared, noise=cfg.noise, explain=True)
    except StoreError as e:
        raise EvidenceError(f"cannot read the store {path}: {e}") from None
