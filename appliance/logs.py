"""Logging: one JSON object per line in <home>/logs/appliance.log (rotated), readable text on the console."""

from __future__ import annotations

import json
import logging
import logging.handlers
import traceback
from datetime import UTC, datetime
from pathlib import Path

_RECORD_FIELDS = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime", "color_message"}


class JsonFormatter(logging.Formatter):
    """time, level, logger, message, then every ``extra=`` field (action, user, file, job, ...)."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update({k: v for k, v in vars(record).items() if k not in _RECORD_FIELDS})
        if record.exc_info:
            entry["exception"] = "".join(traceback.format_exception(*record.exc_info))
        return json.dumps(entry, default=str)


def file_handler(logs_dir: Path, level: str, max_bytes: int, backups: int) -> logging.Handler:
    logs_dir.mkdir(parents=True, exist_ok=True)
    handler = logging.handlers.RotatingFileHandler(
        logs_dir / "appliance.log", maxBytes=max_bytes, backupCount=backups, encoding="utf-8"
    )
    handler.setFormatter(JsonFormatter())
    handler.setLevel(level.upper())
    return handler


def console_handler(level: str) -> logging.Handler:
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    handler.setLevel(level.upper())
    return handler


def attach(handler: logging.Handler) -> None:
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(min(root.level or logging.WARNING, handler.level))
    logging.getLogger("huey").setLevel(logging.WARNING)  # huey logs every dequeue at INFO


def detach(handler: logging.Handler) -> None:
    logging.getLogger().removeHandler(handler)
    handler.close()
