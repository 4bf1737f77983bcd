"""Logging: one JSON object per line in <home>/logs/appliance.log (rotated), readable text on the console, and no
secret in either.

Every line is redacted as it is formatted: the values of query parameters named like secrets (``access_token``,
``key``, ``password``, ...) and every secret this process made (the API token, login keys) become ``[redacted]``,
whatever logger wrote the line. When the log file cannot be written (a full disk), records go to stderr instead."""

from __future__ import annotations

import json
import logging
import logging.handlers
import re
import sys
import traceback
from datetime import UTC, datetime
from pathlib import Path

_RECORD_FIELDS = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime", "color_message"}
REDACTED = "[redacted]"
_SECRET_PARAMETER = re.compile(
    r"(?i)([?&;](?:access_token|token|key|api_?key|password|passwd|secret|session|auth|signature)=)[^&;\s\"'#]*"
)
_MIN_SECRET_LENGTH = 16
_secrets: frozenset[str] = frozenset()


def register_secret(value: str) -> None:
    """Never write ``value`` into a log line."""
    global _secrets
    if len(value) >= _MIN_SECRET_LENGTH:
        _secrets = _secrets | {value}


def redact(text: str) -> str:
    text = _SECRET_PARAMETER.sub(rf"\1{REDACTED}", text)
    for secret in _secrets:
        if secret in text:
            text = text.replace(secret, REDACTED)
    return text


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
        return redact(json.dumps(entry, default=str))


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


class ConsoleHandler(logging.StreamHandler):
    """Readable lines on stderr."""


class LogFile(logging.handlers.RotatingFileHandler):
    """The rotated JSON log. A record it cannot write (disk full, folder removed) goes to stderr, unless the console
    already shows it, and the first failure says so once; it says so again when the file can be written again."""

    def __init__(self, path: Path, max_bytes: int, backups: int) -> None:
        super().__init__(path, maxBytes=max_bytes, backupCount=backups, encoding="utf-8")
        self.failing = False
        self._failed = False

    def emit(self, record: logging.LogRecord) -> None:
        self._failed = False
        super().emit(record)
        if self.failing and not self._failed:
            self.failing = False
            _to_stderr(f"caesar-appliance: the log {self.baseFilename} can be written again")

    def handleError(self, record: logging.LogRecord) -> None:
        self._failed = True
        if not self.failing:
            self.failing = True
            reason = sys.exc_info()[1]
            _to_stderr(
                f"caesar-appliance: cannot write the log {self.baseFilename} ({reason}); "
                "its records go to stderr until it can"
            )
        if not _console_shows(record):
            try:
                _to_stderr(self.format(record))
            except Exception:  # a record that cannot even be formatted: nothing more to do for it
                pass


def _to_stderr(line: str) -> None:
    try:
        sys.stderr.write(line + "\n")
        sys.stderr.flush()
    except (OSError, ValueError):  # stderr closed or full: there is nowhere left to say it
        pass


def _console_shows(record: logging.LogRecord) -> bool:
    return any(
        isinstance(h, ConsoleHandler) and record.levelno >= h.level and h.stream in (sys.stderr, sys.__stderr__)
        for h in logging.getLogger().handlers
    )


def file_handler(logs_dir: Path, level: str, max_bytes: int, backups: int) -> logging.Handler:
    logs_dir.mkdir(parents=True, exist_ok=True)
    handler = LogFile(logs_dir / "appliance.log", max_bytes, backups)
    handler.setFormatter(JsonFormatter())
    handler.setLevel(level.upper())
    return handler


def console_handler(level: str) -> logging.Handler:
    handler = ConsoleHandler()
    handler.setFormatter(TextFormatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
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
