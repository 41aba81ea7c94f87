"""The original API (``/mi-distcomp-api/``) and the admin reload, for the OpenAPI document.

Described for completeness and for the route/document check; the original clients never read
it. Every answer of the original API, refusals included, is ``{"errors": [{"code",
"message", ...}]}`` where only the integer code 200 means OK. This module only describes.
"""

from __future__ import annotations

from typing import Any

from bridge.core.defaults import MAX_INPUT_FILES
from broker.legacy.calc_info import MAX_MIMETYPE, MAX_RESULT_FILES
from broker.openapi_schemas import JOB_ID_PATTERN, NAME_PATTERN, SUBJECT_PATTERN


def _json(schema: dict[str, Any], description: str = "OK") -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


_REPLY = _json({"$ref": "#/components/schemas/LegacyReply"},
               "errors[0].code 200 (an integer) is OK; anything else is a refusal")  # fmt: skip
_REFUSED = {str(s): _REPLY for s in (400, 401, 403, 404, 409, 413, 503)}
_JOB_ID = {"type": "string", "pattern": JOB_ID_PATTERN}
_SITE = {"type": "string", "pattern": SUBJECT_PATTERN}
_ACCEPT_ID = {"name": "accept_id", "in": "query", "required": True, "schema": _JOB_ID,
              "description": "the job's id"}  # fmt: skip
_SITE_ID = {"name": "site_id", "in": "query", "required": True, "schema": _SITE,
            "description": "the poller's site (must be the site token's)"}  # fmt: skip
_MIMETYPE = {"type": "string", "maxLength": MAX_MIMETYPE}
# What the original clients send; further keys are ignored, as the original broker did.
_CALC_INFO = {"type": "object", "required": ["calc-info"], "properties": {"calc-info": {
    "type": "object", "additionalProperties": False, "required": ["command", "remote-site"],
    "properties": {
        "command": {"type": "string", "minLength": 1,
                    "description": "exactly as whitelisted for the site in [legacy.sites]"},
        "remote-site": {"type": "string", "minLength": 1},
        "parameters": {"type": "string", "description": "opaque; never given to a program"},
        "parameter_files": {"type": "object", "maxProperties": MAX_INPUT_FILES,
                            "propertyNames": {"pattern": NAME_PATTERN},
                            "additionalProperties": {
                                "type": "array", "minItems": 3, "maxItems": 3,
                                "prefixItems": [{"type": "string", "contentEncoding": "base64"},
                                                _MIMETYPE, _MIMETYPE]}},
        "result_files": {"type": "object", "maxProperties": MAX_RESULT_FILES,
                         "description": "relative paths of letters, digits and . _ + , @ / - "
                                        "(original pollers hand them to a shell); '' is kept",
                         "additionalProperties": {"type": "object",
                                                  "additionalProperties": {"type": "string"}}},
    }}}}  # fmt: skip
_ACCEPT: dict[str, Any] = {"type": "object", "required": ["accept_id"],
                           "properties": {"accept_id": _JOB_ID}}  # fmt: skip
_HELD: dict[str, Any] = {"type": "object", "required": ["accept_id", "site_id"],
                         "properties": {"accept_id": _JOB_ID, "site_id": _SITE}}  # fmt: skip
_STEP: dict[str, dict[str, Any]] = {
    "calc-end": {"result": {"type": "string", "enum": ["calc end", "abnormal"]}},
    "send-results": {"result_files": {"type": "object", "additionalProperties": {
        "type": "object", "properties": {"content": {"type": "string"},
                                         "mimetype1": {"type": "string"},
                                         "mimetype2": {"type": "string"}}}}},
    "end-send": {"result": {"type": "string"}},
}  # fmt: skip


def _body(schema: dict[str, Any]) -> dict[str, Any]:
    return {"required": True, "content": {"application/json": {"schema": schema}}}


def _post(summary: str, schema: dict[str, Any], **responses: Any) -> dict[str, Any]:
    return {"post": {"summary": summary, "requestBody": _body(schema),
                     "responses": {"200": _REPLY, **_REFUSED, **responses}}}  # fmt: skip


def _step(summary: str, name: str) -> dict[str, Any]:
    fields = _STEP.get(name, {})
    schema = {**_HELD, "properties": {**_HELD["properties"], **fields}}
    return _post(summary, schema)


def _get(summary: str, *parameters: dict[str, Any], **responses: Any) -> dict[str, Any]:
    return {"get": {"summary": summary, "parameters": list(parameters),
                    "responses": {"200": _REPLY, **_REFUSED, **responses}}}  # fmt: skip


_BASE = "/mi-distcomp-api"

LEGACY_PATHS: dict[str, Any] = {
    f"{_BASE}/add-calcinfo": _post(
        "Workflow: register a job (calc-info with base64 inputs); errors[0].accept_id",
        _CALC_INFO,
        **{"202": _json({"$ref": "#/components/schemas/LegacyReply"},
                        "refused: unknown site, command not whitelisted, unsafe name")}),
    f"{_BASE}/allow-wait-calc": _post("Workflow: let pollers take the job", _ACCEPT),
    f"{_BASE}/cancel-wait-calc": _post("Workflow: cancel the job", {
        **_ACCEPT, "properties": {**_ACCEPT["properties"], "delete": {"type": "string"}}}),
    f"{_BASE}/calc-status": _get("Workflow: status:none|completed|abnormal", _ACCEPT_ID),
    f"{_BASE}/calc-progress": _get("Workflow: status:<progress>", _ACCEPT_ID),
    f"{_BASE}/get-calc-result": _get(
        "Workflow: declared results as base64, in errors[0].result-info", _ACCEPT_ID),
    f"{_BASE}/get-calcinfo": _get("Admin: jobs of the original API (no file contents)"),
    f"{_BASE}/calc-request": _get("Poller: a job for this site, in errors[0].accept_id "
                                  "(code \"0300\": none)", _SITE_ID),
    f"{_BASE}/calc-params": _get("Poller: take the job; the bare {\"calc-info\": ...}",
                                 _ACCEPT_ID, _SITE_ID),
    f"{_BASE}/calc-params-complete": _step("Poller: inputs written", "calc-params-complete"),
    f"{_BASE}/calc-start": _step("Poller: the command starts", "calc-start"),
    f"{_BASE}/calc-end": _step("Poller: result 'calc end' or 'abnormal'", "calc-end"),
    f"{_BASE}/send-results": _step("Poller: declared result files as base64, in one body",
                                   "send-results"),
    f"{_BASE}/end-send": _step("Poller: done; the job ends", "end-send"),
}  # fmt: skip

RELOAD_PATH: dict[str, Any] = {
    "/api/v1/admin/reload": {"post": {
        "summary": "Read broker.toml's [legacy] section again (switch, whitelist, limits)",
        "requestBody": {"content": {"application/json": {"schema": {
            "type": "object", "maxProperties": 0}}}, "description": "optional: no body, or {}"},
        "responses": {"200": _json({"type": "object"}),
                      **{str(s): {"$ref": "#/components/responses/Error"}
                         for s in (400, 401, 403, 409, 413)},
                      "503": {"$ref": "#/components/responses/RetryLater"}},
    }},
}  # fmt: skip

LEGACY_SCHEMAS: dict[str, Any] = {
    "LegacyReply": {"type": "object", "properties": {"errors": {
        "type": "array", "items": {"type": "object", "required": ["code", "message"],
                                   "properties": {"code": {"type": ["integer", "string"]},
                                                  "message": {"type": "string"}}}}}},
}  # fmt: skip
