"""The OpenAPI 3 description of the broker's HTTP API, served at ``/api/v1/openapi.json``.

docs/broker-api.md is the contract in words; this is the same contract for tools. A test keeps
it true: every route the app registers is described here, and nothing else is. The blueprint
here also serves ``/api/v1/health``; neither needs a token, and health tells only how many
tokens have expired or expire soon (no ids, no subjects), so an operator renews them in time.
"""

from __future__ import annotations

import copy
from typing import Any

from flask import Blueprint, Response, jsonify

from broker import defaults, token_expiry
from broker import openapi_schemas as s
from broker.auth import SUBJECT_NAME
from broker.config import BrokerConfig
from broker.legacy.openapi import LEGACY_PATHS, LEGACY_SCHEMAS, RELOAD_PATH
from broker.runtime import current
from broker.store import LOG_STREAMS, State
from broker.validation import EMPTY_SHA256

OCTETS = "application/octet-stream"
UPLOAD = "application/offset+octet-stream"

bp = Blueprint("meta_api", __name__, url_prefix="/api/v1")


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str = "OK", **extra: Any) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}},
            **extra}  # fmt: skip


def _bytes(description: str, **extra: Any) -> dict[str, Any]:
    content = {OCTETS: {"schema": {"type": "string", "format": "binary"}}}
    return {"description": description, "content": content, **extra}


def _header(schema: dict[str, Any], text: str, required: bool = True) -> dict[str, Any]:
    return {"schema": schema, "description": text, "required": required}


# Refusals that carry a header besides the error body.
_ERROR_RESPONSES = {
    409: "Conflict", 416: "RangeNotSatisfiable", 429: "RetryLater", 503: "RetryLater",
}  # fmt: skip


def _errors(*statuses: int) -> dict[str, Any]:
    """Every authenticated call may meet 400 (a malformed value or header), 401, 403 and 503
    (the database busy, or no thread free), besides its own refusals."""
    codes = sorted({400, 401, 403, 503, *statuses})
    return {str(status): {"$ref": "#/components/responses/"
                                  + _ERROR_RESPONSES.get(status, "Error")}
            for status in codes}  # fmt: skip


def _param(name: str, where: str, schema: dict[str, Any], text: str, required: bool = False
           ) -> dict[str, Any]:  # fmt: skip
    return {"name": name, "in": where, "required": required or where == "path",
            "schema": schema, "description": text}  # fmt: skip


COUNT = s.COUNT
JOB_ID = _param("job_id", "path", {"type": "string", "pattern": s.JOB_ID_PATTERN},
                "job id (a lowercase UUID4; any other value is simply not found)")
INPUT_NAME = _param("name", "path", s.INPUT_NAME, "input name (a plain file name)")
RESULT_PATH = _param("name", "path", s.RESULT_PATH, "result path (may contain '/')")
STREAM = _param("stream", "path", {"type": "string", "enum": list(LOG_STREAMS)}, "log stream")
EPOCH = _param("Lease-Epoch", "header", COUNT, "lease epoch held", required=True)
OFFSET = _param("Upload-Offset", "header", COUNT, "bytes held before this body", required=True)
WAIT_50 = _param("wait", "query", {"type": "number", "minimum": 0},
                 f"long-poll seconds; more than {defaults.MAX_WAIT:g} count as "
                 f"{defaults.MAX_WAIT:g}")
RANGE = _param("Range", "header", {"type": "string"},
               "RFC 9110 ranges: bytes=a-b, bytes=a-, bytes=-n, several comma-separated; "
               "another unit is ignored")
IF_RANGE = _param("If-Range", "header", {"type": "string"},
                  "the ETag of the copy held: the range only if it is still current")
STATE = _param("state", "query", {"type": "string", "enum": ["", *[x.value for x in State]]},
               "only this state (empty: all)")
_UPLOAD_BODY = {"required": True,
                "content": {UPLOAD: {"schema": {"type": "string", "format": "binary"}}}}
_NEW_OFFSET = {"Upload-Offset": _header(COUNT, "the bytes the broker now holds")}
_UPLOADED = {"description": "bytes stored; Upload-Offset is the new count",
             "headers": _NEW_OFFSET}  # fmt: skip
_ETAG = {"ETag": _header({"type": "string", "pattern": '^"[0-9a-f]{64}"$'},
                         "the quoted SHA-256 of the file"),
         "Accept-Ranges": _header({"type": "string", "enum": ["bytes"]}, "ranges served")}
