"""The ``torque`` scheduler: qsub / qstat -f -1 / qdel / qselect of Torque (written for 6.1).

Commands (argv lists; the script itself comes from ``batch_script.render_script``):

    qsub -o <control>/scheduler.out -j oe <control>/job.sh     prints the id, e.g. 123.server
    qstat -f -1 <id> <id> ...                                   one call for every job we follow
    qdel <id>
    qselect -N <name>                                           duplicate-submit guard, recovery

A submit cut off before its id was recorded is recovered from ``$PBS_JOBID``, which the job
script records in the control dir as its first act (``$SLURM_JOB_ID`` under Slurm's PBS
wrappers, which leave ``PBS_JOBID`` unset), or while the job is still queued by ``qselect``.

``qstat -f`` prints one block per job: ``Job Id: <id>``, then ``    attribute = value`` lines.
With ``-1`` values are never folded; without it (and in older versions) long values continue
on lines that start with a tab, and ``parse_qstat_full`` joins both forms. Completed jobs stay
listed in state C with their ``exit_status`` for the server's ``keep_completed`` seconds; a job
qstat no longer lists is settled by the base class from the exit code our job script recorded.

State table (Torque ``job_state`` -> our state). Sources: qstat(1) of Torque 6.1, job states in
``src/include/pbs_job.h`` (JOB_STATE_TRANSIT ... JOB_STATE_COMPLETE):

    Q  queued, eligible to run or be routed            -> queued
    T  being moved to a new location (routing)         -> queued  (not yet on a node)
    W  waiting for its execution time (qsub -a)        -> held    (will not start until then;
                                                                   we never set -a, so someone
                                                                   at the site did)
    H  held by a user, operator or the system          -> held
    S  suspended (preemption by suspension)            -> held    (stopped, not running)
    R  running                                         -> running
    E  exiting after having run                        -> running (ambiguous: the script has
                                                                   ended and exit_status may show,
                                                                   but pbs_mom is still running the
                                                                   epilogue and copying output back;
                                                                   the outcome is final only at C)
    C  completed after having run                      -> by exit_status, below

exit_status of a C job (sources: "Job Exit Status" in the Torque admin guide, 3.0 to 6.1;
``JOB_EXEC_*`` in ``src/include/pbs_job.h``; ``scan_for_terminated()`` in
``src/resmom/linux/mom_start.c``; the Adaptive Computing knowledge base articles "Explanation of
Exit Codes" and "I see exit codes from Torque and showq"):

    absent      the job never ran: deleted while queued, or aborted by the server  -> cancelled
    0           the script exited 0                                   -> completed
    1..255      the script's exit status, which is the solver's       -> failed (129..192: the
                                                                         solver died of signal-128)
    256+N       the script's shell was killed by signal N (pbs_mom reports 0x100 + WTERMSIG):
                  used walltime >= its limit                          -> timeout (older Torque
                                                                         reports a limit kill so,
                                                                         e.g. 271 with "job killed:
                                                                         walltime 152 exceeded
                                                                         limit 120")
                  SIGKILL with used mem >= its limit                  -> out_of_memory
                  271 (SIGTERM): Torque's code for a deleted running job (qdel)  -> cancelled
                  any other signal                                    -> failed, with the signal
    -11 JOB_EXEC_OVERLIMIT_WT, -12 JOB_EXEC_OVERLIMIT_CPUT            -> timeout
    -10 JOB_EXEC_OVERLIMIT_MEM                                        -> out_of_memory
    -1 FAIL1, -2 FAIL2, -3 RETRY, -4 INITABT, -5 INITRST, -6 INITRMG, -7 BADRESRT,
    -13 RETRY_CGROUP, -14 RETRY_PROLOGUE (pbs_mom or the node could not start the job)
                                                                      -> node_fail
    -8 CMDFAIL (exec of the shell failed), -9 STDOUTFAIL (output files could not be created)
                                                                      -> failed
    other negative                                                    -> node_fail

Whatever the exit status, pbs_mom's kill notice in the job's output ("=>> PBS: job killed:
walltime 152 exceeded limit 120", see ``pbs_outcome.kill_notice``) marks a failed, cancelled, or
seemingly successful job that never recorded its exit code as a timeout or memory kill: Torque
before 2.5.6 even reported limit kills as exit_status 0 (its 2.5.6 changelog).
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Sequence

from bridge.core.errors import SchedulerError, SiteConfigInvalid
from bridge.core.job import JobState
from schedulers.base import JobSpec
from schedulers.batch import NativeStatus
from schedulers.pbs_base import (
    PbsFamilyScheduler,
    checked_ids,
    common_directives,
    layout,
    parse_size,
    parse_walltime,
    queue_account_extra,
    unknown_ids_only,
)
from schedulers.pbs_outcome import ExecCodes, Usage, exit_status_outcome

STATES = {
    "Q": JobState.QUEUED,
    "T": JobState.QUEUED,
    "W": JobState.HELD,
    "H": JobState.HELD,
    "S": JobState.HELD,
    "R": JobState.RUNNING,
    "E": JobState.RUNNING,
}

# Torque's JOB_EXEC_* codes (pbs_job.h; -13 and -14 from the 6.1.2 exit code table).
JOB_EXEC: ExecCodes = {
    -1: ("JOB_EXEC_FAIL1", JobState.NODE_FAIL, "job start failed before files, no retry"),
    -2: ("JOB_EXEC_FAIL2", JobState.NODE_FAIL, "job start failed after files, no retry"),
    -3: ("JOB_EXEC_RETRY", JobState.NODE_FAIL, "job start failed and was not retried"),
    -4: ("JOB_EXEC_INITABT", JobState.NODE_FAIL, "job aborted on pbs_mom initialization"),
    -5: ("JOB_EXEC_INITRST", JobState.NODE_FAIL, "job aborted on pbs_mom init (checkpoint)"),
    -6: ("JOB_EXEC_INITRMG", JobState.NODE_FAIL, "job aborted on pbs_mom init (migrate)"),
    -7: ("JOB_EXEC_BADRESRT", JobState.NODE_FAIL, "job restart failed"),
    -8: ("JOB_EXEC_CMDFAIL", JobState.FAILED, "exec of the job's shell failed"),
    -9: ("JOB_EXEC_STDOUTFAIL", JobState.FAILED, "could not create the job's output files"),
    -10: ("JOB_EXEC_OVERLIMIT_MEM", JobState.OUT_OF_MEMORY, "job exceeded its memory limit"),
    -11: ("JOB_EXEC_OVERLIMIT_WT", JobState.TIMEOUT, "job exceeded its walltime"),
    -12: ("JOB_EXEC_OVERLIMIT_CPUT", JobState.TIMEOUT, "job exceeded its CPU time limit"),
    -13: ("JOB_EXEC_RETRY_CGROUP", JobState.NODE_FAIL, "could not create the job's cgroups"),
    -14: ("JOB_EXEC_RETRY_PROLOGUE", JobState.NODE_FAIL, "the prologue failed"),
}
CANCELLED_RUNNING = 271  # 0x100 + SIGTERM; the server's exit_code_canceled_job may change it

_PBS_PRO_VERSION = re.compile(r"^pbs_version\s*=\s*(\S+)", re.M)
_JOB_ID_LINE = re.compile(r"^Job Id:\s*(\S+)\s*$")
_ATTRIBUTE = re.compile(r"^([A-Za-z_][A-Za-z0-9_.]*) = ?(.*)$")


# --- parsing (pure functions, tested on captured output) ------------------------------------


def parse_qstat_full(text: str) -> dict[str, dict[str, str]]:
    """Job id -> attributes, from ``qstat -f`` with or without ``-1``.

    Attribute lines share one indentation (four spaces in Torque, a tab in slurm-wlm-torque);
    a folded value continues on lines indented otherwise (a tab in Torque), joined as they are.
    Lines without any indentation (a value holding newlines, e.g. sched_hint) join with "\\n".
    """
    jobs: dict[str, dict[str, str]] = {}
    attrs: dict[str, str] | None = None
    indent: str | None = None
    last: str | None = None
    for line in text.splitlines():
        header = _JOB_ID_LINE.match(line)
        if header:
            attrs = jobs.setdefault(header.group(1), {})
            indent, last = None, None
            continue
        if attrs is None or not line.strip():
            continue
        stripped = line.lstrip(" \t")
        lead = line[: len(line) - len(stripped)]
        if indent is None and lead:
            indent = lead
        match = _ATTRIBUTE.match(stripped) if lead == indent else None
        if match:
            last = match.group(1)
            attrs[last] = match.group(2).rstrip()
        elif last is not None:
            attrs[last] += stripped.rstrip() if lead else "\n" + line.rstrip()
    return jobs


def job_status(attrs: dict[str, str]) -> NativeStatus:
    """Our view of one job's attributes (the state table in the module docstring)."""
    state = attrs.get("job_state", "").strip()
    if state == "C":
        return completed_status(attrs)
    if state in STATES:
        comment = attrs.get("comment", "").strip()
        return NativeStatus(STATES[state], reason=f"Torque state {state}: {comment}".rstrip(": "))
    return NativeStatus(JobState.QUEUED, reason=f"unknown Torque job state {state!r:.20}")


