"""The original API (``/mi-distcomp-api/``): site side, for the original poller.

The poller's steps map onto the store's states and leases:

| call | progress | store |
|---|---|---|
| calc-request | (not start) | read: the site's oldest queued job the poller may run |
| calc-params | sending params | ``legacy_claim``: leased to this poller (``claimed``) |
| calc-params-complete | complete send | ``legacy_step`` |
| calc-start | running | ``legacy_step`` (``running``) |
| calc-end | calc end | ``legacy_step``, with its status |
| send-results | getting return | results stored as the job's results; ``legacy_step`` |
| end-send | got return | ``complete`` (``finished``) |

A poller never renews a lease, so every call renews it ([legacy] lease_ttl); one that lapses
before calc-start hands the job to the next poller or agent, and the late poller is refused.

Never: hand a job to a poller unless its command is whitelisted exactly for the site (the
poller runs it with a shell), let two pollers take one job, take a result a job did not
declare, or refuse a step the original poller cannot survive once it holds the job
(calc-start after calc-params-complete, an abnormal calc-end): those are answered OK, and the
results of a job cancelled meanwhile are discarded.
"""

from __future__ import annotations

import base64
import hashlib
import logging
from typing import Any

from flask import Response, request

from broker import defaults
from broker.errors import InvalidState
from broker.legacy.api_base import (
    body,
    legacy_blueprint,
    poller_id,
    poller_job,
    poller_site,
    read_file,
    reply,
    settings,
    too_large,
)
from broker.legacy.calc_info import check_mimetype, decode, encoded_size
from broker.legacy.jobs import calc_info_of, held_by_poller, offer_problem
from broker.legacy.replies import (
    LOG_FILES,
    Progress,
    Refused,
    Status,
    guess_mimetype,
    no_job,
    ok,
    strip_std_file,
)
from broker.runtime import Broker, current
from broker.store import JobRecord, LegacyRecord, ResultRecord, State
from broker.transfers import sync
from broker.validation import EMPTY_SHA256

log = logging.getLogger(__name__)

bp = legacy_blueprint("legacy_site")

# calc-request looks at this many queued jobs of the site for one the poller may run.
SCAN_LIMIT = 500

_COMPLETED = {"state": "completed", "exit_code": 0, "signal": None, "reason": ""}
_ABNORMAL = {
    "state": "failed", "exit_code": 1, "signal": None,
    "reason": "the original poller reported the run abnormal: a non-zero exit code (it does "
              "not report which), or none of the declared result files",
}  # fmt: skip


def _cancelled(reason: str) -> dict[str, Any]:
    return {"state": "cancelled", "exit_code": None, "signal": None, "reason": reason}


@bp.get("/calc-request")
def calc_request() -> Response:
    site = poller_site(request.args.get("site_id"))
    store, config = current().store, settings()
    for job_id in store.queued_job_ids(site, SCAN_LIMIT):
        job = store.get_job(job_id)
        if job is None or job.state is not State.QUEUED:
            continue
        if offer_problem(job, store.get_legacy(job_id), config) is None:
            return reply(ok("job", accept_id=job_id))
    return reply(no_job())


@bp.get("/calc-params")
def calc_params() -> Response:
    broker, config = current(), settings()
    job = poller_job(request.args.get("accept_id"), request.args.get("site_id"))
    record = broker.store.get_legacy(job.job_id)
    if job.state is not State.QUEUED:
        raise Refused(409, 409, _not_queued(job))
    size = sum(encoded_size(i.size) for i in job.inputs)
    if size > config.max_body:
        raise too_large(size, config.max_body)
    problem = offer_problem(job, record, config)
    if problem is not None:
        raise Refused(403, 403, f"not for original pollers: {problem}")
    info = calc_info_of(job, record)
    job = broker.store.legacy_claim(job.job_id, job.spec.site, poller_id(), info,
                                    config.lease_ttl, broker.clock())  # fmt: skip
    log.info("%s: taken by original poller %s of site %s", job.job_id, poller_id(), job.spec.site)
    types = info.get("parameter_files") or {}
    files: dict[str, list[str]] = {}
    for item in job.inputs:
        data = read_file(job.job_id, "inputs", item.name, item.size)
        mimetype, charset = types.get(item.name) or guess_mimetype(data)
        files[item.name] = [_b64(data), mimetype, charset]
    # A successful calc-params is the bare calc-info, without "errors" (the poller reads it so).
    return reply({"calc-info": {
        "command": info["command"],
        "remote-site": info["remote-site"],
        "parameters": info["parameters"],
        "parameter_files": files,
        "result_files": info["result_files"],
    }})  # fmt: skip


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _not_queued(job: JobRecord) -> str:
    if job.state.is_held:
        return f"job {job.job_id} is taken already; only one poller or agent runs a job"
    if job.state is State.CREATED:
        return f"job {job.job_id} is not allowed yet (allow-wait-calc)"
    return f"job {job.job_id} has ended ({job.state})"


