"""The ``pbspro`` scheduler: qsub / qstat -x -f -F json / qdel / qselect of PBS Pro and OpenPBS.

Commands (argv lists; the script itself comes from ``batch_script.render_script``):

    qsub -o <control>/scheduler.out -j oe <control>/job.sh     prints the id, e.g. 123.pbs01
    qstat -x -f -F json <id> <id> ...                          one call for every job we follow
                                                               (without -x when history is off)
    qdel <id>                                                  (not -x: it would purge history)
    qselect -N <name>                                          duplicate-submit guard, recovery

A submit cut off before its id was recorded is recovered from ``$PBS_JOBID``, which the job
script records in the control dir as its first act (``$SLURM_JOB_ID`` under Slurm's PBS
wrappers, which leave ``PBS_JOBID`` unset), or while the job is still queued by ``qselect``.

``-x`` includes finished jobs, kept for the server's ``job_history_duration`` when
``job_history_enable`` is set. It is off by default, and then ``qstat -x`` lists no job at all
(it notes "PBS is not configured to maintain job history" on stderr): the adapter then asks
without ``-x``, and a job that has left the server is settled from what it left in its control
dir (``pbs_base.settle_unlisted``: the recorded exit code, pbs_mom's kill notice in
scheduler.out, our own cancel). ``-F json`` prints
``{"timestamp", "pbs_version", "pbs_server", "Jobs": {<id>: {attribute: value}}}`` with
resources as nested objects (``resources_used``, ``Resource_List``) and numbers as numbers.
Unknown ids go to stderr ("qstat: Unknown Job Id 123.pbs01") while the others still print.

State table (PBS ``job_state`` -> our state). Source: "Job States" in the PBS Professional
Reference Guide (2021.1 section 8.1 and 2024.1), job states in openpbs ``src/include/job.h``:

    Q  queued                                         -> queued
    T  transiting to or from a server                 -> queued
    W  waiting for its execution time, or 30 min after a failed stage-in
                                                      -> held    (not eligible until then)
    H  held by a user, operator or the server         -> held
    S  suspended by the server (preemption)           -> held    (stopped, not running)
    U  suspended: its workstation became busy         -> held
    R  running                                        -> running
    B  array job begun                                -> running
    E  exiting: ended, PBS is staging files out and running the epilogue
                                                      -> running (ambiguous: Exit_status may
                                                                  already show but the output is
                                                                  not back yet; final only at F)
    F  finished (completed, failed or deleted)        -> by Exit_status, below
    X  subjob expired (finished)                      -> by Exit_status, below
    M  moved to another server                        -> lost    (it runs on under another
                                                                  server; we cannot follow it)

Exit_status of an F job (sources: "Job Exit Status" in the PBS Professional Reference Guide,
Table 11-1 and Table 11-2 "Job Exit Codes"; ``JOB_EXEC_*`` in openpbs ``src/include/job.h``;
``scan_for_terminated()`` in openpbs ``src/resmom/linux/mom_start.c`` for 0x100 + signal):

    absent            never ran: deleted while queued (substate 91)  -> cancelled
                      otherwise                                      -> failed (no exit code)
    0                 the script exited 0                            -> completed
    1..255            the script's status, which is the solver's     -> failed (129..192: the
                                                                        solver died of signal-128)
    256+N             the script's shell was killed by signal N:
                        used walltime >= its limit                   -> timeout (PBS Pro before
                                                                        the KILL_* codes: 271)
                        SIGKILL with used mem >= its limit           -> out_of_memory
                        deleted (substate 91, TERMINATED)            -> cancelled
                        otherwise                                    -> failed, with the signal
    -29 KILL_WALLTIME, -28 KILL_CPUT                                 -> timeout
    -27 KILL_MEM, -26 KILL_VMEM, -31 KILL_HPMEM                      -> out_of_memory
    -11 RERUN, -12 CHKP, -15 QUERST (stopped to be rerun or restarted)
                                                                     -> preempted
    -1 FAIL1, -2 FAIL2, -3 RETRY, -4 INITABT, -5 INITRST, -6 INITRMG, -7 BADRESRT,
    -14 RERUN_SIS_FAIL, -20 RERUN_MS_FAIL, -30 JOINJOB, -32 RERUN_ZOMBIE_JOB
      (pbs_mom, a node or the link to it failed)                     -> node_fail
    -10 FAILUID, -13 FAIL_PASSWORD, -21 FAIL_SECURITY, -23 FAIL_KRB5 (the account),
    -16..-19, -22 (a site hook rejected, requeued or deleted the job),
    -24 KILL_NCPUS_BURST, -25 KILL_NCPUS_SUM (used more CPUs than asked)
                                                                     -> failed
    other negative                                                   -> node_fail

The substates 91 (TERMINATED), 92 (FINISHED) and 93 (FAILED) of F jobs are openpbs job.h's
history substates, named after the OGF BES states (terminated = ended on request).
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
from collections.abc import Sequence
from typing import Any

from bridge.core.errors import SchedulerError
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
)
from schedulers.pbs_outcome import ExecCodes, Usage, exit_status_outcome

log = logging.getLogger(__name__)

STATES = {
    "Q": JobState.QUEUED,
    "T": JobState.QUEUED,
    "W": JobState.HELD,
    "H": JobState.HELD,
    "S": JobState.HELD,
    "U": JobState.HELD,
    "R": JobState.RUNNING,
    "B": JobState.RUNNING,
    "E": JobState.RUNNING,
}
FINISHED_STATES = ("F", "X")
SUBSTATE_TERMINATED = 91  # history substate of a job deleted on request

_NODE = JobState.NODE_FAIL
_FAILED = JobState.FAILED
_PREEMPTED = JobState.PREEMPTED
JOB_EXEC: ExecCodes = {
    -1: ("JOB_EXEC_FAIL1", _NODE, "job start failed before files, no retry"),
    -2: ("JOB_EXEC_FAIL2", _NODE, "job start failed after files, no retry"),
    -3: ("JOB_EXEC_RETRY", _NODE, "job start failed and was not retried"),
    -4: ("JOB_EXEC_INITABT", _NODE, "job aborted on pbs_mom initialization"),
    -5: ("JOB_EXEC_INITRST", _NODE, "job aborted on pbs_mom init (checkpoint)"),
    -6: ("JOB_EXEC_INITRMG", _NODE, "job aborted on pbs_mom init (migrate)"),
    -7: ("JOB_EXEC_BADRESRT", _NODE, "job restart failed"),
    -10: ("JOB_EXEC_FAILUID", _FAILED, "invalid user or group for the job"),
    -11: ("JOB_EXEC_RERUN", _PREEMPTED, "job was stopped to be rerun"),
    -12: ("JOB_EXEC_CHKP", _PREEMPTED, "job was checkpointed and killed"),
    -13: ("JOB_EXEC_FAIL_PASSWORD", _FAILED, "bad password for the job's account"),
    -14: ("JOB_EXEC_RERUN_SIS_FAIL", _NODE, "lost contact between mother superior and a sister"),
    -15: ("JOB_EXEC_QUERST", _PREEMPTED, "job requeued for restart from checkpoint"),
    -16: ("JOB_EXEC_FAILHOOK_RERUN", _FAILED, "a site hook rejected the job start"),
    -17: ("JOB_EXEC_FAILHOOK_DELETE", _FAILED, "a site hook rejected the job start"),
    -18: ("JOB_EXEC_HOOK_RERUN", _FAILED, "a site hook requeued the job"),
    -19: ("JOB_EXEC_HOOK_DELETE", _FAILED, "a site hook deleted the job"),
    -20: ("JOB_EXEC_RERUN_MS_FAIL", _NODE, "the server lost contact with the job's pbs_mom"),
    -21: ("JOB_EXEC_FAIL_SECURITY", _FAILED, "security check of the PBS directories failed"),
    -22: ("JOB_EXEC_HOOKERROR", _FAILED, "a site hook failed or timed out"),
    -23: ("JOB_EXEC_FAIL_KRB5", _FAILED, "no Kerberos credentials for the job"),
    -24: ("JOB_EXEC_KILL_NCPUS_BURST", _FAILED, "job used more CPUs than it asked for"),
    -25: ("JOB_EXEC_KILL_NCPUS_SUM", _FAILED, "job used more CPU time than its CPUs allow"),
    -26: ("JOB_EXEC_KILL_VMEM", JobState.OUT_OF_MEMORY, "job exceeded its vmem limit"),
    -27: ("JOB_EXEC_KILL_MEM", JobState.OUT_OF_MEMORY, "job exceeded its mem limit"),
    -28: ("JOB_EXEC_KILL_CPUT", JobState.TIMEOUT, "job exceeded its CPU time limit"),
    -29: ("JOB_EXEC_KILL_WALLTIME", JobState.TIMEOUT, "job exceeded its walltime"),
    -30: ("JOB_EXEC_JOINJOB", _NODE, "a sister pbs_mom failed to join the job"),
    -31: ("JOB_EXEC_KILL_HPMEM", JobState.OUT_OF_MEMORY, "job exceeded its huge-page memory"),
    -32: ("JOB_EXEC_RERUN_ZOMBIE_JOB", _NODE, "pbs_mom lost the job (re-imaged node?)"),
}

# What OpenPBS 23.06 prints as it stands: backslashes in a value (``Submit_arguments`` of
# ``tr '\"\0\"'``) are not escaped, so "\0" is an invalid escape, and PBS Pro 19 printed
# numeric-looking values (``005``) unquoted in ``Variable_List``. A backslash that starts no
# JSON escape is read as itself; a value that still does not parse becomes null (the field is
# dropped, the job kept). -F json prints one attribute per line, so a line is one field.
_BAD_ESCAPE = re.compile(r'\\(?!["\\/bfnrt]|u[0-9a-fA-F]{4})')
_FIELD = re.compile(r'^(\s*"(?:[^"\\]|\\.)*":\s*)(.*?)(,?)\s*$')
# The note qstat -x writes on stderr per job when the server keeps no history (it exits 0 and
# lists none of the jobs, running or not).
NO_HISTORY = "not configured to maintain job history"


# --- parsing (pure functions, tested on captured output) ------------------------------------


def parse_qstat_json(text: str) -> dict[str, dict[str, Any]]:
    """Job id -> attributes from ``qstat -f -F json`` (empty when no job is listed)."""
    if not text.strip():
        return {}
    document = _loads(text)
    jobs = document.get("Jobs", {}) if isinstance(document, dict) else None
    if not isinstance(jobs, dict):
        raise SchedulerError(f"qstat -F json printed no Jobs object: {text[:120]!r}")
    return {str(k): v for k, v in jobs.items() if isinstance(v, dict)}


def _loads(text: str) -> Any:
    with contextlib.suppress(json.JSONDecodeError):
        return json.loads(text)
    repaired = _BAD_ESCAPE.sub(r"\\\\", text)
    with contextlib.suppress(json.JSONDecodeError):
        return json.loads(repaired)
    try:
        return json.loads("\n".join(_field_or_null(line) for line in repaired.splitlines()))
    except json.JSONDecodeError as exc:
        raise SchedulerError(
            f"qstat -F json printed a document that does not parse ({exc}); "
            f"it begins {text[:120]!r}"
        ) from exc


def _field_or_null(line: str) -> str:
    """One ``"key":value,`` line as it is, or with null for a value that is not JSON."""
    match = _FIELD.match(line)
    if match is None or match.group(2) in ("{", "[", ""):
        return line
    try:
        json.loads(match.group(2))
    except json.JSONDecodeError:
        return f"{match.group(1)}null{match.group(3)}"
    return line


def _int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and re.fullmatch(r"-?[0-9]+", value.strip()):
        return int(value)
    return None


def _resource(job: dict[str, Any], group: str, name: str) -> str | None:
    values = job.get(group)
    value = values.get(name) if isinstance(values, dict) else None
    return None if value is None else str(value)


def job_status(job: dict[str, Any]) -> NativeStatus:
    """Our view of one job's attributes (the state table in the module docstring)."""
    state = str(job.get("job_state", "")).strip()
    if state in FINISHED_STATES:
        return finished_status(job)
    if state == "M":
        return NativeStatus(
            JobState.LOST, reason="PBS moved the job to another server; it cannot be followed"
        )
    if state in STATES:
        comment = str(job.get("comment", "")).strip()
        return NativeStatus(STATES[state], reason=f"PBS state {state}: {comment}".rstrip(": "))
    return NativeStatus(JobState.QUEUED, reason=f"unknown PBS job state {state!r:.20}")


