"""The job script every batch adapter submits, and the records it leaves in the control dir.

The script is the one piece of shell mint-bridge writes: every value in it goes through
``shlex.quote`` or a strict pattern, never pasted raw. As its first act it records the id the
scheduler gave the job (``scheduler_job_id``), so a submit cut off before the id was recorded
is recovered; as its last, the solver's exit code (``exit_code``). Both records are written
under a temporary name and renamed, so a reader never sees half of one.

Pure functions and file reads only: running scheduler commands is ``schedulers.batch``'s.
"""

from __future__ import annotations

import os
import re
import shlex
from collections.abc import Sequence

from bridge.core.errors import SchedulerError
from bridge.core.job import JobOutcome, JobState
from bridge.core.workdir_files import EXIT_CODE_FILE, SELF_ID_FILE
from schedulers.base import JobSpec

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def job_name(job_id: str) -> str:
    """A name every scheduler accepts: starts with a letter, 15 characters (Torque's limit)."""
    return "mb" + job_id.replace("-", "")[:13]


def read_exit_code(control_dir: str) -> int | None:
    """The solver's exit code as the job script recorded it (None if not written yet)."""
    try:
        with open(os.path.join(control_dir, EXIT_CODE_FILE), encoding="ascii") as handle:
            return int(handle.read().strip())
    except (FileNotFoundError, ValueError):
        return None


def read_self_id(control_dir: str) -> str | None:
    """The job id the job script recorded when it started (None if it has not started)."""
    try:
        with open(os.path.join(control_dir, SELF_ID_FILE), encoding="utf-8") as handle:
            return handle.read().strip() or None
    except FileNotFoundError:
        return None


def render_script(
    spec: JobSpec,
    directives: Sequence[str],
    shell: str = "/bin/bash",
    id_variables: Sequence[str] = ("SLURM_JOB_ID", "PBS_JOBID"),
) -> str:
    """The job script: directives, the job's own id recorded, then quoted cd, environment,
    program and exit-code record. ``id_variables``: where the scheduler puts the job's id, the
    first one set wins."""
    env_lines = []
    for key, value in sorted(spec.env.items()):
        if not _ENV_NAME.match(key):
            raise SchedulerError(f"{spec.job_id}: environment name {key!r} is not valid")
        env_lines.append(f"export {key}={shlex.quote(value)}")
    if spec.stdout_path == spec.stderr_path:
        redirect = f"> {shlex.quote(spec.stdout_path)} 2>&1"
    else:
        redirect = f"> {shlex.quote(spec.stdout_path)} 2> {shlex.quote(spec.stderr_path)}"
    record = shlex.quote(os.path.join(spec.control_dir, EXIT_CODE_FILE))
    own_id = "".join(f"${{{name}:-" for name in id_variables) + "}" * len(id_variables)
    id_record = shlex.quote(os.path.join(spec.control_dir, SELF_ID_FILE))
    return "\n".join(
        [
            f"#!{shell}",
            *directives,
            f"# mint-bridge job {spec.job_id}: every value below is quoted; nothing is pasted raw.",
            f'mb_job_id="{own_id}"',
            f'[ -z "$mb_job_id" ] || {{ printf "%s\\n" "$mb_job_id" > {id_record}.tmp '
            f"&& mv -f {id_record}.tmp {id_record}; }}",
            f"cd -- {shlex.quote(spec.workdir)} || exit 200",
            *env_lines,
            f"{shlex.join(spec.argv)} < /dev/null {redirect}",
            "code=$?",
            f'printf "%d\\n" "$code" > {record}.tmp && mv -f {record}.tmp {record}',
            'exit "$code"',
            "",
        ]
    )


def outcome_from_exit_code(code: int) -> JobOutcome:
    """Bash reports a solver killed by signal N as 128+N."""
    if code == 0:
        return JobOutcome(JobState.COMPLETED, exit_code=0, reason="solver exited with code 0")
    if 128 < code <= 128 + 64:
        return JobOutcome(
            JobState.FAILED, signal=code - 128, reason=f"solver killed by signal {code - 128}"
        )
    return JobOutcome(JobState.FAILED, exit_code=code, reason=f"solver exited with code {code}")
