"""The files through which the local scheduler and its supervisor talk, and how they are written.

Kept free of heavy imports: the supervisor (``schedulers.local_runner``) starts as a fresh
interpreter for every job, and everything it imports is start-up time before the solver runs.
"""

from __future__ import annotations

import json
import os

SPEC_FILE = "local-spec.json"
EXIT_FILE = "exit.json"
# Written by cancel() before it signals the supervisor, so a cancel that arrives before the
# supervisor installed its signal handler is still honoured.
CANCEL_FILE = "local-cancel"
# The supervisor's pid. Both the supervisor (as its first act) and the process that started it
# write it, so it exists even when that process was killed right after the start.
RUNNER_PID = "runner.pid"


def write_json_atomic(path: str, data: object) -> None:
    """Write atomically: readers see the old file or the whole new one, never half of it."""
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as handle:
        json.dump(data, handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def record_runner_pid(control_dir: str, pid: int) -> None:
    """Write ``runner.pid`` atomically, through a temporary name of the writer's own (two
    processes write it at about the same time)."""
    path = os.path.join(control_dir, RUNNER_PID)
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w", encoding="ascii") as handle:
        handle.write(f"{pid}\n")
    os.replace(tmp, path)


def read_runner_pid(control_dir: str) -> int | None:
    try:
        with open(os.path.join(control_dir, RUNNER_PID), encoding="ascii") as handle:
            return int(handle.read().strip())
    except (OSError, ValueError):
        return None
