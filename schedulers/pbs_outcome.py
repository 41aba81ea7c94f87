"""How a finished Torque or PBS Pro job ended: its exit status, its usage and kill notices.

Both descend from OpenPBS 2.3 and agree on how ``pbs_mom`` reports a job whose top process
died of a signal: ``exit_status = 0x100 + signal`` (``scan_for_terminated()`` in
``src/resmom/linux/mom_start.c`` of both adaptivecomputing/torque and openpbs/openpbs:
``exiteval = WTERMSIG(statloc) + 0x100``). So 265 is SIGKILL and 271 is SIGTERM, which is what
``qdel`` sends first. Negative exit statuses are each one's own ``JOB_EXEC_*`` codes (their
tables live in ``torque.py`` and ``pbspro.py``). A signal death is told apart as a walltime or
memory kill by the recorded usage, or by the kill notice in the job's output file.

Pure functions, and one read of the output file's tail; nothing here runs a command.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from bridge.core.job import JobState
from bridge.core.workdir_files import SCHEDULER_OUTPUT_FILE
from schedulers.batch import NativeStatus
from schedulers.batch_script import outcome_from_exit_code

# Signals a shell or pbs_mom can report; anything above is not a signal number.
_MAX_SIGNAL = 64
SIGKILL = 9


@dataclass(frozen=True)
class Usage:
    """What qstat says a job used and was allowed (seconds, bytes), to tell limit kills."""

    walltime: int | None = None
    walltime_limit: int | None = None
    mem: int | None = None
    mem_limit: int | None = None


ExecCodes = Mapping[int, tuple[str, JobState, str]]


def exit_status_outcome(
    code: int, usage: Usage, deleted: bool, scheduler: str, exec_codes: ExecCodes
) -> NativeStatus:
    """Our view of a finished job's exit status (the tables in torque.py and pbspro.py)."""
    if code < 0:
        name, state, words = exec_codes.get(
            code, (f"JOB_EXEC code {code}", JobState.NODE_FAIL, "pbs_mom could not run the job")
        )
        return NativeStatus(state, reason=f"{words} ({name}, {scheduler} exit status {code})")
    if code <= 0xFF:
        # The job script's own status, which is the solver's; 128+N when bash saw the solver
        # die of signal N while itself surviving.
        if 128 < code <= 128 + _MAX_SIGNAL:
            limit = _limit_kill(code - 128, usage, code, scheduler)
            if limit is not None:
                return limit
        outcome = outcome_from_exit_code(code)
        return NativeStatus(
            outcome.state,
            outcome.exit_code,
            outcome.signal,
            f"{outcome.reason} ({scheduler} exit status {code})",
        )
    number = code - 0x100  # pbs_mom: 0x100 + the signal that killed the script's shell
    if not 1 <= number <= _MAX_SIGNAL:
        return NativeStatus(JobState.FAILED, reason=f"{scheduler} exit status {code}")
    limit = _limit_kill(number, usage, code, scheduler)
    if limit is not None:
        return limit
    if deleted:
        return NativeStatus(
            JobState.CANCELLED,
            signal=number,
            reason=f"deleted while running (qdel; {scheduler} exit status {code})",
        )
    return NativeStatus(
        JobState.FAILED,
        signal=number,
        reason=f"job script killed by signal {number} ({scheduler} exit status {code})",
    )


def _limit_kill(number: int, usage: Usage, code: int, scheduler: str) -> NativeStatus | None:
    """A signal death that the recorded usage shows to be a walltime or memory kill.

    pbs_mom kills an overrunning job with SIGTERM, then SIGKILL after kill_delay, and older
    versions report just that signal (a site's example: Exit_status 271 with "job killed:
    walltime 152 exceeded limit 120"), as do kernel OOM kills inside a cgroup (SIGKILL)."""
    limit = usage.walltime_limit
    if limit and usage.walltime is not None and usage.walltime >= limit:
        return NativeStatus(
            JobState.TIMEOUT,
            signal=number,
            reason=f"killed by signal {number} after {usage.walltime} s of its {limit} s "
            f"walltime ({scheduler} exit status {code})",
        )
    mem_limit = usage.mem_limit
    if number == SIGKILL and mem_limit and usage.mem is not None and usage.mem >= mem_limit:
        return NativeStatus(
            JobState.OUT_OF_MEMORY,
            signal=number,
            reason=f"killed by SIGKILL at {usage.mem >> 20} MiB of its {mem_limit >> 20} MiB "
            f"memory limit ({scheduler} exit status {code})",
        )
    return None


# Kill notices in the job's output file (scheduler.out: the script's stdout and stderr, joined).
# pbs_mom writes "=>> PBS: job killed: walltime 152 exceeded limit 120" (Torque and PBS Pro
# alike; "cput job total 7300 secs exceeded limit 7200"; for memory Torque writes "mem job total
# 4323312 kb exceeded limit 3145728 kb", PBS Pro "mem 2097152kb exceeded limit 1048576kb", and
# vmem / pmem alike); slurm-wlm-torque's jobs get slurmstepd's notices
# instead ("*** JOB 7 ON n1 CANCELLED AT ... DUE TO TIME LIMIT ***", "exceeded memory limit").
# First match wins: a memory kill is also reported as "CANCELLED AT" by slurmstepd.
_KILL_NOTICES: tuple[tuple[re.Pattern[str], JobState, str], ...] = (
    (
        re.compile(r"job killed: (?:walltime|cput)\b[^\n]*exceeded limit|DUE TO TIME LIMIT"),
        JobState.TIMEOUT,
        "killed for exceeding its walltime",
    ),
    (
        re.compile(
            r"job killed: p?v?mem\b[^\n]*exceeded limit|exceeded (?:job )?memory limit"
            r"|oom[-_ ]kill",
            re.I,
        ),
        JobState.OUT_OF_MEMORY,
        "killed for exceeding its memory",
    ),
    (
        re.compile(r"\*\*\* JOB \S+ ON \S+ CANCELLED AT"),
        JobState.CANCELLED,
        "cancelled at the site",
    ),
)
# Kill notices come last in the file; a solver flooding it must not make us read it all.
_OUTPUT_TAIL = 64 * 1024


def kill_notice(output: str) -> tuple[JobState, str] | None:
    """What a kill notice in the job's output says ended it, if there is one."""
    for pattern, state, words in _KILL_NOTICES:
        match = pattern.search(output)
        if match:
            start = output.rfind("\n", 0, match.start()) + 1
            end = output.find("\n", match.end())
            line = output[start : end if end >= 0 else len(output)].strip()
            return state, f"{words}: {line[:300]}"
    return None


def read_scheduler_output(control_dir: str) -> str:
    """The tail of the job's scheduler.out ("" until the scheduler has delivered it)."""
    try:
        with open(f"{control_dir}/{SCHEDULER_OUTPUT_FILE}", "rb") as stream:
            stream.seek(0, 2)
            stream.seek(max(0, stream.tell() - _OUTPUT_TAIL))
            return stream.read().decode("utf-8", "replace")
    except OSError:
        return ""
