"""The agent API (``/api/v1/agent``): how a site's agent takes jobs and reports on them.

Only site tokens, and only for their own site's jobs (403 otherwise). Every write names the
lease epoch it holds (``Lease-Epoch``); a stale one gets ``409 stale_epoch``, so an agent that
lost its lease can never overwrite the work of the one that holds it now. Claims are atomic
and long-polled on the site's key.

A job is handed only to a live connection of a still-valid token: the token is checked again
inside the claim's transaction (a revoke during the wait gets 401), the connection is checked
right before it (``broker.delivery``), and an answer whose write fails hands the job back at
once. A claim that takes nothing after its wakeup passes the wakeup on to the next waiting
claim of the site. An agent hands back a job it will not run with ``release``.

A claim may list the commands its agent runs (``commands``); it then leaves the jobs that the
site's original pollers may run ([legacy.sites]) and it does not queued for them, and is not
woken for them. A job nobody else runs is still taken, so its site rejects it at once with its
reason. A claim without the list takes any job (agents before the list).
Never reads a file body into memory.
"""

from __future__ import annotations

import logging
from dataclasses import replace

from flask import Blueprint, Response, request
from werkzeug.wrappers import Response as BaseResponse

from broker import auth, defaults, metrics
from broker.api_base import answer, document, empty, json_body, load_job, wait_for
from broker.delivery import ClientGone, client_connected, on_undelivered
from broker.errors import BodyCut, BrokerError, Forbidden, NotFound, TooLarge, Unauthorized
from broker.legacy.api_base import poller_commands
from broker.notify import job_key, site_key
from broker.runtime import Broker, current
from broker.store import (
    LOG_STREAMS,
    Claim,
    JobRecord,
    ResultRecord,
    Scope,
    State,
    check_offset,
    check_result_declaration,
)
from broker.transfers import (
    UploadTarget,
    copy_body,
    empty_file_response,
    file_response,
    receive_upload,
    request_body,
    sync,
)
from broker.validation import (
    EMPTY_SHA256,
    header_int,
    header_sha256,
    input_name,
    parse_claim,
    parse_complete,
    parse_lease,
    parse_no_fields,
    query_wait,
    result_name,
    sized_digest,
)

log = logging.getLogger(__name__)

bp = Blueprint("agent_api", __name__, url_prefix="/api/v1/agent")
bp.before_request(
    auth.require(lambda: current().store, {Scope.SITE}, lambda: current().clock())
)


def site_job(job_id: str) -> JobRecord:
    job = load_job(job_id)
    if job.spec.site != auth.current().subject:
        raise Forbidden(f"job {job_id} belongs to another site")
    return job


def lease_epoch() -> int:
    epoch = header_int(request.headers, "Lease-Epoch")
    return epoch


@bp.post("/claim")
def claim() -> Response:
    broker = current()
    agent_id, commands = parse_claim(json_body())
    principal = auth.current()
    site = principal.subject
    wait = query_wait(request.args, defaults.MAX_WAIT)
    # A job of a command in neither list has nobody else to run it: the agent takes it, and
    # its site rejects it at once with its reason, instead of the job waiting out its TTL.
    others = None if commands is None else frozenset(poller_commands(site))
    try:
        got = wait_for(
            [site_key(site)], wait,
            lambda: _try_claim(broker, site, agent_id, principal.token_id, commands, others),
            commands, others,
        )  # fmt: skip
    except (ClientGone, Unauthorized) as exc:
        # A wakeup for the site's new job that this claim did not use goes on to the next
        # waiting claim that takes the job (``Notifier.listen`` passes it on).
        if isinstance(exc, Unauthorized):
            log.info("claim of agent %s of site %s refused: %s", agent_id, site, exc)
            raise
        log.info("claim of agent %s of site %s: the agent went away", agent_id, site)
        return empty(204)
    if got is None:
        return empty(204)
    log.info(
        "%s: claimed by agent %s of site %s (epoch %d%s)",
        got.job.job_id, agent_id, site, got.epoch, ", reattached" if got.reattach else "",
    )  # fmt: skip
    metrics.job_event("claimed", site)
    if not got.reattach and got.job.queued_at is not None:
        waited = broker.clock() - got.job.queued_at
        metrics.job_time("dispatch_claim_seconds", {"site": site}, waited)
    response = answer({
        "job": got.job.document(),
        "lease": {"epoch": got.epoch, "ttl": broker.config.lease_ttl},
        "reattach": got.reattach,
    })  # fmt: skip
    return on_undelivered(response, lambda: _hand_back(broker, got, "its answer was not sent"))


