"""The original API (``/mi-distcomp-api/``) on the broker's own job store: workflow side.

The unmodified original workflow client (``mi-system-wf.py``) and site poller
(``mi-system-remote.py``) work against these endpoints as they did against the original
broker (the README's "Legacy API" section says what differs, on purpose). A job added here
is an ordinary job of the store: a new agent may run it, and an original poller may run a job
of the new API whose command is whitelisted for it (``broker.legacy.api_site``).

Workflow calls map onto the store like this:

| call | store |
|---|---|
| add-calcinfo | ``create_legacy_job`` (``created``), inputs written and counted |
| allow-wait-calc | ``submit`` (``queued``) |
| cancel-wait-calc | ``cancel`` |
| calc-status, calc-progress | read: derived from the job's state (``broker.legacy.jobs``) |
| get-calc-result | read: declared results, and the two log files |

Never: accept a command that is not whitelisted exactly for its site, keep an input name with
a '/' or a result name that leaves the job, answer a client for another client's job, or hand
``parameters`` to anything but original pollers (which ignore it).
"""

from __future__ import annotations

import hashlib
import logging

from flask import Response, request

from bridge.core.job import new_job_id
from broker.api_client import LIST_LIMIT
from broker.legacy.api_base import (
    WORKFLOW_BLUEPRINT,
    body,
    legacy_blueprint,
    read_file,
    read_log,
    reply,
    runtime,
    settings,
    too_large,
    workflow_job,
    workflow_principal,
)
from broker.legacy.calc_info import encoded_size, parse_calc_info
from broker.legacy.jobs import (
    ORIGIN,
    declared_results,
    outcome_reason,
    progress,
    reported_progress,
    status,
)
from broker.legacy.replies import (
    LOG_FILES,
    STDERR_NAME,
    Refused,
    Status,
    file_entry,
    missing_entry,
    ok,
    status_message,
    std_file,
)
from broker.runtime import current
from broker.store import InputSpec, JobRecord, LegacyRecord, NewJob, Scope, State
from broker.transfers import sync

log = logging.getLogger(__name__)

bp = legacy_blueprint(WORKFLOW_BLUEPRINT)


# --- workflow side ------------------------------------------------------------------------------


@bp.post("/add-calcinfo")
def add_calcinfo() -> Response:
    principal = workflow_principal()
    broker, config = current(), settings()
    info = parse_calc_info(body())
    if not config.knows(info.site):
        raise Refused(202, 400, f"missmatch remote-site id: {info.site[:64]!r} is not a site "
                                "of this broker's original API")  # fmt: skip
    if not config.allows(info.site, info.command):
        raise Refused(202, 401, f"invalid command name({info.command[:200]}): not whitelisted "
                                f"for site {info.site}")  # fmt: skip
    limit = broker.config.max_input_size
    for item in info.inputs:
        if limit is not None and len(item.data) > limit:
            raise Refused(413, 413, f"input {item.name!r} has {len(item.data)} bytes; this "
                                    f"broker accepts inputs of at most {limit} bytes")  # fmt: skip
    spec = NewJob(
        job_id=new_job_id(),
        client=principal.subject,
        site=info.site,
        command=info.command,
        inputs=tuple(
            InputSpec(i.name, len(i.data), hashlib.sha256(i.data).hexdigest())
            for i in info.inputs
        ),
        metadata=dict(ORIGIN),
    )
    now = broker.clock()
    job = broker.store.create_legacy_job(spec, info.stored(), now)
    for item in info.inputs:
        if item.data:  # an empty input counts as received already
            with broker.files.open_for_write(job.job_id, "inputs", item.name, 0) as sink:
                sink.write(item.data)
                sync(sink)
            broker.store.set_input_received(job.job_id, item.name, 0, len(item.data), now)
    log.info("%s: added through the original API by client %s for site %s (%d inputs)",
             job.job_id, principal.subject, info.site, len(info.inputs))  # fmt: skip
    return reply(ok("calc info successfully added", accept_id=job.job_id))