_FILE = _bytes("the whole file", headers=_ETAG)
_PART = {"description": "the range (Content-Range), or several as multipart/byteranges",
         "headers": {**_ETAG, "Content-Range": _header(
             {"type": "string", "pattern": "^bytes [0-9]+-[0-9]+/[0-9]+$"}, "one range only",
             required=False)},
         "content": {OCTETS: {"schema": {"type": "string", "format": "binary"}},
                     "multipart/byteranges": {"schema": {"type": "string",
                                                         "format": "binary"}}}}  # fmt: skip
_DOWNLOAD = {"200": _FILE, "206": _PART,
             "304": {"description": "If-None-Match holds the current ETag"},
             **_errors(404, 416)}  # fmt: skip
_NO_FIELDS = {"content": {"application/json": {"schema": {
    "type": "object", "maxProperties": 0}}}, "description": "optional: no body, or {}"}


def _job_op(summary: str, *errors: int, **extra: Any) -> dict[str, Any]:
    op: dict[str, Any] = {
        "summary": summary,
        "parameters": [JOB_ID],
        "responses": {"200": _json(_ref("Job")), **_errors(404, *errors)},
    }
    op.update(extra)
    return op


_JOBS = _json({"type": "object", "required": ["jobs"], "properties": {
    "jobs": {"type": "array", "maxItems": 500, "items": _ref("Job")}}})  # fmt: skip

CLIENT_PATHS: dict[str, Any] = {
    "/api/v1/jobs": {
        "post": {
            "summary": "Create a job (idempotent for the same job_id, client and body); "
                       "400 unknown_site for a site without an active site token",
            "requestBody": {"required": True, "content": {"application/json": {
                "schema": _ref("JobRequest")}}},
            "responses": {"201": _json(_ref("Job"), "created", headers={
                              "Location": _header({"type": "string"}, "the job's URL")}),
                          "200": _json(_ref("Job"), "the same job existed", headers={
                              "Location": _header({"type": "string"}, "the job's URL")}),
                          **_errors(409, 413)},
        },
        "get": {
            "summary": "List own jobs (admin: all), newest first, at most 500",
            "parameters": [STATE],
            "responses": {"200": _JOBS, **_errors()},
        },
    },
    "/api/v1/jobs/{job_id}": {"get": _job_op(
        "The job document; with version and wait, as soon as version > v", 429,
        parameters=[JOB_ID, _param("version", "query", COUNT, "version seen"), WAIT_50])},
    "/api/v1/jobs/{job_id}/inputs/{name}": {
        "head": {"summary": "Bytes the broker holds of an input",
                 "parameters": [JOB_ID, INPUT_NAME],
                 "responses": {"200": {"description": "Upload-Offset: bytes held", "headers": {
                     **_NEW_OFFSET, "Upload-Length": _header(COUNT, "declared size")}},
                     **_errors(404)}},
        "patch": {"summary": "Append input bytes at Upload-Offset (resumable)",
                  "parameters": [JOB_ID, INPUT_NAME, OFFSET], "requestBody": _UPLOAD_BODY,
                  "responses": {"204": _UPLOADED, **_errors(404, 409, 413, 503, 507)}},
    },
    "/api/v1/jobs/{job_id}/submit": {"post": _job_op("Queue the job (inputs complete)", 409,
                                                     requestBody=_NO_FIELDS)},
    "/api/v1/jobs/{job_id}/logs/{stream}": {"get": {
        "summary": "Log bytes from offset (at most 1 MiB), long-polled",
        "parameters": [JOB_ID, STREAM, _param("offset", "query", COUNT,
                                              "start; at most the log's size"), WAIT_50],
        "responses": {"200": _bytes("log bytes", headers={
            "Log-Size": _header(COUNT, "the log's size"),
            "Job-State": _header({"type": "string", "enum": [x.value for x in State]},
                                 "the job's state")}), **_errors(404, 409, 429)},
    }},
    "/api/v1/jobs/{job_id}/results/{name}": {"get": {
        "summary": "Download a result of a finished job (RFC 9110 ranges)",
        "parameters": [JOB_ID, RESULT_PATH, RANGE, IF_RANGE],
        "responses": _DOWNLOAD,
    }},
    "/api/v1/jobs/{job_id}/cancel": {"post": _job_op("Cancel (at once if unclaimed)",
                                                     requestBody=_NO_FIELDS)},
    "/api/v1/jobs/{job_id}/ack": {"post": _job_op("Results fetched: delete them now", 409,
                                                  requestBody=_NO_FIELDS)},
}  # fmt: skip