def _try_claim(
    broker: Broker,
    site: str,
    agent_id: str,
    token_id: str,
    commands: frozenset[str] | None,
    others: frozenset[str] | None,
) -> Claim | None:
    """A claim for a client that is still connected, by a token still valid as it commits,
    of a job whose command the agent runs (``commands``; None: an agent without the list) or
    that nobody else runs (not in ``others``, the original pollers' whitelist)."""
    if not client_connected():
        raise ClientGone
    return broker.store.claim(site, agent_id, broker.config.lease_ttl, broker.clock(),
                              token_id=token_id, commands=commands, others=others)  # fmt: skip


def _hand_back(broker: Broker, got: Claim, why: str) -> None:
    job_id = got.job.job_id
    try:
        job = broker.store.release_claim(job_id, got.epoch, broker.clock())
    except BrokerError as exc:  # it moved on meanwhile (a cancel, a newer lease): nothing to do
        log.warning("%s: not handed back (%s): %s", job_id, why, exc)
        return
    log.warning("%s: handed back at once, %s; now %s", job_id, why, job.state)


@bp.post("/jobs/<job_id>/release")
def release(job_id: str) -> Response:
    """The agent hands a job back it will not run (it is stopping) instead of holding it
    until the lease lapses."""
    broker = current()
    site_job(job_id)
    parse_no_fields(json_body(required=False))
    job = broker.store.release_claim(job_id, lease_epoch(), broker.clock())
    log.info("%s: handed back by its agent; now %s", job_id, job.state)
    return document(job)


@bp.post("/jobs/<job_id>/lease")
def renew_lease(job_id: str) -> Response:
    broker = current()
    before = site_job(job_id)
    running, native_id = parse_lease(json_body(required=False))
    epoch = lease_epoch()
    ttl, now = broker.config.lease_ttl, broker.clock()
    if running:
        job = broker.store.mark_running(job_id, epoch, native_id, ttl, now)
        if before.state is State.CLAIMED and job.state is State.RUNNING and job.queued_at:
            metrics.job_time("dispatch_running_seconds", {"site": job.spec.site},
                             now - job.queued_at)  # fmt: skip
    else:
        job = broker.store.renew_lease(job_id, epoch, ttl, now)
    wait = query_wait(request.args, min(defaults.MAX_LEASE_WAIT, ttl / 2))
    if wait > 0 and not job.cancel_requested:
        wait_for([job_key(job_id)], wait, lambda: _needs_agent(job_id, epoch))
        job = broker.store.check_lease(job_id, epoch)
    remaining = max(0.0, (job.lease_expires or now) - broker.clock())
    return answer({"ttl": round(remaining, 3), "cancel_requested": job.cancel_requested,
                   "epoch": epoch, "state": job.state.value})  # fmt: skip


def _needs_agent(job_id: str, epoch: int) -> JobRecord | None:
    """The job once the agent must act: a cancel, or its lease is no longer its own."""
    job = site_job(job_id)
    held = job.lease_epoch == epoch and job.state.is_held
    return job if job.cancel_requested or not held else None


@bp.get("/jobs/<job_id>/inputs/<name>")
def download_input(job_id: str, name: str) -> BaseResponse:
    job = site_job(job_id)
    record = job.input(input_name(name))
    if job.acked:
        # The client's ack deletes the job's files; the counted bytes are gone, not elsewhere.
        raise NotFound(f"job {job_id} was acknowledged by its client; its inputs are deleted")
    if record is None or not record.complete:
        raise NotFound(f"job {job_id} has no complete input {name!r}")
    if record.size == 0:
        return empty_file_response(record.sha256)
    handle = current().files.open_for_read(job_id, "inputs", name, record.size)
    return file_response(handle, record.size, record.sha256)


@bp.post("/jobs/<job_id>/logs/<stream>")
def append_log(job_id: str, stream: str) -> Response:
    broker = current()
    site_job(job_id)
    if stream not in LOG_STREAMS:
        raise NotFound(f"no log stream {stream!r}; use stdout or stderr")
    epoch = lease_epoch()
    offset = header_int(request.headers, "Log-Offset")
    with broker.uploads.hold((job_id, "logs", stream), defaults.UPLOAD_LOCK_WAIT):
        size = broker.store.check_lease(job_id, epoch).logs[stream]
        if offset > size:
            check_offset(size, offset, header="Log-Size")
        new_size = _append(broker, job_id, stream, epoch, size, skip=size - offset)
    return answer({"size": new_size})


