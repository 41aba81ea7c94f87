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

Under systemd (``JOURNAL_STREAM`` names the stream the line goes to), text lines carry no
timestamp of ours, since journald stamps every line, and start with a ``<N>`` syslog priority,
which journald reads as the line's level (``journalctl -p warning`` then works).
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
from datetime import UTC, datetime
from typing import IO, Any

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


# syslog priorities (RFC 5424) of our levels, for journald's "<N>" line prefix.
_PRIORITY = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3,
             logging.CRITICAL: 2}  # fmt: skip
_ASCTIME = re.compile(r"%\(asctime\)s\s*")


class JournalFormatter(TextFormatter):
    """Text lines for journald: a priority prefix, no timestamp (give a format without it)."""

    def format(self, record: logging.LogRecord) -> str:
        priority = _PRIORITY.get(record.levelno, 6 if record.levelno < logging.WARNING else 3)
        return f"<{priority}>{super().format(record)}"


def under_journal(stream: IO[str] | None = None) -> bool:
    """Whether ``stream`` (stderr) is the journal stream systemd gave this process.

    systemd sets ``JOURNAL_STREAM=<device>:<inode>`` of that stream; a child whose stderr was
    redirected elsewhere inherits the variable but not the stream, so both are compared."""
    device, _, inode = os.environ.get("JOURNAL_STREAM", "").partition(":")
    if not (device.isdigit() and inode.isdigit()):
        return False
    try:
        found = os.fstat((stream if stream is not None else sys.stderr).fileno())
    except (OSError, ValueError, AttributeError):  # closed, or not a real file
        return False
    return (found.st_dev, found.st_ino) == (int(device), int(inode))


def formatter(log_format: str, text_format: str, stream: IO[str] | None = None
              ) -> logging.Formatter:  # fmt: skip
    """The formatter for ``log_format`` (one of ``LOG_FORMATS``) on ``stream`` (stderr);
    ``text_format`` is the ``%``-style line of the text format."""
    if log_format == JSON:
        return JsonFormatter()
    if log_format == TEXT and under_journal(stream):
        return JournalFormatter(_ASCTIME.sub("", text_format))
    if log_format == TEXT:
        return TextFormatter(text_format)
    raise ValueError(f"log format {log_format!r} is not one of {', '.join(LOG_FORMATS)}")


__all__ = ["JSON", "LOG_FORMATS", "TEXT", "JournalFormatter", "JsonFormatter", "TextFormatter",
           "formatter", "redact", "under_journal"]  # fmt: skip
