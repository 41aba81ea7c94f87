"""Reading what Slurm prints: its job states in ours, and pure parsers of its commands' output.

Each ``parse_*`` function takes the text sbatch, squeue, sacct (or ``sacct -c``) or scontrol
printed and returns our view of the jobs in it; they are pure and tested on output
captured from a real Slurm (``tests/unit/schedulers/fixtures/slurm/``). Nothing here runs a
command or reads a file; that, and building the commands, is ``schedulers.slurm``'s.
"""

from __future__ import annotations

import dataclasses
import re

from bridge.core.errors import SchedulerError
from bridge.core.job import JobState
from schedulers.batch import NativeStatus

# Slurm job state -> our state. The first word of the state is used ("CANCELLED by 0" in
# sacct). Ambiguous rows say why they map the way they do.
STATES: dict[str, JobState] = {
    "PENDING": JobState.QUEUED,  # held instead when the reason is a hold (HELD_REASONS)
    "REQUEUED": JobState.QUEUED,  # put back in the queue (e.g. after preemption); runs again
    "REQUEUE_FED": JobState.QUEUED,  # requeued by a federation; runs again
    "CONFIGURING": JobState.RUNNING,  # nodes allocated and booting: its time already counts
    "RUNNING": JobState.RUNNING,
    # Processes are ending (or the epilog runs); the job's result is not final until Slurm
    # says how it ended, so it stays running.
    "COMPLETING": JobState.RUNNING,
    "STAGE_OUT": JobState.RUNNING,  # burst buffer stage-out after the script ended
    "RESIZING": JobState.RUNNING,
    "SIGNALING": JobState.RUNNING,  # being sent a signal; it has not ended yet
    "SUSPENDED": JobState.HELD,  # stopped by an admin or by suspend-preemption; resumes later
    "STOPPED": JobState.HELD,  # SIGSTOP-ed and keeping its nodes: nothing runs until resumed
    "REQUEUE_HOLD": JobState.HELD,  # requeued and held: waits for a release
    "SPECIAL_EXIT": JobState.HELD,  # requeued and held by an epilog's special exit code
    "RESV_DEL_HOLD": JobState.HELD,  # its reservation was deleted; held until released
    "COMPLETED": JobState.COMPLETED,
    "FAILED": JobState.FAILED,
    "CANCELLED": JobState.CANCELLED,
    "TIMEOUT": JobState.TIMEOUT,
    # The job's --deadline passed: it did not get (or finish) its run in time, which is a
    # time limit the job asked for, so it ends as a walltime failure.
    "DEADLINE": JobState.TIMEOUT,
    "OUT_OF_MEMORY": JobState.OUT_OF_MEMORY,
    "NODE_FAIL": JobState.NODE_FAIL,
    "BOOT_FAIL": JobState.NODE_FAIL,  # its node failed to boot: a node failure before start
    # With PreemptMode=CANCEL the job ends here; with REQUEUE Slurm shows REQUEUED/PENDING
    # instead and the job runs again.
    "PREEMPTED": JobState.PREEMPTED,
    "LAUNCH_FAILED": JobState.FAILED,  # the batch script could not be started on its node
    # A federated job's sibling was revoked because another cluster runs it: this cluster
    # will never tell us how the job ended.
    "REVOKED": JobState.LOST,
}
# Reasons that make a PENDING job held (released only by a person), not just queued.
HELD_REASONS = frozenset({"JobHeldUser", "JobHeldAdmin", "launch_failed_requeued_held"})
# The states squeue is asked for: everything that has not ended. Ended jobs are read from
# sacct, which has their exit code.
LIVE_STATES = tuple(name for name, state in STATES.items() if not state.is_final)

_STATE_WORDS = {
    JobState.TIMEOUT: "reached its time limit and was killed",
    JobState.CANCELLED: "was cancelled at the site",
    JobState.OUT_OF_MEMORY: "ran out of memory and was killed",
    JobState.NODE_FAIL: "ended because its node failed",
    JobState.PREEMPTED: "was preempted",
}
# A Slurm job id: ``123``, or an array task ``123_4``.
JOB_ID = re.compile(r"\d{1,20}(?:_\d{1,10})?")
_EXIT_CODE = re.compile(r"(\d+):(\d+)")
_SCONTROL_KEY = re.compile(r"(?:^|\s)([A-Za-z][A-Za-z0-9_/:]*)=")
_MEMORY_KILL = re.compile(
    r"slurmstepd.*(exceeded (?:job )?memory limit|oom[-_ ]kill event)", re.IGNORECASE
)


