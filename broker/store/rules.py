"""The checks and outcomes of the storage contract that do not depend on a backend.

Each backend loads a job, asks these functions whether a change is allowed (they raise the
``broker.errors`` type the API answers) and what a job the broker ends itself says, then writes
the change its own way. So the refusals, their messages and the outcomes' reasons read the same
whatever backend holds the job; the API applies ``check_offset`` and
``check_result_declaration`` too, before it reads a request body.

Everything here is pure: it never reads or writes a backend, never looks at the clock (the time
is an argument) and never changes a record.
"""

from __future__ import annotations

import time
from collections.abc import Collection, Mapping, Sequence
from typing import Any

from broker.errors import (
    AlreadyClaimed,
    ChecksumMismatch,
    InputsIncomplete,
    InvalidState,
    NotFound,
    OffsetMismatch,
    StaleEpoch,
    StateConflict,
    Unauthorized,
)
from broker.store.records import (
    LOG_STREAMS,
    InputRecord,
    JobRecord,
    LegacyRecord,
    NewJob,
    ResultRecord,
    State,
    TokenRecord,
)

# The legacy progress a job starts at when an original poller takes it (calc-params).
LEGACY_CLAIMED_PROGRESS = "sending params"


# --- offsets and declarations (also applied by the API) -------------------------------------------


def check_offset(held: int, expected: int, header: str = "Upload-Offset") -> None:
    """The client's offset must be what the broker holds; the answer says what that is."""
    if held != expected:
        raise OffsetMismatch(
            f"the broker holds {held} bytes, not {expected}; continue from {held}",
            headers={header: str(held)},
            extra={"size": held},
        )


def check_result_declaration(held: ResultRecord | None, new: ResultRecord, offset: int) -> None:
    """A result's size and digest are fixed once its upload began, unless it restarts at 0."""
    if held is None:
        check_offset(0, offset)
        return
    if (held.size, held.sha256) != (new.size, new.sha256):
        if offset != 0:
            raise StateConflict(
                f"result {new.name!r} was declared with Upload-Length {held.size} and another "
                "Upload-SHA256; send the new declaration from offset 0 to replace it",
                field="Upload-Length",
            )
        return
    check_offset(held.received, offset)


# --- the client's side -------------------------------------------------------------------------


def job_not_found(job_id: str) -> NotFound:
    return NotFound(f"no job {job_id} (never created, or deleted after its retention)")


def check_same_request(existing: JobRecord, spec: NewJob) -> None:
    """A repeated create must come from the same client with the same body."""
    if existing.spec.client != spec.client:
        raise StateConflict(f"job id {spec.job_id} is taken; create the job with a new id")
    if existing.spec.fingerprint() != spec.fingerprint():
        raise StateConflict(
            f"job {spec.job_id} exists with a different request; use a new job id for a "
            "different job",
            field="job_id",
        )


def id_taken(job_id: str) -> StateConflict:
    """A job the broker names itself (the original API's) met an id in use."""
    return StateConflict(f"job id {job_id} is taken; the broker makes a new one")


def writable_input(job: JobRecord, name: str) -> InputRecord:
    """The input whose upload progress may change now."""
    if job.state is not State.CREATED:
        raise InvalidState(f"job {job.job_id} is {job.state}; inputs can no longer change")
    record = job.input(name)
    if record is None:
        raise NotFound(f"job {job.job_id} declares no input {name!r}")
    return record


def check_inputs_complete(job: JobRecord) -> None:
    missing = next((i for i in job.inputs if not i.complete), None)
    if missing is not None:
        raise InputsIncomplete(
            f"input {missing.name!r} has {missing.received} of {missing.size} bytes; "
            "finish its upload before submitting",
            field=missing.name,
        )


def cancel_is_done(job: JobRecord) -> bool:
    """A cancel changes nothing on a final job or one whose cancel is already requested."""
    return job.state.is_final or (job.cancel_requested and not job.agent_lost)


