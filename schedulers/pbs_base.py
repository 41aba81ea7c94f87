"""What Torque and PBS Pro / OpenPBS share: qsub, qdel, qselect, the job id, sizes and times.

Both descend from OpenPBS 2.3, so they agree on the commands, on ``#PBS`` directives and on the
shape of a job id (``<sequence>[<array index>].<server>``). How a finished job's exit status and
kill notices are read is ``schedulers.pbs_outcome``'s.

Everything here is a pure function or builds an argv list; the commands run in ``BatchScheduler``.
"""

from __future__ import annotations

import logging
import math
import os
import re
import socket
from collections.abc import Callable, Sequence

from bridge.core.errors import SchedulerError
from bridge.core.job import JobOutcome, JobState
from bridge.core.workdir_files import BATCH_CANCEL_FILE, SCHEDULER_OUTPUT_FILE
from schedulers.base import JobHandle, JobSpec, Resources
from schedulers.batch import BatchScheduler, NativeStatus
from schedulers.batch_script import (
    job_name,
    outcome_from_exit_code,
    read_exit_code,
    read_self_id,
)
from schedulers.pbs_outcome import kill_notice, read_scheduler_output

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
# PBS without job history also notes each id asked for with -x ("PBS is not configured to
# maintain job history 12.srv").
_UNKNOWN_JOB = re.compile(
    r"unknown job id|job has finished|does not exist|not configured to maintain job history",
    re.I,
)
# PBSE_UNKJOBID is 15001; qstat exits with it truncated to 8 bits. slurm-wlm-torque's qstat
# exits with the same 153 when none of the ids is known, printing nothing.
UNKNOWN_JOB_EXIT = 153
# Exit codes bash reports for a solver killed by a signal (128 + 1..64).
SIGNAL_DEATHS = range(129, 193)
# Messages of these families that mean "try again later" beyond the shared list in batch.py.
_TRANSIENT = (
    "too busy",  # PBSE_SERVER_BUSY: "Server is currently too busy to service this request"
    "retry this request",
    "cannot connect to default server",
    "problem loading jobs",  # slurm-wlm-torque's qstat when slurmctld does not answer
)


def check_native_id(text: str) -> str:
    """A PBS job id as qsub prints it; anything else never reaches argv."""
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


def parse_walltime(text: str | None) -> int | None:
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
    path = f"{spec.control_dir}/{SCHEDULER_OUTPUT_FILE}"
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
        return ["qdel", check_native_id(native_id)]

    def check_native_id(self, native_id: str) -> str:
        return check_native_id(native_id)

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
        if native is None:
            return settle_unlisted(self.name, handle)
        ambiguous = (JobState.FAILED, JobState.CANCELLED)
        if (
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


def settle_unlisted(scheduler: str, handle: JobHandle) -> JobOutcome:
    """The outcome of a job qstat no longer lists (PBS without job history forgets a job the
    moment it ends), from what it left in its control dir: the exit code its script recorded
    as its last act, else pbs_mom's kill notice in scheduler.out (delivered before the job
    leaves the server), else our own cancel; only a job that left none of these is lost."""
    recorded = read_exit_code(handle.control_dir)
    gone = f"{scheduler} no longer lists job {handle.native_id}"
    # pbs_mom's SIGTERM for a limit reaches the solver too, and a script that outlives it
    # records 143: a signal death with a kill notice is the limit kill the notice names.
    if recorded is None or SIGNAL_DEATHS.start <= recorded < SIGNAL_DEATHS.stop:
        notice = kill_notice(read_scheduler_output(handle.control_dir))
        if notice is not None:
            state, words = notice
            return JobOutcome(state, reason=f"{words}; {gone}")
        if os.path.exists(os.path.join(handle.control_dir, BATCH_CANCEL_FILE)):
            return JobOutcome(JobState.CANCELLED, reason=f"deleted on request (qdel); {gone}")
    if recorded is not None:
        return outcome_from_exit_code(recorded)
    if read_self_id(handle.control_dir) is None:
        return JobOutcome(
            JobState.LOST, reason=f"{gone}; it never started (deleted while queued?)"
        )
    return JobOutcome(
        JobState.LOST,
        reason=f"{gone}; it started but recorded no exit code and no kill notice (deleted "
        "at the site, or its node failed; with job_history_enable PBS would say which)",
    )


def checked_ids(native_ids: Sequence[str]) -> list[str]:
    return [check_native_id(i) for i in native_ids]
