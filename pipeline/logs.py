"""The job's logging: one ``musiclime`` logger, text for people, JSON lines for job logs
(``--log-format json``: one object per line with time, level, logger, message and the
record's fields, e.g. the periodic status line's counts)."""
from __future__ import annotations

import json
import logging
import sys
import time

from musiclime.choices import Choice

LOGGER = "musiclime"


class LogFormat(Choice):
    TEXT = "text"
    JSON = "json"


class LogLevel(Choice):
    DEBUG = "DEBUG"
    INFO = "INFO"
    WARNING = "WARNING"
    ERROR = "ERROR"


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc = {"time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
                       + f".{int(record.msecs):03d}Z",
               "level": record.levelname, "logger": record.name, "message": record.getMessage()}
        doc.update(getattr(record, "fields", {}) or {})
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        return json.dumps(doc, default=str)


class _Handler(logging.StreamHandler):
    """The handler :func:`configure` installs (and replaces when called again)."""


def configure(level: str = "INFO", fmt: str = "text", stream=None) -> logging.Logger:
    """(Re)configure the ``musiclime`` logger; returns it."""
    fmt = LogFormat.parse(fmt)
    logger = logging.getLogger(LOGGER)
    for h in list(logger.handlers):
        if isinstance(h, _Handler):
            logger.removeHandler(h)
    handler = _Handler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt is LogFormat.JSON
                         else logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    logger.addHandler(handler)
    logger.setLevel(LogLevel.parse(level.upper()).value)
    logger.propagate = False
    return logger


def get(name: str) -> logging.Logger:
    return logging.getLogger(f"{LOGGER}.{name}")
