"""Running inside a MInt PBS/Torque job on the bridge node (``PBS_JOBID`` set).

MInt runs a module's program as a PBS job on ``ssh-node01``. The bridge tags the remote job
with the MInt job id and module directory, and bounds the remote job's walltime by what is
left of the MInt job's: a remote job outliving the MInt job that waits for it helps no one.

The remaining walltime comes from ``qstat -f -1 $PBS_JOBID`` (``Resource_List.walltime``
minus ``resources_used.walltime``); if qstat is unavailable or says nothing useful, from
``PBS_WALLTIME`` (seconds, set by Torque) minus the time since the job's first process
with the same ``PBS_JOBID`` started.
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass

log = logging.getLogger(__name__)
_HMS = re.compile(r"^(\d+):(\d{1,2}):(\d{1,2})$")


@dataclass(frozen=True)
class PbsContext:
    job_id: str
    module_dir: str | None
    queue: str | None
    remaining_walltime: float | None

    def metadata(self) -> dict[str, str]:
        data = {"mint_job_id": self.job_id}
        if self.module_dir:
            data["module_dir"] = self.module_dir
        if self.queue:
            data["mint_queue"] = self.queue
        return data


def detect(environ: Mapping[str, str] | None = None) -> PbsContext | None:
    env = os.environ if environ is None else environ
    job_id = env.get("PBS_JOBID")
    if not job_id:
        return None
    remaining = _remaining_from_qstat(job_id)
    if remaining is None:
        remaining = _remaining_from_env(env, job_id)
    return PbsContext(job_id, env.get("PBS_O_WORKDIR"), env.get("PBS_QUEUE"), remaining)


def hms_seconds(text: str) -> float | None:
    match = _HMS.match(text.strip())
    if not match:
        return None
    hours, minutes, seconds = (int(part) for part in match.groups())
    return float(hours * 3600 + minutes * 60 + seconds)


def parse_qstat_walltime(output: str) -> float | None:
    """Remaining seconds from ``qstat -f -1`` text of one job (pure, for tests)."""
    limit = used = None
    for line in output.splitlines():
        key, sep, value = line.strip().partition(" = ")
        if not sep:
            continue
        if key == "Resource_List.walltime":
            limit = hms_seconds(value)
        elif key == "resources_used.walltime":
            used = hms_seconds(value)
    if limit is None:
        return None
    return max(limit - (used or 0.0), 0.0)


def _remaining_from_qstat(job_id: str) -> float | None:
    try:
        proc = subprocess.run(
            ["qstat", "-f", "-1", job_id], capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return parse_qstat_walltime(proc.stdout) if proc.returncode == 0 else None


def _remaining_from_env(env: Mapping[str, str], job_id: str) -> float | None:
    try:
        total = float(env["PBS_WALLTIME"])
    except (KeyError, ValueError):
        return None
    started = _job_start_time(job_id)
    return max(total - (time.time() - started), 0.0)


def _job_start_time(job_id: str) -> float:
    """Start of the oldest ancestor that belongs to the same PBS job (the job script's shell)."""
    import psutil  # here: only this fallback needs it, and it costs every run ~20 ms to import

    started = psutil.Process().create_time()
    try:
        for parent in psutil.Process().parents():
            try:
                if parent.environ().get("PBS_JOBID") != job_id:
                    break
            except psutil.Error:
                break
            started = parent.create_time()
    except psutil.Error:
        pass
    return started
