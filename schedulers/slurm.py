"""The ``slurm`` scheduler: sbatch, squeue, sacct (or the jobcomp file), scontrol, scancel.

Building commands is kept apart from reading their output: the ``parse_*`` functions below are
pure and tested on output captured from a real Slurm (``tests/unit/fixtures/slurm/``).

    submit    sbatch --parsable job.sh           -> "123" or "123;cluster"
    status    squeue -h --jobs=1,2,... --states=<live states> --format=%i|%T|%r
              one call for all jobs; jobs it no longer lists have finished and are read from
              sacct (with a Slurm database), else ``sacct -c`` (the jobcomp/filetxt file), else
              ``scontrol show job -o ID`` (the controller remembers a job for MinJobAge)
    cancel    scancel ID                          (a job that already ended is not an error)
    lookup    squeue -h --states=all --name=NAME --format=%i   (duplicate-submit guard)
    recover   the id the job script recorded from $SLURM_JOB_ID when it started, else lookup

The job's own exit code comes from the ``exit_code`` file the job script writes; Slurm's state
wins whenever Slurm ended the job itself (time limit, cancel, memory, node failure), because then
the script was killed and the file is missing or records the kill (143, 137), not the solver's
result.

Memory: where Slurm enforces memory with cgroups the job ends OUT_OF_MEMORY. Where it enforces
it by polling (``JobAcctGatherParams=OverMemoryKill``, no cgroups), Slurm kills the job and
reports a plain FAILED with signal 9; slurmstepd then writes "exceeded memory limit" into the
job's Slurm output file (``scheduler.out`` in the control dir), which is read to tell the two
apart.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import re
from collections.abc import Sequence

from bridge.core.errors import SchedulerError
from bridge.core.job import JobOutcome, JobState
from schedulers.base import JobHandle, JobSpec
from schedulers.batch import SCHEDULER_OUTPUT, BatchScheduler, NativeStatus, job_name

log = logging.getLogger(__name__)

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
_JOB_ID = re.compile(r"\d{1,20}(?:_\d{1,10})?")
_EXIT_CODE = re.compile(r"(\d+):(\d+)")
_SCONTROL_KEY = re.compile(r"(?:^|\s)([A-Za-z][A-Za-z0-9_/:]*)=")
_MEMORY_KILL = re.compile(
    r"slurmstepd.*(exceeded (?:job )?memory limit|oom[-_ ]kill event)", re.IGNORECASE
)
# The tail of scheduler.out read to find slurmstepd's memory message.
_OUTPUT_TAIL = 64 * 1024


# --- building commands and the script ----------------------------------------------------------


def format_walltime(seconds: float) -> str:
    """Slurm's ``D-HH:MM:SS``; Slurm counts time limits in whole minutes, so round up."""
    minutes = max(1, math.ceil(seconds / 60))
    days, rest = divmod(minutes, 24 * 60)
    hours, minutes = divmod(rest, 60)
    return f"{days}-{hours:02d}:{minutes:02d}:00"


def directive_quote(value: str) -> str:
    """Quote a value for an ``#SBATCH`` line.

    sbatch reads directive values with its own rules, not a shell's: quotes group words and a
    backslash escapes the next character even inside quotes (so ``shlex.quote`` would lose
    backslashes), and an unquoted ``#`` starts a comment. Double quotes with ``\\`` and ``"``
    escaped keep any printable value whole. Bash never reads these lines: they are comments.
    """
    if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in value):
        raise SchedulerError(f"value {value!r:.80} for an #SBATCH line has a control character")
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def output_pattern(path: str) -> str:
    """An absolute path as a Slurm output file name pattern (``--output``).

    Slurm replaces ``%j``, ``%x`` ... in it, so ``%`` is doubled; a path holding a backslash
    cannot be expressed at all (any backslash turns the replacements off and is dropped).
    """
    if "\\" in path:
        raise SchedulerError(
            f"Slurm cannot write its output to {path!r:.120}: the path holds a backslash; "
            "choose a work_base without one in the site config"
        )
    return path.replace("%", "%%")


def check_job_id(native_id: str) -> str:
    """A Slurm job id (``123`` or an array task ``123_4``); anything else never reaches argv."""
    if not _JOB_ID.fullmatch(native_id):
        raise SchedulerError(f"{native_id!r:.40} is not a Slurm job id")
    return native_id


# --- parsing output (pure functions) -----------------------------------------------------------


def parse_submit(stdout: str) -> str:
    """The job id from ``sbatch --parsable``: ``123`` or ``123;cluster``."""
    lines = [line.strip() for line in stdout.splitlines() if line.strip()]
    if lines:
        job_id = lines[-1].split(";", 1)[0]
        if _JOB_ID.fullmatch(job_id):
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
        if len(parts) != 3 or not _JOB_ID.fullmatch(parts[0]):
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
        if len(parts) < 3 or not _JOB_ID.fullmatch(parts[0]):
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
        if not _JOB_ID.fullmatch(job_id) or "JobState" not in fields:
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


def _invalid_job_id(stderr: str) -> bool:
    return "invalid job id specified" in stderr.lower()


# --- the adapter -------------------------------------------------------------------------------