AGENT_PATHS: dict[str, Any] = {
    "/api/v1/agent/claim": {"post": {
        "summary": "Take the next job of this site (reattach first), long-polled",
        "parameters": [WAIT_50],
        "requestBody": {"required": True, "content": {"application/json": {
            "schema": _ref("ClaimRequest")}}},
        "responses": {"200": _json(_ref("Claim")), "204": {"description": "nothing to do"},
                      **_errors(413, 429)},
        "description": "The token is checked again as the claim commits (a token revoked "
                       "while its poll waited gets 401 and takes nothing), and a poll whose "
                       "client has closed its connection takes nothing.",
    }},
    "/api/v1/agent/jobs/{job_id}/lease": {"post": {
        "summary": "Renew the lease; state=running starts the job; wait returns on cancel",
        "parameters": [JOB_ID, EPOCH, _param(
            "wait", "query", {"type": "number", "minimum": 0},
            f"seconds; more than {defaults.MAX_LEASE_WAIT:g} (or half the lease) are cut")],
        "requestBody": {"content": {"application/json": {"schema": _ref("LeaseRequest")}}},
        "responses": {"200": _json(_ref("Lease")), **_errors(404, 409, 413, 429)},
    }},
    "/api/v1/agent/jobs/{job_id}/release": {"post": _job_op(
        "Hand a held job back now (a stopping agent): claimed jobs are queued again, running "
        "ones wait for their agent to re-attach", 409, 413, parameters=[JOB_ID, EPOCH],
        requestBody=_NO_FIELDS)},
    "/api/v1/agent/jobs/{job_id}/inputs/{name}": {"get": {
        "summary": "Download an input (RFC 9110 ranges)",
        "parameters": [JOB_ID, INPUT_NAME, RANGE, IF_RANGE],
        "responses": _DOWNLOAD,
    }},
    "/api/v1/agent/jobs/{job_id}/logs/{stream}": {"post": {
        "summary": "Append log bytes at Log-Offset (bytes already held are skipped)",
        "parameters": [JOB_ID, STREAM, EPOCH, _param("Log-Offset", "header", COUNT,
                                                     "offset of the body's first byte", True)],
        "requestBody": {"required": True, "content": {OCTETS: {"schema": {
            "type": "string", "format": "binary"}}}},
        "responses": {"200": _json({"type": "object", "required": ["size"],
                                    "properties": {"size": COUNT}}),
                      **_errors(404, 409, 413)},
    }},
    "/api/v1/agent/jobs/{job_id}/results/{name}": {
        "head": {"summary": "Bytes the broker holds of a result",
                 "parameters": [JOB_ID, RESULT_PATH], "responses": {
                     "200": {"description": "Upload-Offset: bytes held (0: none yet)",
                             "headers": {**_NEW_OFFSET,
                                         "Upload-Length": _header(COUNT, "declared", False),
                                         "Upload-SHA256": _header(s.SHA256, "declared",
                                                                  False)}},
                     **_errors(404)}},
        "patch": {"summary": "Append result bytes at Upload-Offset (resumable)",
                  "parameters": [JOB_ID, RESULT_PATH, EPOCH, OFFSET,
                                 _param("Upload-Length", "header", COUNT, "total size", True),
                                 _param("Upload-SHA256", "header",
                                        {"type": "string", "pattern": "^[0-9a-fA-F]{64}$"},
                                        "SHA-256 of the whole file (with Upload-Length 0: "
                                        f"{EMPTY_SHA256})", True)],
                  "requestBody": _UPLOAD_BODY,
                  "responses": {"204": _UPLOADED, **_errors(404, 409, 413, 503, 507)}},
    },
    "/api/v1/agent/jobs/{job_id}/complete": {"post": _job_op(
        "Report the outcome and the uploaded results; idempotent for the same epoch", 409, 413,
        parameters=[JOB_ID, EPOCH],
        requestBody={"required": True, "content": {"application/json": {
            "schema": _ref("Completion")}}})},
}  # fmt: skip

_OPTIONAL_NAME = {"type": "string", "pattern": f"^(?:{SUBJECT_NAME.pattern})?$"}
_SECONDS = {"type": "number", "minimum": 0}
ADMIN_PATHS: dict[str, Any] = {
    "/api/v1/admin/jobs": {"get": {
        "summary": "All jobs, newest first, at most 500",
        "parameters": [STATE, *[_param(k, "query", _OPTIONAL_NAME, f"only this {k} (empty: all)")
                                for k in ("site", "client")]],
        "responses": {"200": _JOBS, **_errors()},
    }},
    "/api/v1/admin/queues": {"get": {
        "summary": "Per site: queued, claimed, running, oldest waiting job; long polls held",
        "responses": {"200": _json({"type": "object", "required": ["sites", "long_polls"],
            "properties": {"long_polls": COUNT, "sites": {"type": "array",
                "items": {"type": "object", "required": [
                    "site", "queued", "claimed", "running", "oldest_queued_at", "oldest_wait"],
                    "properties": {"site": {"type": "string"}, "queued": COUNT,
                                   "claimed": COUNT, "running": COUNT,
                                   "oldest_queued_at": s.nullable(s.TIMESTAMP),
                                   "oldest_wait": s.nullable(_SECONDS)}}}}}),
            **_errors()},
    }},
    "/api/v1/admin/agents": {"get": {
        "summary": "Agents and when each was last seen",
        "responses": {"200": _json({"type": "object", "required": ["agents"], "properties": {
            "agents": {"type": "array", "items": {"type": "object", "required": [
                "site", "agent_id", "last_seen", "seconds_ago"], "properties": {
                "site": {"type": "string"}, "agent_id": {"type": "string"},
                "last_seen": s.TIMESTAMP, "seconds_ago": _SECONDS}}}}}), **_errors()},
    }},
}  # fmt: skip

