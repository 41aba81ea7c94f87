"""The per-job log on the bridge node: what ``mint-bridge run -v`` shows, kept in a file.

One file per job, ``<job id>.log``, in ``$MINT_BRIDGE_LOG_DIR``, else
``~/.local/state/mint-bridge/jobs``: the connection, staging, state
changes, results, and the final exit code with its reason, at INFO whatever ``-v`` says, so a
failure can be matched to the site's log by the job id. Beside it, ``<job id>.json`` is the
run's summary for ``mint-bridge jobs`` (``bridge.client.job_history``): site, command, output
dir, start, and once the run ends its end, exit code and reason; it is written at the start
and again at the end, so a run that was killed still shows up. The directory is 0700 and each
file 0600. When a new log is opened, logs and summaries older than ``RETENTION_DAYS`` are
removed.

Must never make a job fail: a directory that cannot be written costs one warning and no log.
Must never record a token or a file's content; it records what the log messages say.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import stat
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field

from bridge.core.atomic_write import write_json_atomic
from bridge.core.errors import BridgeError

log = logging.getLogger(__name__)

DEFAULT_DIR = "~/.local/state/mint-bridge/jobs"
ENV_DIR = "MINT_BRIDGE_LOG_DIR"
RETENTION_DAYS = 30
# Only files named by a job id are ever removed: the directory may hold the admin's own files.
_JOB_LOG = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\.(log|json)")
SUMMARY_SCHEMA = "mint-bridge.job/1"
_FORMAT = "%(asctime)s %(levelname)s %(message)s"


def log_dir() -> str:
    """Where job logs go: ``$MINT_BRIDGE_LOG_DIR``, else the default."""
    return os.path.expanduser(os.environ.get(ENV_DIR) or DEFAULT_DIR)


@dataclass
class Summary:
    """What ``<job id>.json`` holds (schema ``mint-bridge.job/1``; fields are only added)."""

    job_id: str
    site: str
    command: str
    output_dir: str
    started_at: float
    ended_at: float | None = None
    exit_code: int | None = None
    reason: str | None = None
    log: str | None = None
    schema: str = SUMMARY_SCHEMA


@dataclass
class JobLog:
    """The open log of one job; ``path`` is None when it could not be opened."""

    job_id: str
    path: str | None
    summary: Summary | None = field(default=None, repr=False)

    def finished(self, exit_code: int, reason: str) -> None:
        log.info("%s: exit %d: %s", self.job_id, exit_code, reason or "no reason given")
        self._write_summary(exit_code, reason)

    def _write_summary(self, exit_code: int | None = None, reason: str | None = None) -> None:
        if self.summary is None or self.path is None:
            return
        if exit_code is not None:
            self.summary.ended_at = time.time()
            self.summary.exit_code = exit_code
            self.summary.reason = reason or ""
        path = summary_path(os.path.dirname(self.path), self.job_id)
        try:
            write_json_atomic(path, asdict(self.summary))
            os.chmod(path, 0o600)
        except OSError as exc:  # the summary is for reading later; the job goes on
            log.warning("%s: cannot write the job summary %s (%s)", self.job_id, path, exc)


def summary_path(directory: str, job_id: str) -> str:
    return os.path.join(directory, f"{job_id}.json")


@contextlib.contextmanager
def recording(
    job_id: str, directory: str, *, site: str = "", command: str = "", output_dir: str = ""
) -> Iterator[JobLog]:
    """Record every INFO message of ``bridge.*`` in the job's log while the block runs, with
    its summary beside it; an error leaving the block is recorded with its exit code."""
    handler = _open_handler(job_id, directory)
    if handler is None:
        yield JobLog(job_id, None)
        return
    logger = logging.getLogger("bridge")
    level = logger.level
    if logger.getEffectiveLevel() > logging.INFO:
        logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    summary = Summary(job_id, site, command, os.path.abspath(output_dir) if output_dir else "",
                      time.time(), log=handler.baseFilename)  # fmt: skip
    job_log = JobLog(job_id, handler.baseFilename, summary)
    job_log._write_summary()
    try:
        yield job_log
    except BridgeError as exc:
        log.info("%s: exit %d: %s", job_id, int(exc.exit_code), exc)
        job_log._write_summary(int(exc.exit_code), str(exc))
        raise
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
        handler.close()


def _open_handler(job_id: str, directory: str) -> logging.FileHandler | None:
    try:
        _private_dir(directory)
        remove_expired(directory)
        path = os.path.join(directory, f"{job_id}.log")
        # Created 0600 and never through a symlink; FileHandler then appends to it.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW, 0o600)
        os.close(fd)
        handler = logging.FileHandler(path, encoding="utf-8")
    except OSError as exc:
        log.warning("no job log: cannot write to %s (%s); set %s", directory, exc, ENV_DIR)
        return None
    handler.setLevel(logging.INFO)
    handler.setFormatter(logging.Formatter(_FORMAT))
    return handler


def _private_dir(directory: str) -> None:
    os.makedirs(directory, mode=0o700, exist_ok=True)
    info = os.lstat(directory)
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():
        raise OSError(f"{directory} is not a directory owned by this user")
    if stat.S_IMODE(info.st_mode) & 0o077:
        os.chmod(directory, 0o700)


def remove_expired(directory: str, now: float | None = None) -> list[str]:
    """Remove job logs and summaries in ``directory`` last written more than
    ``RETENTION_DAYS`` ago."""
    cutoff = (now if now is not None else time.time()) - RETENTION_DAYS * 86400
    removed: list[str] = []
    with os.scandir(directory) as entries:
        for entry in entries:
            if not _JOB_LOG.fullmatch(entry.name) or not entry.is_file(follow_symlinks=False):
                continue
            with contextlib.suppress(OSError):  # another run may remove it first
                if entry.stat(follow_symlinks=False).st_mtime < cutoff:
                    os.unlink(entry.path)
                    removed.append(entry.path)
    return removed


__all__ = [
    "DEFAULT_DIR", "ENV_DIR", "RETENTION_DAYS", "SUMMARY_SCHEMA", "JobLog", "Summary", "log_dir",
    "recording", "summary_path",
]  # fmt: skip