@bp.post("/allow-wait-calc")
def allow_wait_calc() -> Response:
    broker = current()
    job = workflow_job(body().get("accept_id"))
    if job.state is not State.CREATED:
        now_at = progress(job, broker.store.get_legacy(job.job_id))
        raise Refused(409, 401, f"already allowed: job {job.job_id} is '{now_at}'")
    broker.store.submit(job.job_id, broker.clock())
    log.info("%s: allowed (queued) through the original API", job.job_id)
    return reply(ok("successfully request (start waiting calculation)"))


@bp.post("/cancel-wait-calc")
def cancel_wait_calc() -> Response:
    broker = current()
    job = workflow_job(body().get("accept_id"))
    job = broker.store.cancel(job.job_id, broker.clock())
    log.info("%s: cancel through the original API; now %s", job.job_id, job.state)
    return reply(ok(f"cancelled ({job.state})" if job.state.is_final
                    else "cancel requested; the site stops the job"))  # fmt: skip


@bp.get("/calc-status")
def calc_status() -> Response:
    job = workflow_job(request.args.get("accept_id"))
    record = current().store.get_legacy(job.job_id)
    value = status(job, record)
    if value is Status.ABNORMAL:
        runtime().told_abnormal.add(job.job_id)
    return reply(ok(status_message(value)))


@bp.get("/calc-progress")
def calc_progress() -> Response:
    job = workflow_job(request.args.get("accept_id"))
    record = current().store.get_legacy(job.job_id)
    value = reported_progress(job, record, abnormal_told=job.job_id in runtime().told_abnormal,
                              now=current().clock())  # fmt: skip
    return reply(ok(status_message(value)))


@bp.get("/get-calc-result")
def get_calc_result() -> Response:
    # A GET with a JSON body in the original client; the id is taken from the query, as the
    # body of a GET is not something to rely on.
    job = workflow_job(request.args.get("accept_id"))
    record = current().store.get_legacy(job.job_id)
    if not job.state.is_final:
        raise Refused(409, 400, f"no results yet: the job is '{progress(job, record)}'; they "
                                "come once calc-progress says 'got return'")  # fmt: skip
    if job.results_deleted:
        raise Refused(410, 410, f"the results of job {job.job_id} were deleted "
                                "(acknowledged, or past the retention)")  # fmt: skip
    return reply(ok("", **{"result-info": {"result_files": result_files(job, record)}}))


def result_files(job: JobRecord, record: LegacyRecord | None) -> dict[str, dict[str, str]]:
    """Every declared result (and nothing else), as the original poller would have sent it.

    A file an original poller sent keeps its mimetype strings; a file a new agent returned,
    or a log file built from the job's logs, gets them from its bytes.
    """
    listed = {r.name: r for r in job.listed_results()}
    types = dict(record.result_types) if record is not None else {}
    names = declared_results(job, record)
    limit, total = settings().max_body, 0
    files: dict[str, dict[str, str]] = {}
    for name in names:
        result = listed.get(name)
        sent = types.get(name)
        if result is not None:
            total += encoded_size(result.size)
            if total > limit:
                raise too_large(total, limit)
            data = read_file(job.job_id, "results", name, result.size)
            files[name] = file_entry(data, sent if sent and sent[0] != "Error" else None)
        elif sent is not None and sent[0] == "Error":
            files[name] = missing_entry(name, sent[1])
        elif name in LOG_FILES:
            reason = outcome_reason(job) if name == STDERR_NAME else None
            data = std_file(read_log(job, LOG_FILES[name]), reason)
            total += encoded_size(len(data))
            if total > limit:
                raise too_large(total, limit)
            files[name] = file_entry(data)
        else:
            files[name] = missing_entry(name)
    return files


@bp.get("/get-calcinfo")
def get_calcinfo() -> Response:
    # The original dumped every job with its files to anyone; here it lists jobs of the
    # original API, without file contents, to admins only.
    principal = workflow_principal()
    if principal.scope is not Scope.ADMIN:
        raise Refused(403, 403, "get-calcinfo lists every job; it takes an admin token")
    store = current().store
    listing: dict[str, object] = {}
    for job in store.list_jobs(limit=LIST_LIMIT):
        record = store.get_legacy(job.job_id)
        if record is None:
            continue
        listing[job.job_id] = {
            "calc-info": dict(record.calc_info),
            "calc_status": progress(job, record).value,
            "status": status(job, record).value,
            "state": job.state.value,
            "client": job.spec.client,
        }
    return reply(listing)