def completed_status(attrs: dict[str, str]) -> NativeStatus:
    raw = attrs.get("exit_status")
    if raw is None:
        return NativeStatus(
            JobState.CANCELLED,
            reason="Torque completed the job without an exit_status: it was deleted or aborted "
            "before it ran",
        )
    try:
        code = int(raw.strip())
    except ValueError:
        return NativeStatus(JobState.FAILED, reason=f"Torque exit_status {raw!r:.40}")
    usage = Usage(
        walltime=parse_walltime(attrs.get("resources_used.walltime")),
        walltime_limit=parse_walltime(attrs.get("Resource_List.walltime")),
        mem=parse_size(attrs.get("resources_used.mem")),
        mem_limit=parse_size(attrs.get("Resource_List.mem")),
    )
    return exit_status_outcome(code, usage, code == CANCELLED_RUNNING, "Torque", JOB_EXEC)


def parse_status(text: str) -> dict[str, NativeStatus]:
    return {job_id: job_status(attrs) for job_id, attrs in parse_qstat_full(text).items()}


def find_job_named(text: str, name: str) -> str | None:
    """The id of a job called ``name`` in ``qstat -f`` output (when qselect is missing)."""
    for job_id, attrs in parse_qstat_full(text).items():
        if attrs.get("Job_Name") == name:
            return job_id
    return None


