"""The OpenAPI 3 description of the broker's HTTP API, served at ``/api/v1/openapi.json``.

docs/broker-api.md is the contract in words; this is the same contract for tools. A test keeps
it true: every route the app registers is described here, and nothing else is. The blueprint
here also serves ``/api/v1/health``; neither needs a token, and health tells only how many
tokens have expired or expire soon (no ids, no subjects), so an operator renews them in time.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, jsonify

from broker import token_expiry
from broker.legacy.openapi import LEGACY_PATHS, LEGACY_SCHEMAS, RELOAD_PATH
from broker.runtime import current

OCTETS = "application/octet-stream"

bp = Blueprint("meta_api", __name__, url_prefix="/api/v1")


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str = "OK") -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _bytes(description: str) -> dict[str, Any]:
    return {"description": description,
            "content": {OCTETS: {"schema": {"type": "string", "format": "binary"}}}}  # fmt: skip


def _errors(*statuses: int) -> dict[str, Any]:
    return {str(s): {"$ref": "#/components/responses/Error"} for s in (400, 401, 403, *statuses)}


def _param(name: str, where: str, schema: dict[str, Any], text: str, required: bool = False
           ) -> dict[str, Any]:  # fmt: skip
    return {"name": name, "in": where, "required": required or where == "path",
            "schema": schema, "description": text}  # fmt: skip


JOB_ID = _param("job_id", "path", {"type": "string", "format": "uuid"}, "job id (UUID4)")
INPUT_NAME = _param("name", "path", {"type": "string"}, "input name (a plain file name)")
RESULT_PATH = _param(
    "name",
    "path",
    {"type": "string"},
    "result path: relative, '/'-separated safe names (may contain '/')",
)
STREAM = _param("stream", "path", {"type": "string", "enum": ["stdout", "stderr"]}, "log stream")
EPOCH = _param("Lease-Epoch", "header", {"type": "integer"}, "lease epoch held", required=True)
OFFSET = _param(
    "Upload-Offset", "header", {"type": "integer"}, "bytes held before this body", required=True
)
WAIT_50 = _param("wait", "query", {"type": "number", "maximum": 50}, "long-poll seconds (<= 50)")
RANGE = _param("Range", "header", {"type": "string"}, "bytes=a- (or any single range)")
_UPLOAD_BODY = {
    "required": True,
    "content": {
        "application/offset+octet-stream": {"schema": {"type": "string", "format": "binary"}}
    },
}
_UPLOADED = {
    "description": "bytes stored; Upload-Offset is the new count",
    "headers": {"Upload-Offset": {"schema": {"type": "integer"}}},
}
_OFFSET_HELD = {
    "description": "Upload-Offset: bytes the broker holds",
    "headers": {"Upload-Offset": {"schema": {"type": "integer"}}},
}
_FILE = _bytes("the file (206 for a range), ETag is the quoted SHA-256")


def _job_op(summary: str, *errors: int, **extra: Any) -> dict[str, Any]:
    op: dict[str, Any] = {
        "summary": summary,
        "parameters": [JOB_ID],
        "responses": {"200": _json(_ref("Job")), **_errors(404, *errors)},
    }
    op.update(extra)
    return op


CLIENT_PATHS: dict[str, Any] = {
    "/api/v1/jobs": {
        "post": {
            "summary": "Create a job (idempotent for the same job_id, client and body); "
                       "400 unknown_site for a site without an active site token",
            "requestBody": {"required": True, "content": {"application/json": {
                "schema": _ref("JobRequest")}}},
            "responses": {"201": _json(_ref("Job"), "created"),
                          "200": _json(_ref("Job"), "the same job existed"),
                          **_errors(409, 413)},
        },
        "get": {
            "summary": "List own jobs (admin: all), newest first, at most 500",
            "parameters": [_param("state", "query", {"type": "string"}, "only this state")],
            "responses": {"200": _json({"type": "object", "properties": {
                "jobs": {"type": "array", "items": _ref("Job")}}}), **_errors()},
        },
    },
    "/api/v1/jobs/{job_id}": {"get": _job_op(
        "The job document; with version and wait, as soon as version > v",
        parameters=[JOB_ID, _param("version", "query", {"type": "integer"}, "version seen"),
                    WAIT_50])},
    "/api/v1/jobs/{job_id}/inputs/{name}": {
        "head": {"summary": "Bytes the broker holds of an input",
                 "parameters": [JOB_ID, INPUT_NAME],
                 "responses": {"200": _OFFSET_HELD, **_errors(404)}},
        "patch": {"summary": "Append input bytes at Upload-Offset (resumable)",
                  "parameters": [JOB_ID, INPUT_NAME, OFFSET], "requestBody": _UPLOAD_BODY,
                  "responses": {"204": _UPLOADED, **_errors(404, 409, 413, 503)}},
    },
    "/api/v1/jobs/{job_id}/submit": {"post": _job_op("Queue the job (inputs complete)", 409)},
    "/api/v1/jobs/{job_id}/logs/{stream}": {"get": {
        "summary": "Log bytes from offset (at most 1 MiB), long-polled",
        "parameters": [JOB_ID, STREAM, _param("offset", "query", {"type": "integer"}, "start"),
                       WAIT_50],
        "responses": {"200": _bytes("log bytes; headers Log-Size and Job-State"), **_errors(404)},
    }},
    "/api/v1/jobs/{job_id}/results/{name}": {"get": {
        "summary": "Download a result of a finished job (Range supported)",
        "parameters": [JOB_ID, RESULT_PATH, RANGE],
        "responses": {"200": _FILE, "206": _FILE, **_errors(404, 416)},
    }},
    "/api/v1/jobs/{job_id}/cancel": {"post": _job_op("Cancel (at once if unclaimed)")},
    "/api/v1/jobs/{job_id}/ack": {"post": _job_op("Results fetched: delete them now", 409)},
}  # fmt: skip

AGENT_PATHS: dict[str, Any] = {
    "/api/v1/agent/claim": {"post": {
        "summary": "Take the next job of this site (reattach first), long-polled",
        "parameters": [WAIT_50],
        "requestBody": {"required": True, "content": {"application/json": {"schema": {
            "type": "object", "required": ["agent_id"],
            "properties": {"agent_id": {"type": "string"}}}}}},
        "responses": {"200": _json(_ref("Claim")), "204": {"description": "nothing to do"},
                      **_errors(429, 503)},
        "description": "The token is checked again as the claim commits (a token revoked "
                       "while its poll waited gets 401 and takes nothing), and a poll whose "
                       "client has closed its connection takes nothing.",
    }},
    "/api/v1/agent/jobs/{job_id}/lease": {"post": {
        "summary": "Renew the lease; state=running starts the job; wait returns on cancel",
        "parameters": [JOB_ID, EPOCH, _param("wait", "query", {"type": "number", "maximum": 20},
                                             "seconds (<= 20)")],
        "requestBody": {"content": {"application/json": {"schema": {"type": "object",
            "properties": {"state": {"type": "string", "enum": ["running"]},
                           "native_id": {"type": "string"}}}}}},
        "responses": {"200": _json(_ref("Lease")), **_errors(404, 409)},
    }},
    "/api/v1/agent/jobs/{job_id}/release": {"post": _job_op(
        "Hand a held job back now (a stopping agent): claimed jobs are queued again, running "
        "ones wait for their agent to re-attach", 409, parameters=[JOB_ID, EPOCH])},
    "/api/v1/agent/jobs/{job_id}/inputs/{name}": {"get": {
        "summary": "Download an input (Range supported)",
        "parameters": [JOB_ID, INPUT_NAME, RANGE],
        "responses": {"200": _FILE, "206": _FILE, **_errors(404, 416)},
    }},
    "/api/v1/agent/jobs/{job_id}/logs/{stream}": {"post": {
        "summary": "Append log bytes at Log-Offset (bytes already held are skipped)",
        "parameters": [JOB_ID, STREAM, EPOCH, _param("Log-Offset", "header",
                                                     {"type": "integer"}, "offset", True)],
        "requestBody": {"required": True, "content": {OCTETS: {"schema": {
            "type": "string", "format": "binary"}}}},
        "responses": {"200": _json({"type": "object", "properties": {
            "size": {"type": "integer"}}}), **_errors(404, 409, 413)},
    }},
    "/api/v1/agent/jobs/{job_id}/results/{name}": {
        "head": {"summary": "Bytes the broker holds of a result",
                 "parameters": [JOB_ID, RESULT_PATH], "responses": {"200": _OFFSET_HELD,
                                                                    **_errors(404)}},
        "patch": {"summary": "Append result bytes at Upload-Offset (resumable)",
                  "parameters": [JOB_ID, RESULT_PATH, EPOCH, OFFSET,
                                 _param("Upload-Length", "header", {"type": "integer"},
                                        "total size", True),
                                 _param("Upload-SHA256", "header", {"type": "string"},
                                        "SHA-256 of the whole file", True)],
                  "requestBody": _UPLOAD_BODY,
                  "responses": {"204": _UPLOADED, **_errors(404, 409, 413, 503)}},
    },
    "/api/v1/agent/jobs/{job_id}/complete": {"post": _job_op(
        "Report the outcome and the uploaded results; idempotent for the same epoch", 409,
        parameters=[JOB_ID, EPOCH],
        requestBody={"required": True, "content": {"application/json": {
            "schema": _ref("Completion")}}})},
}  # fmt: skip

ADMIN_PATHS: dict[str, Any] = {
    "/api/v1/admin/jobs": {"get": {
        "summary": "All jobs, newest first, at most 500",
        "parameters": [_param(k, "query", {"type": "string"}, f"only this {k}")
                       for k in ("state", "site", "client")],
        "responses": {"200": _json({"type": "object"}), **_errors()},
    }},
    "/api/v1/admin/queues": {"get": {
        "summary": "Per site: queued, claimed, running, oldest waiting job; long polls held",
        "responses": {"200": _json({"type": "object"}), **_errors()},
    }},
    "/api/v1/admin/agents": {"get": {
        "summary": "Agents and when each was last seen",
        "responses": {"200": _json({"type": "object"}), **_errors()},
    }},
}  # fmt: skip

META_PATHS: dict[str, Any] = {
    "/api/v1/openapi.json": {"get": {"summary": "This document", "security": [],
                                     "responses": {"200": _json({"type": "object"})}}},
    "/api/v1/health": {"get": {"summary": "Liveness (no token needed)", "security": [],
                               "responses": {"200": _json({"type": "object"})}}},
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

_OUTCOME = {
    "type": "object",
    "required": ["state"],
    "properties": {
        "state": {
            "type": "string",
            "enum": [
                "completed",
                "failed",
                "cancelled",
                "timeout",
                "out_of_memory",
                "node_fail",
                "preempted",
                "lost",
                "rejected",
            ],
        },
        "exit_code": {"type": "integer", "nullable": True, "minimum": 0, "maximum": 255},
        "signal": {"type": "integer", "nullable": True, "minimum": 1, "maximum": 127},
        "reason": {"type": "string"},
        "error_kind": {"type": "string"},
    },
}
_FILE_ENTRY = {
    "type": "object",
    "required": ["name", "size", "sha256"],
    "properties": {
        "name": {"type": "string"},
        "size": {"type": "integer"},
        "sha256": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
        "mode": {"type": "integer"},
    },
}
SCHEMAS: dict[str, Any] = {
    "Error": {"type": "object", "properties": {"error": {"type": "object",
        "required": ["code", "message"], "properties": {"code": {"type": "string"},
        "message": {"type": "string"}, "field": {"type": "string"}}}}},
    "JobRequest": {"type": "object", "required": ["site", "command"], "properties": {
        "job_id": {"type": "string", "format": "uuid"}, "site": {"type": "string"},
        "command": {"type": "string"}, "params": {"type": "object"},
        "inputs": {"type": "array", "items": _FILE_ENTRY},
        "metadata": {"type": "object", "additionalProperties": {"type": "string"}},
        "walltime_limit": {"type": "number", "nullable": True}}},
    "Job": {"type": "object", "properties": {
        "job_id": {"type": "string"}, "site": {"type": "string"}, "client": {"type": "string"},
        "command": {"type": "string"}, "params": {"type": "object"},
        "metadata": {"type": "object"}, "walltime_limit": {"type": "number", "nullable": True},
        "inputs": {"type": "array", "items": _FILE_ENTRY},
        "state": {"type": "string", "enum": ["created", "queued", "claimed", "running",
                                             "finished", "cancelled", "expired"]},
        "version": {"type": "integer"}, "outcome": {**_OUTCOME, "nullable": True},
        "logs": {"type": "object", "properties": {"stdout": {"type": "integer"},
                                                  "stderr": {"type": "integer"}}},
        "results": {"type": "array", "items": _FILE_ENTRY},
        "results_available": {"type": "boolean"},
        "skipped": {"type": "array", "items": {"type": "object"}},
        "cancel_requested": {"type": "boolean"}, "agent_lost": {"type": "boolean"},
        "agent_id": {"type": "string", "nullable": True},
        "native_id": {"type": "string", "nullable": True},
        "created_at": {"type": "number"}, "updated_at": {"type": "number"},
        "notice": {"type": "object", "nullable": True, "description":
                   "client API: set while the job is queued and no agent of its site is online",
                   "properties": {"code": {"type": "string", "enum": ["no_agent_online"]},
                                  "message": {"type": "string"},
                                  "agent_last_seen": {"type": "number", "nullable": True}}}}},
    "Claim": {"type": "object", "properties": {"job": _ref("Job"), "reattach": {
        "type": "boolean"}, "lease": {"type": "object", "properties": {
        "epoch": {"type": "integer"}, "ttl": {"type": "number"}}}}},
    "Lease": {"type": "object", "properties": {"ttl": {"type": "number"},
        "cancel_requested": {"type": "boolean"}, "epoch": {"type": "integer"},
        "state": {"type": "string"}}},
    "Completion": {"type": "object", "required": ["outcome"], "properties": {
        "outcome": _OUTCOME, "results": {"type": "array", "items": _FILE_ENTRY},
        "skipped": {"type": "array", "items": {"type": "object", "properties": {
            "name": {"type": "string"}, "reason": {"type": "string"}}}}}},
}  # fmt: skip

DOCUMENT: dict[str, Any] = {
    "openapi": "3.0.3",
    "info": {
        "title": "mint-bridge broker",
        "version": "1",
        "description": "Jobs between MInt's bridge node (client) and sites that poll (agent). "
        "See docs/broker-api.md for the contract in words.",
    },
    "security": [{"bearer": []}],
    "paths": {**CLIENT_PATHS, **AGENT_PATHS, **ADMIN_PATHS, **RELOAD_PATH, **META_PATHS,
              **LEGACY_PATHS},
    "components": {
        "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer",
                                       "description": "mbt_<12 hex id>_<secret>"}},
        "schemas": {**SCHEMAS, **LEGACY_SCHEMAS},
        "responses": {"Error": _json(_ref("Error"), "error with a stable code")},
    },
}  # fmt: skip


@bp.get("/openapi.json")
def openapi() -> Response:
    return jsonify(DOCUMENT)


@bp.get("/health")
def health() -> Response:
    # Counts only (no ids or subjects): health needs no token, and names would help an attacker.
    broker = current()
    tokens = token_expiry.health(broker.store.list_tokens(), broker.clock())
    return jsonify({"status": "ok", "tokens": tokens})
