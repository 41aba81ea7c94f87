"""The audit log's files and hash chain: appending a line durably, and reading lines back.

One file per UTC day, ``audit-YYYY-MM-DD.jsonl`` in the audit dir (0700), each opened with
``O_APPEND`` and created 0600 by the site account. Every line is one JSON object whose ``prev``
is the SHA-256 (hex) of the previous line's bytes (without its newline) and whose ``seq`` is one
more than the previous line's; the first line of a day's file chains to the last line of the
previous file, so rotation keeps the chain, and the very first line chains to ``GENESIS``.

An append holds an exclusive ``flock`` on the dir's lock file (site entries are separate
processes, an agent runs jobs in threads), writes the whole line, ``fsync``s it and returns only
then; a failed or short write is cut off again (``ftruncate``) so no half line stays behind.

Never: rewrite or reorder a line, follow a symlink to a log file, or send a line anywhere.
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import hashlib
import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from bridge.core.errors import AuditFailed

GENESIS = "0" * 64  # the ``prev`` of the very first line
FILE_PATTERN = re.compile(r"audit-(\d{4}-\d{2}-\d{2})\.jsonl")
LOCK_FILE = ".audit.lock"
# The writer reads a file's end backwards in blocks this big until it holds the whole last line.
_TAIL_BLOCK = 8192


def line_hash(line: bytes) -> str:
    """The SHA-256 a following line carries as ``prev`` (the line without its newline)."""
    return hashlib.sha256(line.rstrip(b"\n")).hexdigest()


def encode(entry: dict[str, Any]) -> bytes:
    """One line: compact, ASCII-only JSON in the key order given, plus the newline."""
    return json.dumps(entry, separators=(",", ":"), ensure_ascii=True).encode("ascii") + b"\n"


def utc_now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def timestamp(moment: datetime.datetime) -> str:
    """``2026-12-03T11:52:07.123456Z``: UTC, microseconds, sortable as text."""
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def log_files(directory: str) -> list[str]:
    """The day files in ``directory``, oldest first (the names sort by date)."""
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return []
    return sorted(os.path.join(directory, n) for n in names if FILE_PATTERN.fullmatch(n))


@dataclass(frozen=True)
class Tail:
    """Where the chain ends: the next line's ``seq`` and ``prev``."""

    seq: int
    prev: str


class AuditWriter:
    """Appends lines to the chain in ``directory``; ``append`` raises ``AuditFailed``."""

    def __init__(self, directory: str) -> None:
        self.directory = directory

    def append(
        self, fields: dict[str, Any], moment: datetime.datetime | None = None
    ) -> dict[str, Any]:
        """Add ``ts``, ``seq`` and ``prev`` to ``fields`` and append it; the line is on disk
        when this returns. Returns the entry as written."""
        moment = moment or utc_now()
        try:
            os.makedirs(self.directory, mode=0o700, exist_ok=True)
            with self._locked():
                files = log_files(self.directory)
                tail = _tail(files[-1]) if files else Tail(1, GENESIS)
                entry = {"ts": timestamp(moment), "seq": tail.seq, **fields, "prev": tail.prev}
                _append_line(self._target(files, moment), encode(entry))
        except OSError as exc:
            raise AuditFailed(
                f"the site's audit log cannot be written ({exc.strerror or exc})",
                path=self.directory,
            ) from exc
        return entry

    def _target(self, files: list[str], moment: datetime.datetime) -> str:
        today = os.path.join(self.directory, f"audit-{moment:%Y-%m-%d}.jsonl")
        # A clock set back must not put lines into an older file than the chain's last one.
        return max([today, *files[-1:]])

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        flags = os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW
        fd = os.open(os.path.join(self.directory, LOCK_FILE), flags, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # releases the lock


def _append_line(path: str, line: bytes) -> None:
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW
    created = not os.path.exists(path)
    fd = os.open(path, flags, 0o600)
    try:
        start = os.fstat(fd).st_size
        try:
            _write_all(fd, line)
            os.fsync(fd)
        except OSError:
            with contextlib.suppress(OSError):  # leave no half line (or empty file) behind
                if created:
                    os.unlink(path)
                else:
                    os.ftruncate(fd, start)
            raise
    finally:
        os.close(fd)
    if created:  # the new file's name must survive a crash too
        dir_fd = os.open(os.path.dirname(path), os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _tail(path: str) -> Tail:
    """The chain's end from the last line of ``path``; AuditFailed if that line is broken."""
    data = _last_bytes(path)
    if not data:
        raise AuditFailed(
            "the site's newest audit file is empty (cut off or emptied); check the chain with "
            "`mint-bridge site audit verify`",
            path=path,
        )
    if not data.endswith(b"\n"):
        raise AuditFailed(
            "the site's newest audit file ends in an incomplete line (a cut write or an edit); "
            "check the chain with `mint-bridge site audit verify`",
            path=path,
        )
    last = data.rstrip(b"\n").rsplit(b"\n", 1)[-1]
    try:
        seq = json.loads(last)["seq"]
    except (ValueError, KeyError, TypeError) as exc:
        raise AuditFailed(
            "the last line of the site's newest audit file is not an audit entry; check the "
            "chain with `mint-bridge site audit verify`",
            path=path,
        ) from exc
    if not isinstance(seq, int) or isinstance(seq, bool):
        raise AuditFailed("the last audit line has no valid seq", path=path)
    return Tail(seq + 1, line_hash(last))


def _last_bytes(path: str) -> bytes:
    """The end of ``path``, long enough to hold its whole last line (or the whole file)."""
    with open(path, "rb") as handle:
        end = handle.seek(0, os.SEEK_END)
        start = end
        data = b""
        while start > 0 and data.rstrip(b"\n").count(b"\n") == 0:
            start = max(0, start - _TAIL_BLOCK)
            handle.seek(start)
            data = handle.read(end - start)
    return data


def read_lines(directory: str) -> Iterator[tuple[str, int, bytes]]:
    """Every line of every day file, oldest first: (file, line number from 1, raw bytes with
    its newline if it has one)."""
    for path in log_files(directory):
        with open(path, "rb") as handle:
            for number, line in enumerate(handle, start=1):
                yield path, number, line
