"""What Torque and PBS Pro / OpenPBS share: qsub, qdel, qselect, the job id, sizes and times.

Both descend from OpenPBS 2.3, so they agree on the commands, on ``#PBS`` directives, on the
shape of a job id (``<sequence>[<array index>].<server>``) and on how ``pbs_mom`` reports a job
whose top process died of a signal: ``exit_status = 0x100 + signal``
(``scan_for_terminated()`` in ``src/resmom/linux/mom_start.c`` of both adaptivecomputing/torque
and openpbs/openpbs: ``exiteval = WTERMSIG(statloc) + 0x100``). So 265 is SIGKILL and 271 is
SIGTERM, which is what ``qdel`` sends first. Negative exit statuses are each one's own
``JOB_EXEC_*`` codes (their tables live in ``torque.py`` and ``pbspro.py``).

Everything here is a pure function or builds an argv list; the commands run in ``BatchScheduler``.
"""

from __future__ import annotations

import logging
import math
import re
import socket
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from bridge.core.errors import SchedulerError
from bridge.core.job import JobOutcome, JobState
from schedulers.base import JobHandle, JobSpec, Resources
from schedulers.batch import (
    SCHEDULER_OUTPUT,
    BatchScheduler,
    NativeStatus,
    job_name,
    outcome_from_exit_code,
    read_exit_code,
)

log = logging.getLogger(__name__)

# 123, 123.server, 123[].server, 123[4].server.example.org: what qsub prints. Nothing else is
# ever passed to qstat or qdel, so an id can never be read as an option.
_JOB_ID = re.compile(r"[0-9]+(\[[0-9]*\])?(\.[A-Za-z0-9][A-Za-z0-9._-]*)?")
# A value written into a #PBS line: qsub splits directive lines on white space and knows no
# quoting worth trusting, so only plain values go there (the qsub argv carries the rest).
_DIRECTIVE_SAFE = re.compile(r"/[A-Za-z0-9_./+-]+")
# What qstat prints on stderr, besides the jobs it knows, when some of the ids are unknown
# ("qstat: Unknown Job Id Error 123.srv" in Torque, "qstat: Unknown Job Id 123.srv" in PBS Pro)
# or have left the history.
_UNKNOWN_JOB = re.compile(r"unknown job id|job has finished|does not exist", re.I)
# PBSE_UNKJOBID is 15001; qstat exits with it truncated to 8 bits. slurm-wlm-torque's qstat
# exits with the same 153 when none of the ids is known, printing nothing.
UNKNOWN_JOB_EXIT = 153
# Messages of these families that mean "try again later" beyond the shared list in batch.py.
_TRANSIENT = (
    "too busy",  # PBSE_SERVER_BUSY: "Server is currently too busy to service this request"
    "retry this request",
    "cannot connect to default server",
    "problem loading jobs",  # slurm-wlm-torque's qstat when slurmctld does not answer
)
# Signals a shell or pbs_mom can report; anything above is not a signal number.
_MAX_SIGNAL = 64
SIGKILL = 9


def check_job_id(text: str) -> str:
    if not _JOB_ID.fullmatch(text):
        raise SchedulerError(f"{text!r:.80} is not a PBS job id")
    return text


def parse_qsub(stdout: str) -> str:
    """The job id qsub printed: its last non-empty line, e.g. ``123.server`` (or ``123``)."""
    lines = [line.strip() for line in stdout.splitlines() if line.strip()]
    if not lines or not _JOB_ID.fullmatch(lines[-1]):
        # qsub exited 0, so the job may well exist: transient, so the retry looks it up by
        # name before submitting again.
        raise SchedulerError(f"qsub printed no job id: {stdout.strip()[:200]!r}", transient=True)
    return lines[-1]


def parse_qselect(stdout: str) -> str | None:
    """The first job id qselect listed (one per line), if any."""
    for line in stdout.splitlines():
        if _JOB_ID.fullmatch(line.strip()):
            return line.strip()
    return None


