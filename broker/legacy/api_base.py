"""What every view of the original API (``/mi-distcomp-api/``) shares: its blueprints' switch,
token check and reply shape, its settings in force, bounded bodies and who may touch which job.

- Off unless ``[legacy] enabled = true``: then every path answers the broker's usual 404.
- Every request needs a token of our token store in ``Authorization: Bearer`` (the original
  clients send one; the original broker never read it). A client token reaches only the jobs
  it created, a site token acts only as its own site, for its own site's jobs.
- Every answer, refusals included, is the original's ``{"errors": [{"code", "message"}]}``
  (the original clients read nothing else); a refusal never carries code 200.
- A body is read whole (the original clients send base64 files in one JSON body) up to
  ``[legacy] max_body``; larger ones are refused with a message that points to the new API.

Never: read a file outside the job's own area of the store (``broker.files`` opens everything
below the job's directory without following symlinks), log a token, or run anything.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from flask import Blueprint, Response, current_app, g, jsonify, request

from bridge.core.errors import BridgeError
from bridge.core.job import check_job_id
from broker import auth
from broker.config import load_config
from broker.errors import (
    BadRequest,
    BrokerError,
    InvalidJson,
    NotFound,
    StateConflict,
    error_response,
)
from broker.legacy.config import LegacyConfig
from broker.legacy.jobs import POLLER_PREFIX
from broker.legacy.replies import Progress, Refused, Status, refusal, status_message
from broker.runtime import current
from broker.store import JobRecord, Scope
from broker.transfers import read_small_body
from broker.validation import parse_json

log = logging.getLogger(__name__)

EXTENSION = "mint_broker_legacy"
URL_PREFIX = "/mi-distcomp-api"
WORKFLOW_BLUEPRINT = "legacy_workflow"

# The workflow client polls these until "got return" and splits whatever it gets on ':'; a
# reply other than HTTP 200/201 is split as raw text and the loop never ends. So a refusal
# here is HTTP 200 with a non-OK code and a status that ends the loop (then get-calc-result
# is refused too and the client exits 1).
_ENDS_WORKFLOW_LOOP = {
    f"{WORKFLOW_BLUEPRINT}.calc_status": Status.ABNORMAL.value,
    f"{WORKFLOW_BLUEPRINT}.calc_progress": Progress.GOT_RETURN.value,
}


@dataclass
class LegacyRuntime:
    """The legacy settings in force (replaced whole by a reload: one attribute store), and
    the jobs a calc-status has answered "abnormal" for (``reported_progress``)."""

    config: LegacyConfig
    told_abnormal: ToldAbnormal = field(default_factory=lambda: ToldAbnormal())


class ToldAbnormal:
    """Job ids a workflow client was told "abnormal" for; the newest ``limit`` are kept.

    In memory on purpose: after a restart a job reads "getting return" for one more status
    round (or ``ABNORMAL_GRACE``), which is harmless.
    """

    def __init__(self, limit: int = 65536) -> None:
        self._lock = threading.Lock()
        self._ids: OrderedDict[str, None] = OrderedDict()
        self._limit = limit

    def add(self, job_id: str) -> None:
        with self._lock:
            self._ids[job_id] = None
            self._ids.move_to_end(job_id)
            while len(self._ids) > self._limit:
                self._ids.popitem(last=False)

    def __contains__(self, job_id: object) -> bool:
        with self._lock:
            return job_id in self._ids


def runtime() -> LegacyRuntime:
    found = current_app.extensions[EXTENSION]
    assert isinstance(found, LegacyRuntime)
    return found


def settings() -> LegacyConfig:
    return runtime().config


def poller_commands(site: str) -> tuple[str, ...]:
    """The commands an original poller of ``site`` may be handed (the whitelist in force);
    none while the original API is off."""
    config = settings()
    return config.sites.get(site, ()) if config.enabled else ()


def reload_from_file() -> dict[str, object]:
    """Read broker.toml again and put its ``[legacy]`` section in force (whitelist, switch,
    limits) without a restart; a broken file changes nothing."""
    broker = current()
    source = broker.config.source
    if not source:
        raise StateConflict(
            "this broker was started without a config file; there is none to reload"
        )
    try:
        fresh = load_config(source)
    except BridgeError as exc:
        raise BadRequest(f"not reloaded, the running config stays: {exc.message}") from exc
    runtime().config = fresh.legacy
    log.info("reloaded [legacy] from %s: %s, %d sites", source,
             "on" if fresh.legacy.enabled else "off", len(fresh.legacy.sites))  # fmt: skip
    return {"reloaded": ["legacy"], "source": source, "legacy": fresh.legacy.summary()}


def reply(body: Mapping[str, Any], status: int = 200) -> Response:
    response = jsonify(body)
    response.status_code = status
    response.headers["Cache-Control"] = "no-store"
    return response


# --- the gate and the error shape -------------------------------------------------------------


def legacy_blueprint(name: str) -> Blueprint:
    """A blueprint of the original API: its paths below ``/mi-distcomp-api``, closed unless
    ``[legacy] enabled``, a token required, every answer in the original's shape."""
    bp = Blueprint(name, __name__, url_prefix=URL_PREFIX)
    bp.before_request(_gate)
    bp.register_error_handler(Refused, _on_refused)
    bp.register_error_handler(BrokerError, _on_broker_error)
    bp.register_error_handler(Exception, _on_unexpected)
    return bp


