"""Logging set-up of the sidecars (and the API): plain text for people, JSON lines for collectors."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class JsonLogFormatter(logging.Formatter):
    """One JSON object per record: time (UTC), level, logger, message, and the exception if any."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, tz=UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if (request_id := getattr(record, "request_id", None)) is not None:
            entry["request_id"] = request_id
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


class TextLogFormatter(logging.Formatter):
    """TEXT_FORMAT, with ` [request <id>]` at the end of a record logged during a request."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        request_id = getattr(record, "request_id", None)
        return f"{text} [request {request_id}]" if request_id else text


def configure_logging(level: str, fmt: str = "text") -> None:
    """Root logging at `level` (a name such as "info"), as `fmt` "text" or "json", on stderr."""
    from .request_policy import RequestIdFilter

    handler = logging.StreamHandler()
    handler.setFormatter(JsonLogFormatter() if fmt == "json" else TextLogFormatter())
    handler.addFilter(RequestIdFilter())
    logging.basicConfig(level=getattr(logging, level.upper(), logging.INFO), handlers=[handler])