def finished_status(job: dict[str, Any]) -> NativeStatus:
    deleted = _int(job.get("substate")) == SUBSTATE_TERMINATED
    code = _int(job.get("Exit_status"))
    if code is None:
        comment = str(job.get("comment", "")).strip()
        said = f" (PBS comment: {comment})" if comment else ""
        if deleted:
            return NativeStatus(JobState.CANCELLED, reason=f"deleted before it ran{said}")
        return NativeStatus(
            JobState.FAILED, reason=f"PBS finished the job without an Exit_status{said}"
        )
    usage = Usage(
        walltime=parse_walltime(_resource(job, "resources_used", "walltime")),
        walltime_limit=parse_walltime(_resource(job, "Resource_List", "walltime")),
        mem=parse_size(_resource(job, "resources_used", "mem")),
        mem_limit=parse_size(_resource(job, "Resource_List", "mem")),
    )
    return exit_status_outcome(code, usage, deleted, "PBS", JOB_EXEC)


def parse_status(text: str) -> dict[str, NativeStatus]:
    return {job_id: job_status(job) for job_id, job in parse_qstat_json(text).items()}


# --- building commands ----------------------------------------------------------------------


def directives(spec: JobSpec) -> list[str]:
    lines = common_directives(spec)
    res = spec.resources
    if res.nodes or res.cpus or res.tasks or res.memory_mb:
        nodes, ncpus, tasks_per_node = layout(res)
        # One chunk per node; mem in a chunk is per node, as the site config's memory is.
        chunk = f"{nodes}:ncpus={ncpus}"
        if tasks_per_node:
            chunk += f":mpiprocs={tasks_per_node}"
        if res.memory_mb:
            chunk += f":mem={res.memory_mb}mb"
        lines.append(f"#PBS -l select={chunk}")
        if nodes > 1:
            # Without it the scheduler may pack several chunks onto one host.
            lines.append("#PBS -l place=scatter")
    lines.extend(queue_account_extra(res))
    return lines