def _gate() -> Response | None:
    if not settings().enabled:
        # As if the API did not exist: the broker's ordinary 404.
        return error_response(NotFound(
            "no such endpoint; the original API (/mi-distcomp-api/) is off on this broker "
            "([legacy] enabled = true turns it on)"
        ))  # fmt: skip
    g.principal = auth.verify(current().store, auth.bearer_token(), current().clock())
    return None


def _refused_response(http: int, code: int | str, message: str,
                      headers: Mapping[str, str] | None = None) -> Response:  # fmt: skip
    loop_end = _ENDS_WORKFLOW_LOOP.get(request.endpoint or "")
    if loop_end is not None:
        return reply(refusal(code, status_message(loop_end), reason=message))
    response = reply(refusal(code, message), http)
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


def _on_refused(exc: Refused) -> Response:
    return _refused_response(exc.http, exc.code, exc.message)


def _on_broker_error(err: BrokerError) -> Response:
    if err.status >= 500:
        log.warning("legacy API answered %d: %s", err.status, err.message)
    return _refused_response(err.status, err.status, err.message, err.headers)


def _on_unexpected(exc: Exception) -> Response:
    # Still the original's shape (its clients would crash on any other); details in our log.
    log.exception("internal error in the legacy API")
    return _refused_response(500, 500, "internal error; the broker's log has the details")


# --- bodies -------------------------------------------------------------------------------------


def too_large(size: int, limit: int) -> Refused:
    return Refused(
        413, 413,
        f"the request or answer takes {size} bytes; the original API (/mi-distcomp-api/) "
        f"moves files as base64 inside one JSON body and takes at most {limit} bytes "
        "([legacy] max_body); send large files with the new API (mint-bridge run, or "
        "mint-bridge compat mi-system-wf)",
    )  # fmt: skip


def body() -> dict[str, Any]:
    """The request's JSON object, at most ``max_body`` bytes, read whole."""
    limit = settings().max_body
    length = request.content_length
    if length is not None and length > limit:
        raise too_large(length, limit)
    raw = read_small_body(limit, current().config.body_timeout)
    if len(raw) > limit:
        raise too_large(len(raw), limit)
    try:
        return parse_json(raw)
    except InvalidJson as exc:
        raise Refused(400, 400, exc.message) from exc


# --- who may touch what -------------------------------------------------------------------


def poller_id() -> str:
    """The agent id an original poller holds leases under: its token's public id."""
    return POLLER_PREFIX + auth.current().token_id


def workflow_principal() -> auth.Principal:
    principal = auth.current()
    if principal.scope not in (Scope.CLIENT, Scope.ADMIN):
        raise Refused(403, 403, "this call takes a workflow (client) token, not a site token")
    return principal


def load_job(accept_id: object) -> JobRecord:
    if not isinstance(accept_id, str) or not accept_id:
        raise Refused(400, 400, "accept_id is required")
    try:
        check_job_id(accept_id)
    except BridgeError:
        raise Refused(404, 404, f"no job {accept_id!r:.60}: accept ids are UUID4s") from None
    job = current().store.get_job(accept_id)
    if job is None:
        raise Refused(404, 404, f"no job {accept_id} (never added, or deleted after retention)")
    return job


def workflow_job(accept_id: object) -> JobRecord:
    """The job, if this client token added it (an admin token: any job)."""
    principal = workflow_principal()
    job = load_job(accept_id)
    if principal.scope is Scope.CLIENT and job.spec.client != principal.subject:
        raise Refused(403, 403, f"job {job.job_id} belongs to another client")
    return job


def poller_site(site_id: object) -> str:
    """``site_id`` if this site token acts for it and the legacy API serves it."""
    principal = auth.current()
    if principal.scope is not Scope.SITE:
        raise Refused(403, 403, "this call takes a site token, not a workflow or admin token")
    if site_id != principal.subject:
        raise Refused(403, 403, f"this token acts for site {principal.subject} only, "
                                f"not for {str(site_id)[:64]!r}")  # fmt: skip
    if not settings().knows(principal.subject):
        raise Refused(403, 403, f"site {principal.subject} is not served by the original API "
                                "here ([legacy.sites] in broker.toml)")  # fmt: skip
    return principal.subject


def poller_job(accept_id: object, site_id: object) -> JobRecord:
    site = poller_site(site_id)
    job = load_job(accept_id)
    if job.spec.site != site:
        raise Refused(403, 403, f"job {job.job_id} belongs to another site")
    return job


# --- file bytes (bounded by the caller) -----------------------------------------------------------


def read_file(job_id: str, area: str, name: str, size: int) -> bytes:
    if size == 0:
        return b""
    with current().files.open_for_read(job_id, area, name) as handle:
        data = handle.read(size)
    if len(data) != size:
        raise BrokerError(f"{area[:-1]} {name!r} of job {job_id} is shorter on disk than recorded")
    return data


def read_log(job: JobRecord, stream: str) -> bytes:
    size = job.logs.get(stream, 0)
    return current().files.read_range(job.job_id, "logs", stream, 0, size) if size else b""