def cancel_outcome(job: JobRecord) -> dict[str, Any] | None:
    """The outcome of a cancel that ends the job at once, or None when the agent holding it
    is asked to stop it instead."""
    if job.state not in (State.CREATED, State.QUEUED) and not job.agent_lost:
        return None
    reason = (
        "cancelled while the site's agent was lost; the site may still run it"
        if job.agent_lost
        else "cancelled before any agent claimed it"
    )
    return broker_outcome("cancelled", reason)


def check_ackable(job: JobRecord) -> None:
    if not job.state.is_final:
        raise InvalidState(f"job {job.job_id} is {job.state}; acknowledge it once it ended")


# --- the agent's side --------------------------------------------------------------------------


def check_held(job: JobRecord, epoch: int) -> JobRecord:
    """The job if the agent presenting ``epoch`` holds its lease now."""
    if job.state.is_final:
        raise InvalidState(f"job {job.job_id} is {job.state}; it takes no more agent writes")
    if not job.state.is_held or job.lease_epoch != epoch:
        raise StaleEpoch(
            f"lease epoch {epoch} of job {job.job_id} is stale (current {job.lease_epoch}, "
            f"state {job.state}); stop working on this job",
            extra={"epoch": job.lease_epoch},
        )
    return job


def check_claiming_token(record: TokenRecord | None, token_id: str) -> None:
    """A job goes only to a token that is still valid when the claim commits: a long poll
    authenticated before a revoke must not take work after it."""
    if record is None:
        raise unknown_token()
    if record.revoked:
        raise token_revoked(token_id)


def release_outcome(job: JobRecord) -> dict[str, Any] | None:
    """The outcome of a claimed job its agent hands back while a cancel is requested (it
    ends now); None when the job goes back to the queue or, running, waits for its agent."""
    if job.state is State.CLAIMED and job.cancel_requested:
        return broker_outcome("cancelled", "cancelled before any agent started it")
    return None


def starts_running(job: JobRecord, native_id: str | None) -> bool:
    """Whether ``mark_running`` changes the job (a new state or a new native id)."""
    return job.state is State.CLAIMED or (native_id is not None and native_id != job.native_id)


def log_size(job: JobRecord, stream: str) -> int:
    """The acknowledged size of a log stream."""
    if stream not in LOG_STREAMS:
        raise NotFound(f"no log stream {stream!r}; use stdout or stderr")
    return job.logs[stream]


def is_repeated_complete(job: JobRecord, epoch: int) -> bool:
    """A retried complete of the same lease: the first one counted."""
    return job.state.is_final and job.lease_epoch == epoch and job.outcome is not None


def check_results_uploaded(job: JobRecord, results: Sequence[ResultRecord]) -> None:
    for wanted in results:
        held = job.result(wanted.name)
        if held is None or not held.complete:
            have = held.received if held is not None else 0
            raise InputsIncomplete(
                f"result {wanted.name!r} has {have} of {wanted.size} bytes uploaded; "
                "finish its upload before completing",
                field=wanted.name,
            )
        if (held.size, held.sha256) != (wanted.size, wanted.sha256):
            raise ChecksumMismatch(
                f"result {wanted.name!r} was uploaded as {held.size} bytes with SHA-256 "
                f"{held.sha256[:16]}..., not {wanted.size} bytes with {wanted.sha256[:16]}...",
                field=wanted.name,
            )


# Timeline notes (``JobEvent.note``) of changes that keep the state.
NOTE_CANCEL_REQUESTED = "cancel requested; the agent holding the job is asked to stop it"
NOTE_AGENT_LOST = "agent lost: its lease lapsed while the job ran"
NOTE_HANDED_BACK = "its agent handed the running job back; its next claim re-attaches"


def is_failure(state: State, outcome: Mapping[str, Any] | None) -> bool:
    """An ended job that did not succeed: expired, or an outcome other than completed or
    cancelled (a cancel is somebody's decision, not a failure)."""
    if state is State.EXPIRED:
        return True
    if not state.is_final or outcome is None:
        return False
    return outcome.get("state") not in ("completed", "cancelled")