class PbsProScheduler(PbsFamilyScheduler):
    name = "pbspro"

    def __init__(self) -> None:
        super().__init__()
        # Whether the server keeps job history (job_history_enable); None until qstat -x says.
        self.history: bool | None = None

    def directives(self, spec: JobSpec) -> list[str]:
        return directives(spec)

    def status_argv(self, native_ids: Sequence[str]) -> list[str]:
        history = [] if self.history is False else ["-x"]
        return ["qstat", *history, "-f", "-F", "json", *checked_ids(native_ids)]

    def parse_status(self, stdout: str) -> dict[str, NativeStatus]:
        return parse_status(stdout)

    def query_status(self, native_ids: Sequence[str]) -> dict[str, NativeStatus]:
        # Without history, qstat -x lists no job at all, not even a running one, and says so
        # on stderr: asked again without -x, which lists the live ones. A job gone from
        # there is settled from what it left in its control dir (``settle_unlisted``).
        proc = self.execute(self.status_argv(native_ids), "status", self.status_output_usable)
        if NO_HISTORY in proc.stderr and self.history is not False:
            log.info("the PBS server keeps no job history: qstat without -x from now on")
            self.history = False
            proc = self.execute(self.status_argv(native_ids), "status", self.status_output_usable)
        return parse_status(proc.stdout)

    def finished_status(self, native_ids: Sequence[str]) -> dict[str, NativeStatus]:
        # Some OpenPBS builds after 23.06 print only the first of several jobs asked for with
        # -F json, and history may have been turned on since: a job missing from the answer
        # is asked about alone with -x before it is settled as gone; one call each, once.
        found: dict[str, NativeStatus] = {}
        for native_id in native_ids:
            argv = ["qstat", "-x", "-f", "-F", "json", *checked_ids([native_id])]
            proc = self.execute(argv, "status", self.status_output_usable)
            if NO_HISTORY in proc.stderr:
                self.history = False
                break  # no history: nothing more to learn about any ended job
            status = parse_status(proc.stdout).get(native_id)
            if status is not None:
                self.history = True
                found[native_id] = status
        return found
