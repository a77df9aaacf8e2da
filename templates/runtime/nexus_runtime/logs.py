"""Structured JSON logs: one object per line, with the service and the current request id."""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime

from . import tracing

_RESERVED = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime", "taskName"}


class JsonFormatter(logging.Formatter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "service": self.service,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        trace = tracing.current.get()
        if trace is not None:
            entry["request_id"], entry["trace_id"] = trace.request_id, trace.trace_id
            if trace.client:
                entry["client"] = trace.client
        entry.update({k: v for k, v in vars(record).items() if k not in _RESERVED})
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


def logger(service: str, level: str, json_logs: bool) -> logging.Logger:
    """The service's logger. Handlers are set once per service name, so re-creating an app
    (tests, the embedded runner) does not duplicate lines."""
    log = logging.getLogger(f"nexus.{service}")
    log.setLevel(level)
    log.propagate = False
    if not log.handlers:
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(
            JsonFormatter(service) if json_logs else logging.Formatter("%(levelname)s %(name)s %(message)s")
        )
        log.addHandler(handler)
    return log
