"""How poolgate's log lines look: text for a terminal, or one JSON object per line for a log pipeline.

uvicorn's own lines (start-up, shut-down) go through the same handler, so a `LOG_FORMAT=json`
deployment never sees a line of another shape. httpx's request lines are kept to warnings:
they would repeat every key check's URL, which can carry an operator's `user:password@`.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from gateway.settings import Settings

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class JsonLines(logging.Formatter):
    """One JSON object per record: time (UTC, ISO 8601), level, logger, message, and the exception if any."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def configure_logging(settings: Settings) -> None:
    """The root logger's one handler, on stderr, in LOG_FORMAT at LOG_LEVEL; uvicorn's loggers pass through it."""
    handler = logging.StreamHandler()
    handler.setFormatter(JsonLines() if settings.log_format == "json" else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(settings.log_level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        uvicorn_logger = logging.getLogger(name)
        uvicorn_logger.handlers.clear()
        uvicorn_logger.propagate = True
    logging.getLogger("httpx").setLevel(logging.WARNING)