def _append(broker: Broker, job_id: str, stream: str, epoch: int, size: int, skip: int) -> int:
    """Write the body's bytes past ``skip`` (a replay of what we hold) at ``size``."""
    limit = broker.config.max_log_size
    room = None if limit is None else max(0, limit - size)
    with broker.files.open_for_write(job_id, "logs", stream, size) as sink:
        try:
            written = copy_body(
                request_body(broker.config.body_timeout), sink, limit=room, skip=skip,
                limit_message=lambda: f"{stream} of job {job_id} may hold at most {limit} bytes",
            )  # fmt: skip
        except BodyCut as cut:
            sync(sink)
            _count(broker, job_id, stream, epoch, size, cut.received)
            raise
        except TooLarge:
            sink.truncate(size)
            raise
        sync(sink)
    _count(broker, job_id, stream, epoch, size, written)
    return size + written


def _count(broker: Broker, job_id: str, stream: str, epoch: int, size: int, added: int) -> None:
    if added:
        broker.store.append_log(job_id, stream, epoch, size, size + added, broker.clock())


@bp.route("/jobs/<job_id>/results/<anypath:name>", methods=["HEAD"])
def result_offset(job_id: str, name: str) -> Response:
    site_job(job_id)
    name = result_name(name)
    with current().uploads.hold((job_id, "results", name), defaults.UPLOAD_LOCK_WAIT):
        record = site_job(job_id).result(name)
    headers = {"Upload-Offset": str(record.received if record else 0)}
    if record is not None:
        headers.update({"Upload-Length": str(record.size), "Upload-SHA256": record.sha256})
    return empty(200, headers)


@bp.route("/jobs/<job_id>/results/<anypath:name>", methods=["PATCH"])
def upload_result(job_id: str, name: str) -> Response:
    broker = current()
    site_job(job_id)
    name = result_name(name)
    epoch, declared = lease_epoch(), _declared_result(broker, name)
    offset = header_int(request.headers, "Upload-Offset")
    with broker.uploads.hold((job_id, "results", name), defaults.UPLOAD_LOCK_WAIT):
        job = broker.store.check_lease(job_id, epoch)
        check_result_declaration(job.result(name), declared, offset)
        target = UploadTarget(job_id, "results", name, declared.size, declared.sha256)

        def save(received: int) -> None:
            progress = replace(declared, received=received)
            broker.store.set_result_upload(job_id, epoch, progress, offset, broker.clock())

        new_offset = receive_upload(broker.files, target, offset, save,
                                    broker.config.body_timeout)  # fmt: skip
    return empty(204, {"Upload-Offset": str(new_offset)})


def _declared_result(broker: Broker, name: str) -> ResultRecord:
    size = header_int(request.headers, "Upload-Length")
    limit = broker.config.max_result_size
    if limit is not None and size > limit:
        raise TooLarge(f"result {name!r} has {size} bytes; this broker accepts results of at "
                       f"most {limit} bytes", field="Upload-Length")  # fmt: skip
    sha256 = header_sha256(request.headers, "Upload-SHA256")
    return ResultRecord(name, size, sized_digest(size, sha256, "Upload-SHA256"))


@bp.post("/jobs/<job_id>/complete")
def complete(job_id: str) -> Response:
    broker = current()
    site_job(job_id)
    outcome, results, skipped = parse_complete(json_body())
    epoch, now = lease_epoch(), broker.clock()
    before = broker.store.get_job(job_id)
    if before is not None and not before.state.is_final:
        _register_empty_results(broker, before, epoch, results)
    job = broker.store.complete(job_id, epoch, outcome, results, skipped, now)
    if before is not None and not before.state.is_final and job.state.is_final:
        metrics.job_event("completed", job.spec.site, job.state, str(outcome["state"]))
        metrics.job_time("job_duration_seconds", {"site": job.spec.site, "state": job.state.value},
                         now - job.created_at)  # fmt: skip
    log.info("%s: %s (%s, exit code %s, %d results)", job_id, job.state, outcome["state"],
             outcome["exit_code"], len(results))  # fmt: skip
    return document(job)


def _register_empty_results(
    broker: Broker, job: JobRecord, epoch: int, results: list[ResultRecord]
) -> None:
    """An empty result needs no upload; record it so ``complete`` finds it."""
    for result in results:
        if result.size == 0 and job.result(result.name) is None:
            empty_result = ResultRecord(result.name, 0, EMPTY_SHA256)
            broker.store.set_result_upload(job.job_id, epoch, empty_result, 0, broker.clock())