class _Held:
    """The job of a site call and whether this poller holds it (or held it to its end)."""

    def __init__(self, accept_id: object, site_id: object) -> None:
        self.broker: Broker = current()
        self.job = poller_job(accept_id, site_id)
        self.record: LegacyRecord | None = self.broker.store.get_legacy(self.job.job_id)
        self.poller = poller_id()
        self.mine = held_by_poller(self.job, self.record) and self.job.agent_id == self.poller

    def require(self) -> None:
        if not self.mine:
            raise Refused(409, 409, f"job {self.job.job_id} is not held by this poller; take "
                                    "jobs with calc-params first")  # fmt: skip

    @property
    def discarding(self) -> bool:
        """Cancelled while this poller held it: its later calls are answered OK, and what they
        bring is dropped (the original poller cannot be told to stop)."""
        return self.job.state.is_final or self.job.cancel_requested

    def step(self, expect: set[Progress], to: Progress, **extra: Any) -> JobRecord:
        return self.broker.store.legacy_step(
            self.job.job_id, self.poller, expect=expect, progress=to,
            lease_ttl=settings().lease_ttl, now=self.broker.clock(), **extra,
        )  # fmt: skip


@bp.post("/calc-params-complete")
def calc_params_complete() -> Response:
    data = body()
    held = _Held(data.get("accept_id"), data.get("site_id"))
    held.require()
    job = held.job
    if job.state.is_final:
        raise Refused(409, 409, f"job {job.job_id} has ended ({job.state})")
    if job.cancel_requested:
        # The last point where the poller can be turned away without harm: it goes idle.
        held.broker.store.complete(job.job_id, job.lease_epoch,
                                   _cancelled("cancelled before the original poller started it"),
                                   [], [], held.broker.clock())  # fmt: skip
        raise Refused(409, 409, f"job {job.job_id} was cancelled; do not run it")
    held.step({Progress.SENDING_PARAMS, Progress.COMPLETE_SEND}, Progress.COMPLETE_SEND)
    return reply(ok())


@bp.post("/calc-start")
def calc_start() -> Response:
    data = body()
    held = _Held(data.get("accept_id"), data.get("site_id"))
    held.require()
    if held.job.state.is_final:
        return reply(ok("ok (the job was cancelled; its results will be discarded)"))
    # Never refused from here on: a refused calc-start kills the original poller.
    held.step({Progress.COMPLETE_SEND, Progress.RUNNING}, Progress.RUNNING, running=True)
    log.info("%s: started by original poller %s", held.job.job_id, held.poller)
    return reply(ok())


@bp.post("/calc-end")
def calc_end() -> Response:
    data = body()
    result = data.get("result")
    if result not in ("calc end", "abnormal"):
        raise Refused(400, 400, "result must be 'calc end' or 'abnormal'")
    held = _Held(data.get("accept_id"), data.get("site_id"))
    held.require()
    if held.job.state.is_final:
        return reply(ok("ok (the job was cancelled; its results will be discarded)"))
    status = Status.COMPLETED if result == "calc end" else Status.ABNORMAL
    try:
        held.step({Progress.RUNNING, Progress.CALC_END}, Progress.CALC_END, status=status.value)
    except InvalidState:
        if status is Status.COMPLETED:
            raise
        # An abnormal calc-end is never refused: the original poller dies on that.
        log.warning("%s: abnormal calc-end out of order; accepted", held.job.job_id)
    log.info("%s: calc end (%s) from original poller %s", held.job.job_id, status, held.poller)
    return reply(ok())


@bp.post("/send-results")
def send_results() -> Response:
    data = body()
    held = _Held(data.get("accept_id"), data.get("site_id"))
    held.require()
    if held.discarding:
        return reply(ok("ok (the job was cancelled; the results are discarded)"))
    sent = data.get("result_files")
    if not isinstance(sent, dict):
        raise Refused(400, 400, "result_files must be an object")
    job, record = held.job, held.record
    assert record is not None  # a poller holds only jobs with a legacy record
    if record.progress not in (Progress.CALC_END, Progress.GETTING_RETURN):
        raise Refused(409, 401, f"job {job.job_id} is at '{record.progress}'; results come "
                                "after calc-end")  # fmt: skip
    declared = record.calc_info.get("result_files") or {}
    files, types = _checked_results(sent, declared)
    for name, content in files.items():
        _store_result(held.broker, job, name, content)
    held.step({Progress.CALC_END, Progress.GETTING_RETURN}, Progress.GETTING_RETURN,
              result_types=types)  # fmt: skip
    log.info("%s: %d results from original poller %s", job.job_id, len(files), held.poller)
    return reply(ok())


