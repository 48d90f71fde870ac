"""Logging setup for the server: stdlib :mod:`logging`, configured from :class:`LoggingConfig`.

The original server used Rust's ``tracing`` with ``show_target`` / ``show_thread_ids`` /
``show_location`` switches; we map them onto one stdlib handler on the root logger:

* levels: ``trace`` is a custom level ``TRACE = DEBUG - 5``; ``warn`` is ``WARNING``.
* text: ``2024-01-01T00:00:00.123Z  INFO [thread 1234] rusts.storage.wal wal.py:42: message``
  (the bracketed parts only when switched on).
* json: one JSON object per line with ``timestamp``, ``level``, ``message`` and, when switched on,
  ``target``, ``thread_id``, ``location``; ``extra=`` attributes and exceptions are included.

:func:`configure_logging` is idempotent: it replaces the handler it installed before, and leaves
handlers installed by others (pytest's capture, for example) alone.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import IO

from rusts.config import LoggingConfig

TRACE = logging.DEBUG - 5
logging.addLevelName(TRACE, "TRACE")

LEVELS = {
    "trace": TRACE,
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warn": logging.WARNING,
    "error": logging.ERROR,
}

_LEVEL_NAMES = {TRACE: "TRACE", logging.DEBUG: "DEBUG", logging.INFO: "INFO",
                logging.WARNING: "WARN", logging.ERROR: "ERROR", logging.CRITICAL: "ERROR"}

# Attributes every LogRecord has; anything else came from ``extra=``.
_STANDARD_ATTRS = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {
    "message", "asctime", "taskName"}


def _timestamp(record: logging.LogRecord) -> str:
    t = time.gmtime(record.created)
    return time.strftime("%Y-%m-%dT%H:%M:%S", t) + f".{int(record.msecs):03d}Z"


def _level_name(record: logging.LogRecord) -> str:
    return _LEVEL_NAMES.get(record.levelno, record.levelname)


class TextFormatter(logging.Formatter):
    """``timestamp LEVEL [thread id] target file:line: message`` on one line (plus traceback)."""

    def __init__(self, cfg: LoggingConfig) -> None:
        super().__init__()
        self.cfg = cfg

    def format(self, record: logging.LogRecord) -> str:
        parts = [_timestamp(record), f"{_level_name(record):>5}"]
        if self.cfg.show_thread_ids:
            parts.append(f"[thread {record.thread}]")
        prefix = []
        if self.cfg.show_target:
            prefix.append(record.name)
        if self.cfg.show_location:
            prefix.append(f"{record.filename}:{record.lineno}")
        if prefix:
            parts.append(" ".join(prefix) + ":")
        parts.append(record.getMessage())
        text = " ".join(parts)
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return text


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line."""

    def __init__(self, cfg: LoggingConfig) -> None:
        super().__init__()
        self.cfg = cfg

    def format(self, record: logging.LogRecord) -> str:
        obj: dict[str, object] = {"timestamp": _timestamp(record), "level": _level_name(record),
                                  "message": record.getMessage()}
        if self.cfg.show_target:
            obj["target"] = record.name
        if self.cfg.show_thread_ids:
            obj["thread_id"] = record.thread
        if self.cfg.show_location:
            obj["location"] = f"{record.pathname}:{record.lineno}"
        for key, value in vars(record).items():
            if key not in _STANDARD_ATTRS and key not in obj:
                obj[key] = value
        if record.exc_info:
            obj["exception"] = self.formatException(record.exc_info)
        return json.dumps(obj, default=str)


def configure_logging(cfg: LoggingConfig, stream: IO[str] | None = None) -> logging.Handler:
    """Install the server's log handler on the root logger.

    Args:
        cfg: The ``logging`` section of the configuration.
        stream: Where to write; stderr by default.

    Returns:
        The installed handler (replacing one installed by an earlier call).
    """
    root = logging.getLogger()
    for h in list(root.handlers):
        if getattr(h, "_rusts_handler", False):
            root.removeHandler(h)
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler._rusts_handler = True  # type: ignore[attr-defined]
    handler.setFormatter(JsonFormatter(cfg) if cfg.format == "json" else TextFormatter(cfg))
    root.addHandler(handler)
    root.setLevel(LEVELS[cfg.level])
    logging.captureWarnings(True)
    return handler