# --- building commands ----------------------------------------------------------------------


def directives(spec: JobSpec) -> list[str]:
    lines = common_directives(spec)
    res = spec.resources
    if res.nodes or res.cpus or res.tasks:
        nodes, ppn, _ = layout(res)
        lines.append(f"#PBS -l nodes={nodes}:ppn={ppn}")
    if res.memory_mb:
        nodes, ppn, _ = layout(res)
        # Torque's mem is for the whole job and only enforced for single-node jobs; for
        # several nodes the admin guide says to use pmem (per process, i.e. per ppn slot).
        if nodes == 1:
            lines.append(f"#PBS -l mem={res.memory_mb}mb")
        else:
            lines.append(f"#PBS -l pmem={-(-res.memory_mb // ppn)}mb")
    lines.extend(queue_account_extra(res))
    return lines


def pbs_pro_version(qstat_version_output: str) -> str | None:
    """The version a PBS Pro / OpenPBS ``qstat --version`` prints (``pbs_version = 23.06.06``);
    None for Torque's ("Version: 6.1.3") or anything else."""
    match = _PBS_PRO_VERSION.search(qstat_version_output)
    return match.group(1) if match else None


class TorqueScheduler(PbsFamilyScheduler):
    name = "torque"

    def __init__(self) -> None:
        super().__init__()
        self._server_checked = False

    def submit(self, spec: JobSpec) -> str:
        self.check_not_pbs_pro()
        return super().submit(spec)

    def check_not_pbs_pro(self) -> None:
        """Refuse, before any qsub, to drive a PBS Pro / OpenPBS server as Torque.

        Its qstat refuses ``-f -1`` ("conflicting options"), calls a finished job F, prints
        Exit_status and forgets ended jobs without -x, so a job submitted through this
        adapter could never be followed: it would run on with nobody waiting for it."""
        if self._server_checked:
            return
        try:
            proc = self.execute(["qstat", "--version"], "version", lambda *_: True)
        except SchedulerError as exc:
            if exc.transient:
                raise
            return  # no qstat at all: qsub will say so in its own words
        version = pbs_pro_version(proc.stdout + proc.stderr)
        if version is not None:
            raise SiteConfigInvalid(
                f"this site's qsub/qstat are PBS Pro / OpenPBS {version}, not Torque: set "
                'scheduler = "pbspro" for this command in site.toml (nothing was submitted)'
            )
        self._server_checked = True

    def directives(self, spec: JobSpec) -> list[str]:
        return directives(spec)

    def status_argv(self, native_ids: Sequence[str]) -> list[str]:
        return ["qstat", "-f", "-1", *checked_ids(native_ids)]

    def parse_status(self, stdout: str) -> dict[str, NativeStatus]:
        return parse_status(stdout)

    def find_by_name(self, name: str) -> str | None:
        if shutil.which("qselect"):
            return super().find_by_name(name)
        # slurm-wlm-torque ships no qselect: read every job's Job_Name instead.
        return find_job_named(self.run(["qstat", "-f", "-1"], "lookup", unknown_ids_only), name)
