"""The files through which the local scheduler and its supervisor talk: pid and exit records.

The names are in ``bridge.core.workdir_files`` (``LOCAL_*``, ``RUNNER_*``); this module reads
and writes the two records both sides share: the supervisor's pid and how the job ended.

Kept free of heavy imports: the supervisor (``schedulers.local_runner``) starts as a fresh
interpreter for every job, and everything it imports is start-up time before the solver runs.
It never decides anything about the job; that is ``schedulers.local``'s and the supervisor's.
"""

from __future__ import annotations

import json
import os

from bridge.core.atomic_write import write_json_atomic
from bridge.core.errors import ProtocolError
from bridge.core.job import JobOutcome, JobState
from bridge.core.workdir_files import LOCAL_EXIT_FILE, RUNNER_PID_FILE


def record_runner_pid(control_dir: str, pid: int) -> None:
    """Write ``runner.pid`` atomically, through a temporary name of the writer's own (two
    processes write it at about the same time: the supervisor as its first act and the process
    that started it, so it exists even when that process was killed right after the start)."""
    path = os.path.join(control_dir, RUNNER_PID_FILE)
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w", encoding="ascii") as handle:
        handle.write(f"{pid}\n")
    os.replace(tmp, path)


def read_runner_pid(control_dir: str) -> int | None:
    try:
        with open(os.path.join(control_dir, RUNNER_PID_FILE), encoding="ascii") as handle:
            return int(handle.read().strip())
    except (OSError, ValueError):
        return None


def write_exit_file(control_dir: str, outcome: JobOutcome) -> None:
    """The supervisor's last act: how the job ended, written atomically."""
    write_json_atomic(os.path.join(control_dir, LOCAL_EXIT_FILE), outcome.to_message())


def read_exit_file(control_dir: str) -> JobOutcome | None:
    """How the job ended as its supervisor recorded it; None while it has not; ``lost`` when
    the record cannot be read."""
    try:
        with open(os.path.join(control_dir, LOCAL_EXIT_FILE), encoding="utf-8") as handle:
            record = json.load(handle)
        if not isinstance(record, dict):
            raise ProtocolError("not a JSON object")
        return JobOutcome.from_message(record)
    except FileNotFoundError:
        return None
    except (OSError, ValueError, ProtocolError) as exc:
        return JobOutcome(JobState.LOST, reason=f"unreadable exit record: {exc}")
