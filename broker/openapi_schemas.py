"""The JSON Schemas of the OpenAPI document: every rule ``broker.validation`` enforces, as data.

Each bound here is taken from the constant the server checks (``broker.validation``,
``bridge.core.paths``, ``bridge.core.strict_json``), so the two cannot drift apart; the
conformance test (schemathesis against a live broker) shows that the server accepts what these
allow and refuses what they do not. A rule JSON Schema cannot state (a name's 255-byte UTF-8
limit, names unique within ``inputs``/``results``) is in the description instead.
This module only describes.
"""

from __future__ import annotations

from typing import Any

from bridge.core import defaults as core_defaults
from bridge.core.paths import PART_SUFFIX
from bridge.core.strict_json import INT64_MAX
from bridge.core.workdir_files import CONTROL_DIR
from broker import validation as v
from broker.auth import SUBJECT_NAME
from broker.store import State

_CONTROL_CLASS = r"\x00-\x1f\x7f"


def _escape(text: str) -> str:
    return "".join(f"\\{ch}" if ch in ".^$*+?()[]{}|\\" else ch for ch in text)


def _segment(end: str) -> str:
    """One safe file name (``bridge.core.paths.name_problem``), followed by ``end``."""
    return (
        f"(?!-)(?!\\.\\.?{end})(?!{_escape(CONTROL_DIR)}{end})"
        f"(?![^/]*{_escape(PART_SUFFIX)}{end})"
        f"[^/\\\\{_CONTROL_CLASS}]{{1,{core_defaults.MAX_NAME_LENGTH}}}"
    )


# An input name: a plain file name. A result path: such names joined by single slashes.
NAME_PATTERN = f"^{_segment('$')}$"
PATH_PATTERN = f"^{_segment('(?:/|$)')}(?:/{_segment('(?:/|$)')})*$"
JOB_ID_PATTERN = "^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$"
SUBJECT_PATTERN = f"^{SUBJECT_NAME.pattern}$"
NAME_NOTE = (
    f"At most {core_defaults.MAX_NAME_LENGTH} bytes of UTF-8 per name (the file system's "
    "limit); not '.', '..', starting with '-', or reserved by mint-bridge."
)

COUNT = {"type": "integer", "minimum": 0, "maximum": INT64_MAX}
SHA256 = {"type": "string", "pattern": f"^{v.SHA256_HEX.pattern}$"}
TIMESTAMP = {"type": "number", "description": "seconds since the epoch (UTC)"}

ERROR_CODES = [
    "bad_request", "invalid_json", "missing_field", "invalid_field", "unsafe_name",
    "checksum_mismatch", "unknown_site", "unauthorized", "forbidden", "not_found",
    "method_not_allowed", "range_not_satisfiable", "conflict", "already_claimed",
    "stale_epoch", "offset_mismatch", "inputs_incomplete", "invalid_state", "too_large",
    "rate_limited", "unavailable", "internal_error",
]  # fmt: skip


def _text(max_length: int, pattern: str | None = None, **extra: Any) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "string", "minLength": 1, "maxLength": max_length}
    if pattern is not None:
        schema["pattern"] = pattern
    return {**schema, **extra}


def _obj(properties: dict[str, Any], required: tuple[str, ...] = (), **extra: Any
         ) -> dict[str, Any]:  # fmt: skip
    """An object that refuses unknown keys, as ``validation.check_keys`` does."""
    schema: dict[str, Any] = {"type": "object", "properties": properties,
                              "additionalProperties": False}  # fmt: skip
    if required:
        schema["required"] = list(required)
    return {**schema, **extra}


def nullable(schema: dict[str, Any]) -> dict[str, Any]:
    return {"anyOf": [schema, {"type": "null"}]}


def _file_entry(name: dict[str, Any]) -> dict[str, Any]:
    """A declared file; an empty one can only have the SHA-256 of no bytes."""
    return _obj(
        {"name": name, "size": COUNT, "sha256": SHA256,
         "mode": {"type": "integer", "minimum": 0, "maximum": 0o7777, "default": 0o644}},
        ("name", "size", "sha256"),
        anyOf=[{"properties": {"size": {"minimum": 1}}},
               {"properties": {"sha256": {"const": v.EMPTY_SHA256}}}],
    )  # fmt: skip