def parse_submit(stdout: str) -> str:
    """The job id from ``sbatch --parsable``: ``123`` or ``123;cluster``."""
    lines = [line.strip() for line in stdout.splitlines() if line.strip()]
    if lines:
        job_id = lines[-1].split(";", 1)[0]
        if JOB_ID.fullmatch(job_id):
            return job_id
    raise SchedulerError(f"sbatch printed no job id: {stdout.strip()[:200]!r}")


def parse_exit_code(text: str) -> tuple[int | None, int | None]:
    """Slurm's ``ExitCode=n:m``: the batch script's exit code n and the signal m that ended it
    (0: none). A job killed by a signal has no exit code of its own."""
    match = _EXIT_CODE.fullmatch(text.strip())
    if not match:
        return None, None
    code, signal = int(match.group(1)), int(match.group(2))
    if signal:
        return None, signal
    return code, None


def native_status(
    native_id: str, slurm_state: str, reason: str = "", exit_code: str = ""
) -> NativeStatus:
    """Our view of one job from Slurm's state word, its reason and ``n:m`` exit code."""
    name = _state_name(slurm_state)
    reason = "" if reason in ("None", "(null)") else reason
    state = STATES.get(name)
    if state is None:
        # A state this table does not know (a newer Slurm): report it, never guess success.
        return NativeStatus(JobState.LOST, reason=f"Slurm job {native_id} is in state {name}")
    if state is JobState.QUEUED and reason in HELD_REASONS:
        state = JobState.HELD
    code, signal = parse_exit_code(exit_code) if state.is_final else (None, None)
    words = _STATE_WORDS.get(state, f"is {name}")
    text = f"Slurm job {native_id} {words} (Slurm state {name}"
    text += f", reason {reason})" if reason else ")"
    return NativeStatus(state, code, signal, text)


def parse_squeue(stdout: str) -> dict[str, NativeStatus]:
    """``squeue -h --format=%i|%T|%r`` lines. Ended jobs are left out on purpose: their exit
    code comes from sacct."""
    found: dict[str, NativeStatus] = {}
    for line in stdout.splitlines():
        parts = line.strip().split("|")
        if len(parts) != 3 or not JOB_ID.fullmatch(parts[0]):
            continue
        known = STATES.get(_state_name(parts[1]))
        if known is not None and known.is_final:
            continue
        status = native_status(parts[0], parts[1], parts[2])
        if known is None:
            # Listed as live but in a state this table does not know: it has not ended.
            status = dataclasses.replace(status, state=JobState.RUNNING)
        found[parts[0]] = status
    return found


def parse_sacct(stdout: str) -> dict[str, NativeStatus]:
    """``sacct -n -P --format=JobID,State,ExitCode[,Reason]`` (also ``sacct -c``) lines.

    Step lines (``123.batch``) are skipped; when a job appears twice (requeued), the last
    line is its latest run."""
    found: dict[str, NativeStatus] = {}
    for line in stdout.splitlines():
        parts = line.strip().split("|")
        if len(parts) < 3 or not JOB_ID.fullmatch(parts[0]):
            continue
        reason = parts[3] if len(parts) > 3 else ""
        found[parts[0]] = native_status(parts[0], parts[1], reason, parts[2])
    return found


def parse_scontrol(stdout: str) -> dict[str, NativeStatus]:
    """``scontrol show job -o ID``: one line of ``Key=Value`` pairs per job. Values may hold
    spaces (a work dir), so a value runs up to the next ``Key=``."""
    found: dict[str, NativeStatus] = {}
    for line in stdout.splitlines():
        fields = scontrol_fields(line)
        job_id = fields.get("JobId", "")
        if not JOB_ID.fullmatch(job_id) or "JobState" not in fields:
            continue
        found[job_id] = native_status(
            job_id, fields["JobState"], fields.get("Reason", ""), fields.get("ExitCode", "")
        )
    return found


def scontrol_fields(line: str) -> dict[str, str]:
    keys = list(_SCONTROL_KEY.finditer(line))
    fields: dict[str, str] = {}
    for match, following in zip(keys, [*keys[1:], None], strict=True):
        end = following.start() if following is not None else len(line)
        fields.setdefault(match.group(1), line[match.end() : end].strip())
    return fields


def memory_killed(scheduler_output: str) -> bool:
    """Whether slurmstepd says it killed the job for exceeding its memory."""
    return bool(_MEMORY_KILL.search(scheduler_output))


def _state_name(text: str) -> str:
    """The state word: sacct says "CANCELLED by 0", squeue may append "+"."""
    words = text.split()
    return words[0].rstrip("+").upper() if words else "UNKNOWN"


def invalid_job_id(stderr: str) -> bool:
    """Whether squeue or scontrol said it knows none of the ids it was asked about."""
    return "invalid job id specified" in stderr.lower()