def _checked_results(
    sent: dict[str, Any], declared: dict[str, Any]
) -> tuple[dict[str, bytes], dict[str, tuple[str, str]]]:
    files: dict[str, bytes] = {}
    types: dict[str, tuple[str, str]] = {}
    for name, entry in sent.items():
        if name not in declared:
            raise Refused(400, 400, f"result {name[:200]!r} was not declared by the job")
        if not isinstance(entry, dict):
            raise Refused(400, 400, f"result_files[{name[:200]!r}] must be an object")
        mimetype1 = check_mimetype(entry.get("mimetype1", ""), "mimetype1")
        mimetype2 = check_mimetype(entry.get("mimetype2", ""), "mimetype2")
        types[name] = (mimetype1, mimetype2)  # kept exactly as sent
        if mimetype1 == "Error":
            continue  # the poller found no such file; mimetype2 says so
        if name == "":
            raise Refused(400, 400, "the empty result name never names a file")
        files[name] = decode(entry.get("content", ""), f"result_files[{name[:200]!r}].content",
                             http=400)  # fmt: skip
    return files, types


def _store_result(broker: Broker, job: JobRecord, name: str, content: bytes) -> None:
    """Write one result into the job's store area and count it, as an agent's upload would."""
    sha256 = hashlib.sha256(content).hexdigest() if content else EMPTY_SHA256
    held = job.result(name)
    if held is not None and held.complete and (held.size, held.sha256) == (len(content), sha256):
        return  # a repeated send-results: already there
    # The same file half there continues from what is held; anything else starts over at 0.
    same = held is not None and (held.size, held.sha256) == (len(content), sha256)
    expected = held.received if same and held is not None else 0
    with broker.uploads.hold((job.job_id, "results", name), defaults.UPLOAD_LOCK_WAIT):
        with broker.files.open_for_write(job.job_id, "results", name, 0) as sink:
            sink.write(content)
            sync(sink)
        record = ResultRecord(name, len(content), sha256, received=len(content))
        broker.store.set_result_upload(job.job_id, job.lease_epoch, record, expected,
                                       broker.clock())  # fmt: skip
    stream = LOG_FILES.get(name)
    if stream is not None and job.logs.get(stream, 0) == 0:
        # The job's log too, for a client of the new API that follows it (without the "\n\n"
        # the poller appended).
        log_bytes = strip_std_file(content)
        if log_bytes:
            with broker.files.open_for_write(job.job_id, "logs", stream, 0) as sink:
                sink.write(log_bytes)
                sync(sink)
            broker.store.append_log(job.job_id, stream, job.lease_epoch, 0, len(log_bytes),
                                    broker.clock())  # fmt: skip


@bp.post("/end-send")
def end_send() -> Response:
    data = body()
    if data.get("result") != "end send":
        raise Refused(400, 400, "result must be 'end send'")
    held = _Held(data.get("accept_id"), data.get("site_id"))
    held.require()
    job, record = held.job, held.record
    assert record is not None
    if job.state.is_final:
        return reply(ok("ok (the job has ended already)"))
    if record.progress not in (Progress.CALC_END, Progress.GETTING_RETURN):
        raise Refused(409, 401, f"job {job.job_id} is at '{record.progress}'; end-send comes "
                                "after calc-end")  # fmt: skip
    types = record.result_types
    if job.cancel_requested:
        outcome = _cancelled("cancelled while the original poller ran it; results discarded")
        results: list[ResultRecord] = []
    else:
        outcome = _COMPLETED if record.status == Status.COMPLETED else _ABNORMAL
        results = [r for r in job.results if r.complete and r.name in types]
    skipped = [{"name": name, "reason": pair[1]} for name, pair in types.items()
               if pair[0] == "Error"]  # fmt: skip
    held.broker.store.complete(job.job_id, job.lease_epoch, outcome, results, skipped,
                               held.broker.clock())  # fmt: skip
    log.info("%s: ended by original poller %s: %s, %d results", job.job_id, held.poller,
             outcome["state"], len(results))  # fmt: skip
    return reply(ok())