META_PATHS: dict[str, Any] = {
    "/api/v1/openapi.json": {"get": {"summary": "This document", "security": [],
                                     "responses": {"200": _json({"type": "object",
                                                                 "required": ["openapi"]})}}},
    "/api/v1/health": {"get": {"summary": "Liveness (no token needed)", "security": [],
                               "responses": {"200": _json({
                                   "type": "object", "required": ["status", "tokens"],
                                   "properties": {"status": {"const": "ok"},
                                                  "tokens": {"type": "object"}}})}}},
    "/healthz": {"get": {
        "summary": "Whether this instance can serve: store and byte store reachable (no token)",
        "security": [],
        "responses": {"200": _json({"type": "object"}),
                      "503": _json({"type": "object"}, "the store or byte store is unreachable")},
    }},
    "/metrics": {"get": {
        "summary": "Prometheus metrics (text format 0.0.4); admin or operator tokens",
        "responses": {"200": {"description": "the exposition", "content": {
            "text/plain": {"schema": {"type": "string"}}}}, **_errors()},
    }},
}  # fmt: skip

_RETRY_AFTER = {"Retry-After": _header({"type": "string", "pattern": "^[0-9]+$"},
                                       "seconds to wait before retrying")}  # fmt: skip
RESPONSES: dict[str, Any] = {
    "Error": _json(_ref("Error"), "error with a stable code"),
    "Conflict": _json(_ref("Error"), "offset_mismatch also says what the broker holds in "
                      "Upload-Offset or Log-Size", headers={
                          "Upload-Offset": _header(COUNT, "offset_mismatch", False),
                          "Log-Size": _header(COUNT, "offset_mismatch of a log", False)}),
    "RangeNotSatisfiable": _json(_ref("Error"), "no range lies in the file", headers={
        "Content-Range": _header({"type": "string", "pattern": "^bytes \\*/[0-9]+$"},
                                 "the file's size")}),
    "RetryLater": _json(_ref("Error"), "transient", headers=_RETRY_AFTER),
}  # fmt: skip

DOCUMENT: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {
        "title": "mint-bridge broker",
        "version": "1",
        "description": "Jobs between MInt's bridge node (client) and sites that poll (agent). "
        "See docs/broker-api.md for the contract in words. Every rule the broker enforces on "
        "a request is stated here; the served copy also carries this broker's size limits.",
    },
    "security": [{"bearer": []}],
    "paths": {**CLIENT_PATHS, **AGENT_PATHS, **ADMIN_PATHS, **RELOAD_PATH, **META_PATHS,
              **LEGACY_PATHS},
    "components": {
        "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer",
                                       "description": "mbt_<12 hex id>_<secret>"}},
        "schemas": {**s.SCHEMAS, **LEGACY_SCHEMAS},
        "responses": RESPONSES,
    },
}  # fmt: skip


def served_document(config: BrokerConfig) -> dict[str, Any]:
    """DOCUMENT with this broker's size limits, so a size it refuses is outside the spec."""
    document = copy.deepcopy(DOCUMENT)
    schemas = document["components"]["schemas"]
    if config.max_input_size is not None:  # a new dict: the size schema is shared (COUNT)
        entry = schemas["JobRequest"]["properties"]["inputs"]["items"]["properties"]
        entry["size"] = {**entry["size"], "maximum": config.max_input_size}
    if config.max_result_size is not None:
        patch = document["paths"]["/api/v1/agent/jobs/{job_id}/results/{name}"]["patch"]
        length = next(p for p in patch["parameters"] if p["name"] == "Upload-Length")
        length["schema"] = {**length["schema"], "maximum": config.max_result_size}
    return document


@bp.get("/openapi.json")
def openapi() -> Response:
    return jsonify(served_document(current().config))


@bp.get("/health")
def health() -> Response:
    # Counts only (no ids or subjects): health needs no token, and names would help an attacker.
    broker = current()
    tokens = token_expiry.health(broker.store.list_tokens(), broker.clock())
    return jsonify({"status": "ok", "tokens": tokens})