INPUT_NAME = _text(core_defaults.MAX_NAME_LENGTH, NAME_PATTERN, description=NAME_NOTE)
RESULT_PATH = {"type": "string", "minLength": 1, "pattern": PATH_PATTERN,
               "description": "relative, '/'-separated names. " + NAME_NOTE}  # fmt: skip
_PARAM_VALUE = {"anyOf": [
    {"type": "string", "maxLength": v.MAX_PARAM_STRING},
    {"type": "integer", "minimum": -INT64_MAX - 1, "maximum": INT64_MAX},
    {"type": "number"}, {"type": "boolean"},
]}  # fmt: skip
_OUTCOME_STATES = sorted(v.OUTCOME_STATES)

JOB_REQUEST = _obj({
    "job_id": nullable({"type": "string", "pattern": JOB_ID_PATTERN}),
    "site": _text(64, SUBJECT_PATTERN),
    "command": _text(v.MAX_COMMAND_LENGTH, f"^[^{_CONTROL_CLASS}]*$"),
    "params": {"type": "object", "maxProperties": v.MAX_PARAMS,
               "propertyNames": {"minLength": 1, "maxLength": v.MAX_PARAM_NAME},
               "additionalProperties": _PARAM_VALUE},
    "inputs": {"type": "array", "maxItems": core_defaults.MAX_INPUT_FILES,
               "uniqueItems": True, "items": _file_entry(INPUT_NAME),
               "description": "names are unique"},
    "metadata": {"type": "object", "maxProperties": v.MAX_METADATA,
                 "propertyNames": {"minLength": 1, "maxLength": v.MAX_METADATA_KEY},
                 "additionalProperties": {"type": "string", "maxLength": v.MAX_METADATA_VALUE}},
    "walltime_limit": nullable({"type": "number", "exclusiveMinimum": 0,
                                 "maximum": v.MAX_WALLTIME}),
}, ("site", "command"))  # fmt: skip

OUTCOME = _obj({
    "state": {"type": "string", "enum": _OUTCOME_STATES},
    "exit_code": nullable({"type": "integer", "minimum": 0, "maximum": 255}),
    "signal": nullable({"type": "integer", "minimum": 1, "maximum": 127}),
    "reason": {"type": "string", "description": f"kept up to {v.MAX_REASON} characters"},
    "error_kind": nullable({"type": "string", "pattern": "^[A-Za-z][A-Za-z0-9_]{0,63}$"}),
}, ("state",))  # fmt: skip

COMPLETION = _obj({
    "outcome": OUTCOME,
    "results": {"type": "array", "maxItems": v.MAX_RESULTS,
                "uniqueItems": True, "items": _file_entry(RESULT_PATH),
                "description": "names are unique"},
    "skipped": {"type": "array", "maxItems": v.MAX_RESULTS, "items": _obj(
        {"name": _text(4096), "reason": {"type": "string"},
         "rule": {"type": "string", "pattern": "^[a-z_]{1,64}$",
                  "description": "the egress rule that withheld the result"},
         "required": {"type": "boolean",
                      "description": "the command declares the withheld result required"}},
        ("name",))},
}, ("outcome",))  # fmt: skip

CLAIM_REQUEST = _obj({
    "agent_id": _text(128, "^[A-Za-z0-9][A-Za-z0-9._@:-]{0,127}$"),
    "commands": {
        "type": "array", "minItems": 1, "maxItems": v.MAX_CLAIM_COMMANDS, "uniqueItems": True,
        "items": _text(v.MAX_CLAIM_COMMAND_LENGTH, f"^[^{_CONTROL_CLASS}]*$"),
        "description": "the commands this agent runs (exact job commands); a job of another "
                       "command that the site's original pollers may run is left to them. "
                       "Left out: jobs of any command.",
    },
}, ("agent_id",))  # fmt: skip
LEASE_REQUEST = _obj({
    "state": nullable({"type": "string", "enum": [State.RUNNING.value]}),
    "native_id": nullable(_text(256)),
})  # fmt: skip