def hms(seconds: float) -> str:
    """A walltime as HH:MM:SS (hours may exceed 24), rounded up to a whole second."""
    total = max(1, math.ceil(seconds))
    return f"{total // 3600:02d}:{total % 3600 // 60:02d}:{total % 60:02d}"


def parse_duration(text: str | None) -> int | None:
    """Seconds from ``[[HH:]MM:]SS`` as qstat prints walltimes (``72:00:00``, ``00:00:10``)."""
    if text is None:
        return None
    parts = str(text).strip().split(":")
    if not 1 <= len(parts) <= 3 or not all(p.isdigit() for p in parts):
        return None
    seconds = 0
    for part in parts:
        seconds = seconds * 60 + int(part)
    return seconds


_SIZE = re.compile(r"([0-9]+)([kmgtp]?)(b|w)?", re.I)
_SHIFT = {"": 0, "k": 10, "m": 20, "g": 30, "t": 40, "p": 50}


def parse_size(text: str | None) -> int | None:
    """Bytes from a PBS size (``13378420kb``, ``200mb``, ``4gb``, ``512``; ``w`` = 8-byte words)."""
    if text is None:
        return None
    match = _SIZE.fullmatch(str(text).strip())
    if not match:
        return None
    number, prefix, unit = match.groups()
    value = int(number) << _SHIFT[prefix.lower()]
    return value * 8 if (unit or "").lower() == "w" else value


def unknown_ids_only(returncode: int, stdout: str, stderr: str) -> bool:
    """Whether a failed qstat only complained about unknown (or purged) job ids."""
    complaints = [line for line in stderr.splitlines() if line.strip()]
    if not complaints:
        return returncode == UNKNOWN_JOB_EXIT
    return all(_UNKNOWN_JOB.search(line) for line in complaints)


def output_path(spec: JobSpec) -> str:
    """Where the scheduler writes the job script's own stdout+stderr (the solver has its own).

    A path with ``:`` would be read as ``host:path``, so it then names the submit host."""
    path = f"{spec.control_dir}/{SCHEDULER_OUTPUT}"
    return f"{socket.gethostname()}:{path}" if ":" in path else path


def common_directives(spec: JobSpec) -> list[str]:
    """Name, shell, no rerun, joined output and walltime: the same in Torque and PBS Pro."""
    lines = [
        f"#PBS -N {job_name(spec.job_id)}",
        # pbs_mom runs the script with the account's login shell, not its #! line.
        "#PBS -S /bin/bash",
        # A rerun (after a node failure or a pbs_mom restart) would start the solver a second
        # time; the site promises at most once, so a lost node ends the job instead.
        "#PBS -r n",
        "#PBS -j oe",
    ]
    path = output_path(spec)
    if _DIRECTIVE_SAFE.fullmatch(path):
        lines.append(f"#PBS -o {path}")
    if spec.walltime:
        lines.append(f"#PBS -l walltime={hms(spec.walltime)}")
    return lines


def queue_account_extra(resources: Resources) -> list[str]:
    lines = []
    if resources.queue:
        lines.append(f"#PBS -q {resources.queue}")
    if resources.account:
        lines.append(f"#PBS -A {resources.account}")
    for line in resources.extra:
        # The site config admits one printable line each; checked again, as a new line here
        # would be a line of shell in the script.
        if not line.isprintable():
            raise SchedulerError(f"extra directive {line!r:.80} is not one printable line")
        lines.append(f"#PBS {line}")
    return lines


def layout(resources: Resources) -> tuple[int, int, int | None]:
    """Nodes, CPUs per node and tasks per node (None when no task count was asked)."""
    nodes = resources.nodes or 1
    per_task = resources.cpus or 1
    tasks_per_node = math.ceil(resources.tasks / nodes) if resources.tasks else None
    return nodes, per_task * (tasks_per_node or 1), tasks_per_node


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
        with open(f"{control_dir}/{SCHEDULER_OUTPUT}", "rb") as stream:
            stream.seek(0, 2)
            stream.seek(max(0, stream.tell() - _OUTPUT_TAIL))
            return stream.read().decode("utf-8", "replace")
    except OSError:
        return ""


