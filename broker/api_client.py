"""The client API (``/api/v1/jobs``): what MInt's bridge node does with its jobs.

A client token sees and changes only the jobs it created; an admin token sees all of them.
Inputs arrive as resumable raw-byte uploads (``Upload-Offset``), results leave as raw bytes
with ``Range``; logs and the job document are long-polled. A job for a site the broker does
not serve is refused at create (``broker.sites``), and a queued job's document carries a
``notice`` while no agent of its site is online. Never reads a file body into memory and never
answers for another client's job (403).
"""

from __future__ import annotations

import logging

from flask import Blueprint, Response, request
from werkzeug.wrappers import Response as BaseResponse

from broker import auth, defaults, metrics
from broker.api_base import answer, empty, json_body, load_job, wait_for
from broker.errors import Forbidden, InvalidState, NotFound, TooLarge
from broker.notify import job_key
from broker.runtime import current
from broker.sites import Presence, check_registered, client_document
from broker.store import LOG_STREAMS, InputRecord, JobRecord, Scope, State, check_offset
from broker.transfers import UploadTarget, empty_file_response, file_response, receive_upload
from broker.validation import (
    header_int,
    input_name,
    parse_create,
    parse_no_fields,
    query_int,
    query_state,
    query_wait,
    result_name,
)

log = logging.getLogger(__name__)

bp = Blueprint("client_api", __name__, url_prefix="/api/v1/jobs")
bp.before_request(
    auth.require(lambda: current().store, {Scope.CLIENT, Scope.ADMIN}, lambda: current().clock())
)

LIST_LIMIT = 500


def _document(job: JobRecord, status: int = 200) -> Response:
    """The job document, with a notice when no agent of its site is online."""
    return answer(client_document(job, Presence.of(current())), status)


def own_job(job_id: str) -> JobRecord:
    """The job, if this token's client created it (admin: any job)."""
    job = load_job(job_id)
    principal = auth.current()
    if principal.scope is not Scope.ADMIN and job.spec.client != principal.subject:
        raise Forbidden(f"job {job_id} belongs to another client")
    return job


@bp.post("")
def create_job() -> Response:
    broker = current()
    spec = parse_create(json_body(), auth.current().subject)
    check_registered(broker, spec.site)  # else it would wait for an agent that cannot exist
    limit = broker.config.max_input_size
    for index, item in enumerate(spec.inputs):
        if limit is not None and item.size > limit:
            raise TooLarge(
                f"input {item.name!r} has {item.size} bytes; this broker accepts inputs of at "
                f"most {limit} bytes",
                field=f"inputs[{index}].size",
            )
    job, created = broker.store.create_job(spec, broker.clock())
    if created:
        log.info(
            "%s: created by client %s for site %s (command %s, %d inputs)",
            job.job_id, spec.client, spec.site, spec.command, len(spec.inputs),
        )  # fmt: skip
        metrics.job_event("created", spec.site)
    response = _document(job, 201 if created else 200)
    response.headers["Location"] = f"/api/v1/jobs/{job.job_id}"
    return response


@bp.get("")
def list_jobs() -> Response:
    principal = auth.current()
    client = None if principal.scope is Scope.ADMIN else principal.subject
    jobs = current().store.list_jobs(client=client, state=query_state(request.args),
                                     limit=LIST_LIMIT)  # fmt: skip
    presence = Presence.of(current())
    return answer({"jobs": [client_document(job, presence) for job in jobs]})


@bp.get("/<job_id>")
def get_job(job_id: str) -> Response:
    job = own_job(job_id)
    wait = query_wait(request.args, defaults.MAX_WAIT)  # checked even where unused
    if "version" not in request.args:
        return _document(job)
    version = query_int(request.args, "version", 0)
    if job.state is State.QUEUED:
        # Answer when its site's last agent turns absent: the document then carries the notice.
        turns_absent = Presence.of(current()).absent_in(job.spec.site)
        if turns_absent > 0:
            wait = min(wait, turns_absent)
    newer = wait_for([job_key(job_id)], wait, lambda: _newer(job_id, version))
    return _document(newer or own_job(job_id))


def _newer(job_id: str, version: int) -> JobRecord | None:
    job = own_job(job_id)
    return job if job.version > version else None