_LISTED_FILE = {"type": "object", "required": ["name", "size", "sha256", "mode"],
                "properties": {"name": {"type": "string"}, "size": COUNT, "sha256": SHA256,
                               "mode": {"type": "integer"}, "received": COUNT}}  # fmt: skip
_NOTICE = {"type": "object", "required": ["code", "message"], "properties": {
    "code": {"type": "string", "enum": ["no_agent_online"]}, "message": {"type": "string"},
    "agent_last_seen": nullable(TIMESTAMP)}}  # fmt: skip

JOB = {"type": "object", "required": [
    "job_id", "site", "client", "command", "params", "metadata", "walltime_limit", "inputs",
    "state", "version", "outcome", "logs", "results", "results_available", "skipped",
    "cancel_requested", "agent_lost", "agent_id", "native_id", "created_at", "updated_at",
], "properties": {
    "job_id": {"type": "string", "pattern": JOB_ID_PATTERN}, "site": {"type": "string"},
    "client": {"type": "string"}, "command": {"type": "string"},
    "params": {"type": "object"}, "metadata": {"type": "object"},
    "walltime_limit": nullable({"type": "number"}),
    "inputs": {"type": "array", "items": _LISTED_FILE},
    "state": {"type": "string", "enum": [s.value for s in State]},
    "version": COUNT,
    "outcome": nullable({"type": "object", "required": ["state"], "properties": {
        "state": {"type": "string", "enum": _OUTCOME_STATES},
        "exit_code": nullable({"type": "integer"}), "signal": nullable({"type": "integer"}),
        "reason": {"type": "string"}, "error_kind": {"type": "string"}}}),
    "logs": {"type": "object", "required": ["stdout", "stderr"],
             "properties": {"stdout": COUNT, "stderr": COUNT}},
    "results": {"type": "array", "items": _LISTED_FILE},
    "results_available": {"type": "boolean"},
    "skipped": {"type": "array", "items": {"type": "object"}},
    "cancel_requested": {"type": "boolean"}, "agent_lost": {"type": "boolean"},
    "agent_id": nullable({"type": "string"}), "native_id": nullable({"type": "string"}),
    "created_at": TIMESTAMP, "updated_at": TIMESTAMP,
    "notice": {**nullable(_NOTICE), "description":
               "client API: set while the job is queued and no agent of its site is online"},
}}  # fmt: skip

ERROR = {"type": "object", "required": ["error"], "additionalProperties": False, "properties": {
    "error": {"type": "object", "required": ["code", "message"], "properties": {
        "code": {"type": "string", "enum": ERROR_CODES}, "message": {"type": "string"},
        "field": {"type": "string"},
        "size": {**COUNT, "description": "offset_mismatch: the bytes the broker holds"},
        "epoch": {**COUNT, "description": "stale_epoch: the current lease epoch"}}}}}  # fmt: skip

SCHEMAS: dict[str, Any] = {
    "Error": ERROR,
    "JobRequest": JOB_REQUEST,
    "Job": JOB,
    "Claim": {"type": "object", "required": ["job", "lease", "reattach"], "properties": {
        "job": {"$ref": "#/components/schemas/Job"}, "reattach": {"type": "boolean"},
        "lease": {"type": "object", "required": ["epoch", "ttl"], "properties": {
            "epoch": COUNT, "ttl": {"type": "number"}}}}},
    "LeaseRequest": LEASE_REQUEST,
    "Lease": {"type": "object", "required": ["ttl", "cancel_requested", "epoch", "state"],
              "properties": {"ttl": {"type": "number", "minimum": 0},
                             "cancel_requested": {"type": "boolean"}, "epoch": COUNT,
                             "state": {"type": "string", "enum": [s.value for s in State]}}},
    "ClaimRequest": CLAIM_REQUEST,
    "Completion": COMPLETION,
}  # fmt: skip
