"""The jobs this bridge node ran, read back from the per-job logs (``bridge.client.job_log``).

Each run leaves ``<job id>.log`` and its summary ``<job id>.json``. A log without a summary
(written before summaries existed, or its summary could not be written) is still listed, with
what its lines say: the ``running COMMAND at site SITE`` line and the final ``exit N: reason``
line, times from the first and last line.

This module only reads: it never writes, removes or follows a symlink in the log directory,
and skips any file it cannot read or parse instead of failing the listing.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import stat
import time
from dataclasses import asdict, dataclass
from typing import Any

from bridge.client.job_log import SUMMARY_SCHEMA, summary_path

_JOB_FILE = re.compile(r"([0-9a-f]{8}(?:-[0-9a-f]{4}){3}-[0-9a-f]{12})\.(?:log|json)")
# The lines ``bridge.client.run`` and ``job_log`` write; "%(asctime)s LEVEL message".
_LINE_TIME = re.compile(r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),\d+ ")
_RUNNING = re.compile(r": running (\S+) at site (\S+)$")
_EXIT = re.compile(r": exit (\d+): (.*)$")
_MAX_LOG_READ = 4 << 20  # a job log is small; a huge file is read only this far


@dataclass(frozen=True)
class JobEntry:
    job_id: str
    site: str
    command: str
    started_at: float | None
    ended_at: float | None
    exit_code: int | None
    reason: str | None
    output_dir: str
    log: str | None

    @property
    def duration(self) -> float | None:
        if self.started_at is None or self.ended_at is None:
            return None
        return max(0.0, self.ended_at - self.started_at)

    def document(self) -> dict[str, Any]:
        doc = asdict(self)
        doc["duration"] = self.duration
        return doc


def read_history(directory: str) -> list[JobEntry]:
    """Every job with a log or a summary in ``directory``, the newest start first."""
    try:
        names = os.listdir(directory)
    except OSError:
        return []
    ids = sorted({m.group(1) for m in map(_JOB_FILE.fullmatch, names) if m is not None})
    entries = [entry for entry in (read_entry(directory, job_id) for job_id in ids) if entry]
    entries.sort(key=lambda e: e.started_at or 0.0, reverse=True)
    return entries


def read_entry(directory: str, job_id: str) -> JobEntry | None:
    """The job's entry from its summary, else from its log; None when neither can be read."""
    log_path = os.path.join(directory, f"{job_id}.log")
    has_log = _regular_file(log_path)
    summary = _read_summary(summary_path(directory, job_id))
    if summary is not None:
        return _from_summary(job_id, summary, log_path if has_log else None)
    return _from_log(job_id, log_path) if has_log else None


def read_log(entry: JobEntry) -> str:
    """The job's log text ('' when it has none or it cannot be read)."""
    if entry.log is None or not _regular_file(entry.log):
        return ""
    try:
        with open(entry.log, encoding="utf-8", errors="replace") as handle:
            return handle.read(_MAX_LOG_READ)
    except OSError:
        return ""


def _regular_file(path: str) -> bool:
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except OSError:
        return False


def _read_summary(path: str) -> dict[str, Any] | None:
    if not _regular_file(path):
        return None
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("schema") != SUMMARY_SCHEMA:
        return None
    return data


def _from_summary(job_id: str, data: dict[str, Any], log_path: str | None) -> JobEntry:
    def number(key: str) -> float | None:
        value = data.get(key)
        return float(value) if isinstance(value, int | float) else None

    def text(key: str) -> str:
        value = data.get(key)
        return value if isinstance(value, str) else ""

    code = data.get("exit_code")
    reason = data.get("reason")
    return JobEntry(job_id, text("site"), text("command"), number("started_at"),
                    number("ended_at"), code if isinstance(code, int) else None,
                    reason if isinstance(reason, str) else None, text("output_dir"),
                    log_path)  # fmt: skip


def _from_log(job_id: str, path: str) -> JobEntry:
    site = command = ""
    code: int | None = None
    reason: str | None = None
    first = last = None
    with contextlib.suppress(OSError), open(path, encoding="utf-8", errors="replace") as handle:
        for line in handle.read(_MAX_LOG_READ).splitlines():
            stamp = _line_time(line)
            if stamp is not None:
                first = stamp if first is None else first
                last = stamp
            if (running := _RUNNING.search(line)) is not None and job_id in line:
                command, site = running.group(1), running.group(2)
            if (ended := _EXIT.search(line)) is not None and job_id in line:
                code, reason = int(ended.group(1)), ended.group(2)
    return JobEntry(job_id, site, command, first, last if code is not None else None, code,
                    reason, "", path)  # fmt: skip


def _line_time(line: str) -> float | None:
    found = _LINE_TIME.match(line)
    if found is None:
        return None
    try:
        return time.mktime(time.strptime(found.group(1), "%Y-%m-%d %H:%M:%S"))
    except ValueError:
        return None