class SlurmScheduler(BatchScheduler):
    name = "slurm"
    job_id_variables = ("SLURM_JOB_ID",)

    def __init__(self) -> None:
        super().__init__()
        # Sources of finished jobs' status that turned out to be unavailable at this site
        # (plain sacct without a database, sacct -c without a jobcomp file).
        self._unavailable: set[str] = set()

    # --- building ---------------------------------------------------------------------

    def directives(self, spec: JobSpec) -> list[str]:
        res = spec.resources
        output = output_pattern(os.path.join(spec.control_dir, SCHEDULER_OUTPUT))
        lines = [
            f"--job-name={job_name(spec.job_id)}",
            f"--chdir={directive_quote(spec.workdir)}",
            # The script redirects the solver's own stdout and stderr; what is left here is
            # Slurm's (time limit, memory and cancel notices) and the script's.
            f"--output={directive_quote(output)}",
            "--open-mode=append",
            # A requeue (node failure, preemption) would run the solver a second time behind
            # the bridge's back; a job runs once, and a failure is reported as such.
            "--no-requeue",
            # Not the site entry's environment (SSH session variables): Slurm starts from the
            # site account's login environment, and the script exports the command's.
            "--export=NONE",
        ]
        if spec.walltime:
            lines.append(f"--time={format_walltime(spec.walltime)}")
        if res.cpus:
            lines.append(f"--cpus-per-task={int(res.cpus)}")
        if res.nodes:
            lines.append(f"--nodes={int(res.nodes)}")
        if res.tasks:
            lines.append(f"--ntasks={int(res.tasks)}")
        if res.memory_mb:
            lines.append(f"--mem={int(res.memory_mb)}M")
        if res.queue:
            lines.append(f"--partition={directive_quote(res.queue)}")
        if res.account:
            lines.append(f"--account={directive_quote(res.account)}")
        directives = [f"#SBATCH {line}" for line in lines]
        # The site's own extra lines come last, so they can override ours.
        for extra in res.extra:
            if "\n" in extra or "\r" in extra:
                raise SchedulerError(f"extra directive {extra!r:.80} spans several lines")
            directives.append(f"#SBATCH {extra}")
        return directives

    def submit(self, spec: JobSpec) -> str:
        # --export=NONE is inherited by srun inside the job; steps must see the script's
        # exports (PATH of an MPI solver), as Slurm's own documentation advises.
        env = {**spec.env, "SLURM_EXPORT_ENV": "ALL"}
        return super().submit(dataclasses.replace(spec, env=env))

    def submit_argv(self, script_path: str, spec: JobSpec) -> list[str]:
        return ["sbatch", "--parsable", script_path]

    def parse_submit(self, stdout: str) -> str:
        return parse_submit(stdout)

    def status_argv(self, native_ids: Sequence[str]) -> list[str]:
        ids = ",".join(check_job_id(i) for i in native_ids)
        states = ",".join(LIVE_STATES)
        return ["squeue", "-h", f"--jobs={ids}", f"--states={states}", "--format=%i|%T|%r"]

    def parse_status(self, stdout: str) -> dict[str, NativeStatus]:
        return parse_squeue(stdout)

    def status_output_usable(self, returncode: int, stdout: str, stderr: str) -> bool:
        # squeue fails with "Invalid job id specified" when it knows none of the ids (all
        # ended long ago): that means "none live", and sacct says how they ended.
        return _invalid_job_id(stderr)

    def cancel_argv(self, native_id: str) -> list[str]:
        return ["scancel", check_job_id(native_id)]

    def check_native_id(self, native_id: str) -> str:
        return check_job_id(native_id)

    def lookup_argv(self, name: str) -> list[str]:
        # All states: a short job may have ended by the time a timed-out submit is checked.
        return ["squeue", "-h", "--states=all", f"--name={name}", "--format=%i"]

    def is_already_finished(self, message: str) -> bool:
        return bool(re.search(r"already completing or completed|invalid job id", message, re.I))

    # --- finished jobs ----------------------------------------------------------------

    def finished_status(self, native_ids: Sequence[str]) -> dict[str, NativeStatus]:
        found: dict[str, NativeStatus] = {}
        for source in ("sacct", "jobcomp", "scontrol"):
            remaining = [i for i in native_ids if i not in found]
            if not remaining:
                break
            if source in self._unavailable:
                continue
            try:
                found.update(self._finished_from(source, remaining))
            except SchedulerError as exc:
                if exc.transient:
                    raise
                log.info("slurm: %s cannot tell finished jobs here (%s)", source, exc.message)
                self._unavailable.add(source)
        return found

    def _finished_from(self, source: str, ids: list[str]) -> dict[str, NativeStatus]:
        joined = ",".join(check_job_id(i) for i in ids)
        if source == "sacct":
            argv = ["sacct", "-n", "-P", "-X", f"--jobs={joined}"]
            return parse_sacct(self.run([*argv, "--format=JobID,State,ExitCode,Reason"], source))
        if source == "jobcomp":
            argv = ["sacct", "-c", "-n", "-P", f"--jobs={joined}", "--format=JobID,State,ExitCode"]
            return parse_sacct(self.run(argv, source))
        found: dict[str, NativeStatus] = {}
        for native_id in ids:  # scontrol shows one job per call
            out = self.run(
                ["scontrol", "show", "job", "-o", native_id],
                source,
                accept=lambda _code, _out, err: _invalid_job_id(err),
            )
            found.update(parse_scontrol(out))
        return found

    def _merge(self, handle: JobHandle, native: NativeStatus | None) -> JobOutcome:
        outcome = super()._merge(handle, native)
        if outcome.state is JobState.FAILED and memory_killed(_output_tail(handle.control_dir)):
            return JobOutcome(
                JobState.OUT_OF_MEMORY,
                outcome.exit_code,
                outcome.signal,
                f"Slurm job {handle.native_id} exceeded its memory limit and was killed",
            )
        return outcome


def _output_tail(control_dir: str) -> str:
    try:
        with open(os.path.join(control_dir, SCHEDULER_OUTPUT), "rb") as handle:
            size = handle.seek(0, os.SEEK_END)
            handle.seek(max(0, size - _OUTPUT_TAIL))
            return handle.read().decode("utf-8", "replace")
    except OSError:
        return ""
