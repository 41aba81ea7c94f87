"""The original API (``/mi-distcomp-api/``) and the admin reload, for the OpenAPI document.

Described for completeness and for the route/document check; the original clients never read
it. Every answer of the original API, refusals included, is ``{"errors": [{"code",
"message", ...}]}`` where only the integer code 200 means OK. This module only describes.
"""

from __future__ import annotations

from typing import Any


def _json(schema: dict[str, Any], description: str = "OK") -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


_REPLY = _json({"$ref": "#/components/schemas/LegacyReply"},
               "errors[0].code 200 (an integer) is OK; anything else is a refusal")  # fmt: skip
_REFUSED = {str(s): _REPLY for s in (400, 401, 403, 404, 409, 413)}
_BODY = {"required": True, "content": {"application/json": {"schema": {"type": "object"}}}}
_ACCEPT_ID = {"name": "accept_id", "in": "query", "required": True,
              "schema": {"type": "string", "format": "uuid"}, "description": "the job's id"}
_SITE_ID = {"name": "site_id", "in": "query", "required": True, "schema": {"type": "string"},
            "description": "the poller's site (must be the site token's)"}  # fmt: skip


def _post(summary: str, **responses: Any) -> dict[str, Any]:
    return {"post": {"summary": summary, "requestBody": _BODY,
                     "responses": {"200": _REPLY, **_REFUSED, **responses}}}  # fmt: skip


def _get(summary: str, *parameters: dict[str, Any], **responses: Any) -> dict[str, Any]:
    return {"get": {"summary": summary, "parameters": list(parameters),
                    "responses": {"200": _REPLY, **_REFUSED, **responses}}}  # fmt: skip


_BASE = "/mi-distcomp-api"

LEGACY_PATHS: dict[str, Any] = {
    f"{_BASE}/add-calcinfo": _post(
        "Workflow: register a job (calc-info with base64 inputs); errors[0].accept_id",
        **{"202": _json({"$ref": "#/components/schemas/LegacyReply"},
                        "refused: unknown site, command not whitelisted, unsafe name")}),
    f"{_BASE}/allow-wait-calc": _post("Workflow: let pollers take the job"),
    f"{_BASE}/cancel-wait-calc": _post("Workflow: cancel the job"),
    f"{_BASE}/calc-status": _get("Workflow: status:none|completed|abnormal", _ACCEPT_ID),
    f"{_BASE}/calc-progress": _get("Workflow: status:<progress>", _ACCEPT_ID),
    f"{_BASE}/get-calc-result": _get(
        "Workflow: declared results as base64, in errors[0].result-info", _ACCEPT_ID),
    f"{_BASE}/get-calcinfo": _get("Admin: jobs of the original API (no file contents)"),
    f"{_BASE}/calc-request": _get("Poller: a job for this site, in errors[0].accept_id "
                                  "(code \"0300\": none)", _SITE_ID),
    f"{_BASE}/calc-params": _get("Poller: take the job; the bare {\"calc-info\": ...}",
                                 _ACCEPT_ID, _SITE_ID),
    f"{_BASE}/calc-params-complete": _post("Poller: inputs written"),
    f"{_BASE}/calc-start": _post("Poller: the command starts"),
    f"{_BASE}/calc-end": _post("Poller: result 'calc end' or 'abnormal'"),
    f"{_BASE}/send-results": _post("Poller: declared result files as base64, in one body"),
    f"{_BASE}/end-send": _post("Poller: done; the job ends"),
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
                                   "properties": {"code": {}, "message": {"type": "string"}}}}}},
}  # fmt: skip
