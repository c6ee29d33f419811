"""Logging setup: one line per event, text for people or JSON for log pipelines.

Request-level events are not logged on the hot path (metrics count them); what is logged
goes through the redactor's patterns first, so a token in an error message stays out.
"""

from __future__ import annotations

import json
import logging
import sys
import time

from shadowproxy import config


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return json.dumps(doc)


class _RedactFilter(logging.Filter):
    def __init__(self, redact: config.Redact) -> None:
        super().__init__()
        from shadowproxy.redact import Redactor

        self._redactor = Redactor(redact)

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = self._redactor.text(record.getMessage())
        record.args = None
        return True


def setup_logging(cfg: config.Log, redact: config.Redact | None = None) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if cfg.format == "json":
        handler.setFormatter(_JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(_RedactFilter(redact or config.Redact()))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(cfg.level.upper())
    # aiohttp logs every failed request with its traceback at error level; we count those.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