def completed_state(outcome: Mapping[str, Any]) -> State:
    return State.CANCELLED if outcome.get("state") == "cancelled" else State.FINISHED


# --- what the broker ends itself -------------------------------------------------------------


def broker_outcome(state: str, reason: str) -> dict[str, Any]:
    """The outcome of a job the broker ended itself (no agent reported one)."""
    return {"state": state, "exit_code": None, "signal": None, "reason": reason}


def abandoned_claim_outcome() -> dict[str, Any]:
    """A claimed job with a cancel requested whose agent stopped answering."""
    return broker_outcome(
        "cancelled", "cancelled; the agent that had claimed it stopped answering"
    )


def waited_too_long(job: JobRecord, now: float, queue_ttl: float) -> bool:
    """Queued (nobody took it) or left created (the client left) longer than the queue TTL."""
    if job.state is State.QUEUED:
        return job.queued_at is not None and job.queued_at < now - queue_ttl
    return job.state is State.CREATED and job.updated_at < now - queue_ttl


def expiry_outcome(job: JobRecord, queue_ttl: float) -> dict[str, Any]:
    ttl = human_duration(queue_ttl)
    if job.state is State.QUEUED:
        reason = f"no agent of site {job.spec.site} claimed it within {ttl}"
    else:
        reason = f"its inputs were not uploaded and submitted within {ttl}"
    return broker_outcome("lost", reason)


def human_duration(seconds: float) -> str:
    """``86400 -> '1d'``, ``90 -> '90s'``: for reasons a person reads."""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


# --- the original API (broker.legacy) ------------------------------------------------------------


def check_legacy_claimable(job: JobRecord, site: str) -> None:
    """Only a queued job of the poller's own site may go to an original poller."""
    if job.spec.site != site:
        raise InvalidState(f"job {job.job_id} is not a job of site {site}")
    if job.state is not State.QUEUED:
        if job.state.is_held:
            raise AlreadyClaimed(
                f"job {job.job_id} is taken already (by {job.agent_id}); only one poller "
                "or agent runs a job"
            )
        raise InvalidState(f"job {job.job_id} is {job.state}; it cannot be taken now")


def check_legacy_step(
    job: JobRecord, record: LegacyRecord | None, poller: str, expect: Collection[str]
) -> LegacyRecord:
    """The legacy record of a job ``poller`` holds under the lease it took at calc-params,
    at one of the progresses in ``expect``."""
    if job.state.is_final:
        raise InvalidState(f"job {job.job_id} is {job.state}; it takes no more steps")
    holds = (
        job.state.is_held
        and record is not None
        and job.agent_id == poller == record.poller
        and record.epoch == job.lease_epoch
    )
    if not holds or record is None:
        raise StaleEpoch(
            f"job {job.job_id} is not held by this poller (held by {job.agent_id}, "
            f"{job.state}); take jobs with calc-params first",
            extra={"epoch": job.lease_epoch},
        )
    if record.progress not in expect:
        wanted = " or ".join(f"'{p}'" for p in sorted(expect))
        raise InvalidState(
            f"job {job.job_id} is at '{record.progress}'; this call needs {wanted}"
        )
    return record


# --- tokens -------------------------------------------------------------------------------------


def token_exists(token_id: str) -> StateConflict:
    return StateConflict(f"token id {token_id} exists already")


def session_exists() -> StateConflict:
    # Never names the hash: it is as close to the session id as the store gets.
    return StateConflict("a console session with this id exists already; log in again")


def unknown_token() -> Unauthorized:
    return Unauthorized("the bearer token is not known to this broker")


def token_expired(token_id: str, expires_at: float) -> Unauthorized:
    when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(expires_at))
    return Unauthorized(
        f"token {token_id} expired at {when}; ask the broker's operator for a new one"
    )


def token_revoked(token_id: str) -> Unauthorized:
    return Unauthorized(f"token {token_id} was revoked; ask the broker's operator for a new one")
