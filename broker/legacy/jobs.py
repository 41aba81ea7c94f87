"""The broker's jobs as the original clients see them, and which of them an original poller
may take: the rules of ``broker.legacy`` that need a job of the store, without HTTP.

The progress and status a workflow client sees are derived from the job's state in the store
(``progress``/``status``), so a job run by a new agent reads the same as one run by an original
poller. A job goes to an original poller only if ``offer_problem`` finds nothing against it.

Never: offer a poller a job whose command is not whitelisted exactly for its site, or hand
a new-API job's typed parameters to a poller.
"""

from __future__ import annotations

from typing import Any

from broker.legacy.calc_info import encoded_size, result_name_problem
from broker.legacy.config import LegacyConfig
from broker.legacy.replies import LOG_FILES, STDERR_NAME, STDOUT_NAME, Progress, Refused, Status
from broker.store import JobRecord, LegacyRecord, State

POLLER_PREFIX = "legacy:"  # agent id of an original poller: legacy:<token id>
ORIGIN = {"origin": "mi-distcomp-api"}  # metadata of jobs made by add-calcinfo
# A job of the new API may name the files an original poller should send back (colon-separated,
# like the workflow client's argument); without them the poller calls every run abnormal.
RESULT_FILES_KEY = "legacy_result_files"
# The command string as the original workflow client gave it (a whitelisted path), kept by a
# drop-in that sends new agents only its file name: what an original poller is offered and runs.
COMMAND_KEY = "legacy_command"


# --- what a workflow client sees -------------------------------------------------------------


def held_by_poller(job: JobRecord, record: LegacyRecord | None) -> bool:
    """The original poller that took the job at calc-params holds its lease now (or held
    the last one, for a job that ended under it)."""
    return (
        record is not None
        and record.poller is not None
        and job.agent_id == record.poller
        and record.epoch == job.lease_epoch
    )


def progress(job: JobRecord, record: LegacyRecord | None) -> Progress:
    if job.state.is_final:
        return Progress.GOT_RETURN
    if job.state in (State.CREATED, State.QUEUED):
        return Progress.NOT_START
    if held_by_poller(job, record) and record is not None and record.progress:
        return Progress(record.progress)
    # A new agent's job: claimed means it is fetching the inputs.
    return Progress.SENDING_PARAMS if job.state is State.CLAIMED else Progress.RUNNING


def declared_results(job: JobRecord, record: LegacyRecord | None) -> list[str]:
    """The result names a workflow client gets back, in the order it declared them."""
    if record is not None:
        files = record.calc_info.get("result_files")
        if isinstance(files, dict):
            return list(files)
    return [r.name for r in job.listed_results()] + [STDOUT_NAME, STDERR_NAME]


def status(job: JobRecord, record: LegacyRecord | None) -> Status:
    if not job.state.is_final:
        if held_by_poller(job, record) and record is not None and record.status:
            return Status(record.status)
        return Status.NONE
    outcome = job.outcome or {}
    if outcome.get("state") != "completed":
        return Status.ABNORMAL
    # The original poller's rule: a run that left none of the declared files (besides the two
    # it writes itself) is abnormal whatever its exit code.
    listed = {r.name for r in job.listed_results()}
    wanted = [n for n in declared_results(job, record) if n not in LOG_FILES]
    return Status.COMPLETED if any(name in listed for name in wanted) else Status.ABNORMAL


# How long a job that ended abnormally reads "getting return" to a workflow client that has not
# yet been told "abnormal" (see ``reported_progress``); the original client asks every 10 s.
ABNORMAL_GRACE = 60.0


def reported_progress(
    job: JobRecord, record: LegacyRecord | None, *, abnormal_told: bool, now: float
) -> Progress:
    """The progress calc-progress answers.

    The workflow client asks calc-status, then calc-progress, and stops at "got return". A job
    that ends abnormally between the two calls (a new agent's job turns final at once) would
    read "none", then "got return": the client would never see "abnormal" and exit 0. So such a
    job reads "getting return" until a calc-status has answered "abnormal" for it (or, for a
    client that never asks calc-status, until ``ABNORMAL_GRACE`` has passed).
    """
    value = progress(job, record)
    if value is not Progress.GOT_RETURN or abnormal_told:
        return value
    if status(job, record) is not Status.ABNORMAL:
        return value
    ended = job.finished_at if job.finished_at is not None else now
    return Progress.GETTING_RETURN if now - ended < ABNORMAL_GRACE else value


def outcome_reason(job: JobRecord) -> str | None:
    """Why a job did not complete, for its 計算標準エラー出力.txt; None if it completed."""
    outcome = job.outcome or {}
    if outcome.get("state") == "completed":
        return None
    state = outcome.get("state") or job.state.value
    reason = outcome.get("reason") or ""
    return f"job {state}: {reason}" if reason else f"job {state}"


# --- jobs an original poller may take --------------------------------------------------------


def offer_problem(job: JobRecord, record: LegacyRecord | None, config: LegacyConfig) -> str | None:
    """Why this queued job must not go to an original poller (None: it may).

    The poller runs ``command`` with a shell, so only an exact whitelisted command is ever
    handed out; it ignores parameters, so a job of the new API with parameters waits for a new
    agent; and its files travel in one base64 body, so they must fit ``max_body``.
    """
    command = legacy_command(job)
    if not config.allows(job.spec.site, command):
        return (
            f"command {command!r:.80} is not whitelisted for original pollers of "
            f"site {job.spec.site} ([legacy.sites] in broker.toml)"
        )
    if record is None:
        if job.spec.params:
            return "the job has parameters, which an original poller would ignore"
        try:
            new_api_result_files(job)
        except Refused as exc:
            return exc.message
    size = sum(encoded_size(i.size) for i in job.inputs)
    if size > config.max_body:
        return (
            f"its inputs take {size} bytes as base64, more than the legacy limit of "
            f"{config.max_body} ([legacy] max_body); run it with a new agent"
        )
    return None


def legacy_command(job: JobRecord) -> str:
    """The command an original poller runs for ``job``: the original string when a drop-in
    kept it (metadata ``legacy_command``), else the job's command."""
    return job.spec.metadata.get(COMMAND_KEY) or job.spec.command


def new_api_result_files(job: JobRecord) -> list[str]:
    """The results a job of the new API asks an original poller for (metadata
    ``legacy_result_files``, colon-separated), then the two files the poller always writes."""
    raw = job.spec.metadata.get(RESULT_FILES_KEY, "")
    names = [name for name in raw.split(":") if name] if raw else []
    for name in names:
        problem = result_name_problem(name)
        if problem:
            raise Refused(409, 400, f"metadata {RESULT_FILES_KEY}: {problem}")
    return [*names, STDOUT_NAME, STDERR_NAME]


def calc_info_of(job: JobRecord, record: LegacyRecord | None) -> dict[str, Any]:
    """The stored calc-info (without contents) of a job: as registered, or made up for a job
    of the new API. ``parameters`` of a new-API job is empty: its typed parameters are not
    handed to original pollers (such jobs are not offered to them at all)."""
    if record is not None:
        return dict(record.calc_info)
    empty = {"content": "", "mimetype1": "", "mimetype2": ""}
    return {
        "command": legacy_command(job),
        "remote-site": job.spec.site,
        "parameters": "",
        "parameter_files": {},  # types are guessed from the bytes when they are sent
        "result_files": {name: dict(empty) for name in new_api_result_files(job)},
    }
