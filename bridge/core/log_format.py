"""How the long-running processes (the broker, the site agent) format their log lines.

Two formats: ``text`` (the lines they always wrote) and ``json``: one JSON object per line with
stable field names, ``time`` (ISO 8601, UTC), ``level``, ``logger``, ``message`` and, when the
line is about a job, ``job_id``, so a log shipper can index lines without parsing messages. An
exception adds ``exception`` (its formatted traceback).

A line is about a job when its call passed ``extra={"job_id": ...}`` or, as every job event of
this project does, its message names the job id (a UUID); the first one is taken.

Both formats replace anything shaped like a broker token (``mbt_<id>_<secret>``) with
``mbt_<id>_<redacted>``: a token must never reach a log, even through a foreign library's
message. This module never adds handlers of its own; callers attach its formatters.
"""

from __future__ import annotations

import json
import logging
import re
from datetime import UTC, datetime
from typing import Any

TEXT = "text"
JSON = "json"
LOG_FORMATS = (TEXT, JSON)

_JOB_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")
# Broader than a valid token on purpose: a cut or mangled token is still a secret.
_TOKEN = re.compile(r"(mbt_[0-9a-f]{12}_)[A-Za-z0-9_-]+")


def redact(text: str) -> str:
    """``text`` with the secret part of every broker token replaced."""
    return _TOKEN.sub(r"\1<redacted>", text)


def job_id_of(record: logging.LogRecord, message: str) -> str | None:
    explicit = getattr(record, "job_id", None)
    if isinstance(explicit, str) and explicit:
        return explicit
    found = _JOB_ID.search(message)
    return found.group(0) if found else None


class TextFormatter(logging.Formatter):
    """``logging.Formatter`` with tokens redacted."""

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line (newlines in messages are escaped)."""

    def format(self, record: logging.LogRecord) -> str:
        message = redact(record.getMessage())
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": message,
        }
        job_id = job_id_of(record, message)
        if job_id is not None:
            line["job_id"] = job_id
        if record.exc_info:
            line["exception"] = redact(self.formatException(record.exc_info))
        return json.dumps(line, ensure_ascii=False, separators=(",", ":"))


def formatter(log_format: str, text_format: str) -> logging.Formatter:
    """The formatter for ``log_format`` (one of ``LOG_FORMATS``); ``text_format`` is the
    ``%``-style line of the text format."""
    if log_format == JSON:
        return JsonFormatter()
    if log_format == TEXT:
        return TextFormatter(text_format)
    raise ValueError(f"log format {log_format!r} is not one of {', '.join(LOG_FORMATS)}")


__all__ = ["JSON", "LOG_FORMATS", "TEXT", "JsonFormatter", "TextFormatter", "formatter", "redact"]
