"""The ``slurm`` scheduler: sbatch, squeue, sacct (or the jobcomp file), scontrol, scancel.

Building commands is kept apart from reading their output: this module builds the commands and
the ``#SBATCH`` lines and runs them; the state table and the pure ``parse_*`` functions, tested
on output captured from a real Slurm, are in ``schedulers.slurm_output``.

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
from bridge.core.workdir_files import SCHEDULER_OUTPUT_FILE
from schedulers.base import JobHandle, JobSpec
from schedulers.batch import BatchScheduler, NativeStatus
from schedulers.batch_script import job_name
from schedulers.slurm_output import (
    JOB_ID,
    LIVE_STATES,
    invalid_job_id,
    memory_killed,
    parse_sacct,
    parse_scontrol,
    parse_squeue,
    parse_submit,
)

log = logging.getLogger(__name__)

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


def check_native_id(native_id: str) -> str:
    """A Slurm job id (``123`` or an array task ``123_4``); anything else never reaches argv."""
    if not JOB_ID.fullmatch(native_id):
        raise SchedulerError(f"{native_id!r:.40} is not a Slurm job id")
    return native_id


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
        output = output_pattern(os.path.join(spec.control_dir, SCHEDULER_OUTPUT_FILE))
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
        ids = ",".join(check_native_id(i) for i in native_ids)
        states = ",".join(LIVE_STATES)
        return ["squeue", "-h", f"--jobs={ids}", f"--states={states}", "--format=%i|%T|%r"]

    def parse_status(self, stdout: str) -> dict[str, NativeStatus]:
        return parse_squeue(stdout)

    def status_output_usable(self, returncode: int, stdout: str, stderr: str) -> bool:
        # squeue fails with "Invalid job id specified" when it knows none of the ids (all
        # ended long ago): that means "none live", and sacct says how they ended.
        return invalid_job_id(stderr)

    def cancel_argv(self, native_id: str) -> list[str]:
        return ["scancel", check_native_id(native_id)]

    def check_native_id(self, native_id: str) -> str:
        return check_native_id(native_id)

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
        joined = ",".join(check_native_id(i) for i in ids)
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
                accept=lambda _code, _out, err: invalid_job_id(err),
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
        with open(os.path.join(control_dir, SCHEDULER_OUTPUT_FILE), "rb") as handle:
            size = handle.seek(0, os.SEEK_END)
            handle.seek(max(0, size - _OUTPUT_TAIL))
            return handle.read().decode("utf-8", "replace")
    except OSError:
        return ""