class PbsFamilyScheduler(BatchScheduler):
    """qsub / qdel / qselect as Torque and PBS Pro both have them."""

    # Torque and PBS Pro set PBS_JOBID (the id qsub printed, e.g. 123.server); Slurm's PBS
    # wrappers (slurm-wlm-torque) leave it unset, and their qsub prints the Slurm job id.
    job_id_variables = ("PBS_JOBID", "SLURM_JOB_ID")

    def submit_argv(self, script_path: str, spec: JobSpec) -> list[str]:
        # -o and -j also sit in the script, but only the command line is honoured everywhere
        # (slurm-wlm-torque's qsub passes its own -o/-e to sbatch) and can carry any path.
        return ["qsub", "-o", output_path(spec), "-j", "oe", script_path]

    def parse_submit(self, stdout: str) -> str:
        return parse_qsub(stdout)

    def cancel_argv(self, native_id: str) -> list[str]:
        # Plain qdel: PBS Pro's `qdel -x` would also purge the history that holds the outcome.
        return ["qdel", check_job_id(native_id)]

    def check_native_id(self, native_id: str) -> str:
        return check_job_id(native_id)

    def lookup_argv(self, name: str) -> list[str]:
        return ["qselect", "-N", name]

    def parse_lookup(self, stdout: str) -> str | None:
        return parse_qselect(stdout)

    def status_output_usable(self, returncode: int, stdout: str, stderr: str) -> bool:
        return unknown_ids_only(returncode, stdout, stderr)

    def is_already_finished(self, message: str) -> bool:
        # Torque: "qdel: Request invalid for state of job MSG=invalid state for job - COMPLETE".
        return super().is_already_finished(message) or bool(
            re.search(r"invalid state for job|has finished", message, re.I)
        )

    def run(
        self,
        argv: list[str],
        what: str,
        accept: Callable[[int, str, str], bool] | None = None,
        pass_fds: Sequence[int] = (),
    ) -> str:
        try:
            return super().run(argv, what, accept, pass_fds)
        except SchedulerError as exc:
            if not exc.transient and any(p in exc.message.lower() for p in _TRANSIENT):
                raise SchedulerError(exc.message, transient=True) from exc
            raise

    def _merge(self, handle: JobHandle, native: NativeStatus | None) -> JobOutcome:
        ambiguous = (JobState.FAILED, JobState.CANCELLED)
        if native is not None and (
            native.state in ambiguous
            # Success without the exit code our script records as its last act: it was killed
            # (Torque before 2.5.6 reported limit kills as exit_status 0).
            or (native.state is JobState.COMPLETED and read_exit_code(handle.control_dir) is None)
        ):
            # A kill notice in the job's own output (delivered before the job is listed as
            # ended) names what the exit status leaves open.
            notice = kill_notice(read_scheduler_output(handle.control_dir))
            if notice is not None:
                state, words = notice
                return JobOutcome(
                    state, native.exit_code, native.signal, f"{words}; {native.reason}"
                )
            # "Ended without an exit status" (never ran: deleted or aborted while queued; and
            # every ended job in slurm-wlm-torque) is contradicted by an exit code our script
            # recorded as its last act: then the job ran to its end, and that code is its outcome.
            if native.state is JobState.CANCELLED and native.signal is None:
                recorded = read_exit_code(handle.control_dir)
                if recorded is not None:
                    return outcome_from_exit_code(recorded)
        return super()._merge(handle, native)

    def cancel(self, handle: JobHandle) -> None:
        try:
            super().cancel(handle)
        except SchedulerError as exc:
            if exc.transient:
                raise
            # qdel's words for "already over" differ between versions, and slurm-wlm-torque's
            # qdel says nothing at all (exit 1): ask qstat whether the job has ended.
            outcome = self.status([handle])[handle.native_id]
            if not outcome.state.is_final:
                raise
            log.info("%s: %s had already ended: %s", handle.job_id, handle.native_id, outcome)


def checked_ids(native_ids: Sequence[str]) -> list[str]:
    return [check_job_id(i) for i in native_ids]