@bp.route("/<job_id>/inputs/<name>", methods=["HEAD"])
def input_offset(job_id: str, name: str) -> Response:
    own_job(job_id)
    name = input_name(name)
    with current().uploads.hold((job_id, "inputs", name), defaults.UPLOAD_LOCK_WAIT):
        record = _declared_input(own_job(job_id), name)
    return empty(200, {"Upload-Offset": str(record.received), "Upload-Length": str(record.size)})


@bp.route("/<job_id>/inputs/<name>", methods=["PATCH"])
def upload_input(job_id: str, name: str) -> Response:
    broker = current()
    own_job(job_id)
    name = input_name(name)
    offset = header_int(request.headers, "Upload-Offset")
    with broker.uploads.hold((job_id, "inputs", name), defaults.UPLOAD_LOCK_WAIT):
        job = own_job(job_id)
        if job.state is not State.CREATED:
            raise InvalidState(f"job {job_id} is {job.state}; its inputs can no longer change")
        record = _declared_input(job, name)
        check_offset(record.received, offset)
        target = UploadTarget(job_id, "inputs", name, record.size, record.sha256)

        def save(received: int) -> None:
            broker.store.set_input_received(job_id, name, offset, received, broker.clock())

        new_offset = receive_upload(broker.files, target, offset, save,
                                    broker.config.body_timeout)  # fmt: skip
    return empty(204, {"Upload-Offset": str(new_offset)})


def _declared_input(job: JobRecord, name: str) -> InputRecord:
    record = job.input(name)
    if record is None:
        raise NotFound(f"job {job.job_id} declares no input {name!r}")
    return record


@bp.post("/<job_id>/submit")
def submit(job_id: str) -> Response:
    broker = current()
    own_job(job_id)
    parse_no_fields(json_body(required=False))
    job = broker.store.submit(job_id, broker.clock())
    log.info("%s: submitted; %s", job_id, job.state)
    return _document(job)


@bp.get("/<job_id>/logs/<stream>")
def read_log(job_id: str, stream: str) -> Response:
    job = own_job(job_id)
    if stream not in LOG_STREAMS:
        raise NotFound(f"no log stream {stream!r}; use stdout or stderr")
    offset = query_int(request.args, "offset", 0)
    wait = query_wait(request.args, defaults.MAX_WAIT)
    if offset > job.logs[stream]:
        check_offset(job.logs[stream], offset, header="Log-Size")  # 409: what it holds
    job = wait_for([job_key(job_id)], wait, lambda: _log_ready(job_id, stream, offset)) or job
    size = min(job.logs[stream], offset + defaults.MAX_LOG_READ)
    data = current().files.read_range(job_id, "logs", stream, offset, max(0, size - offset))
    response = Response(data, mimetype="application/octet-stream")
    response.headers.update({"Log-Size": str(job.logs[stream]), "Job-State": job.state.value,
                             "Cache-Control": "no-store"})  # fmt: skip
    return response


def _log_ready(job_id: str, stream: str, offset: int) -> JobRecord | None:
    job = own_job(job_id)
    return job if job.logs[stream] > offset or job.state.is_final else None


@bp.get("/<job_id>/results/<anypath:name>")
def download_result(job_id: str, name: str) -> BaseResponse:
    job = own_job(job_id)
    name = result_name(name)
    if not job.state.is_final or job.results_deleted:
        raise NotFound(f"job {job_id} has no results to fetch now ({job.state})")
    record = next((r for r in job.listed_results() if r.name == name), None)
    if record is None:
        raise NotFound(f"job {job_id} has no result {name!r}")
    if record.size == 0:
        return empty_file_response(record.sha256)
    handle = current().files.open_for_read(job_id, "results", name, record.size)
    return file_response(handle, record.size, record.sha256)


@bp.post("/<job_id>/cancel")
def cancel(job_id: str) -> Response:
    broker = current()
    before = own_job(job_id)
    parse_no_fields(json_body(required=False))
    job = broker.store.cancel(job_id, broker.clock())
    if job.version != before.version:
        log.info("%s: cancel requested by %s; now %s", job_id, auth.current(), job.state)
    return _document(job)


@bp.post("/<job_id>/ack")
def ack(job_id: str) -> Response:
    broker = current()
    own_job(job_id)
    parse_no_fields(json_body(required=False))
    job = broker.store.ack(job_id, broker.clock())
    broker.files.remove_area(job_id, "results")
    broker.files.remove_area(job_id, "inputs")
    log.info("%s: acknowledged; results and inputs deleted", job_id)
    return _document(job)
