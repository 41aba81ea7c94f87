"""Checking every request body, header and query value before it reaches the store.

Each check raises a 400 error whose ``field`` names what is wrong (``inputs[2].sha256``,
``Upload-Offset``, ``wait``). Unknown keys are refused too, so a misspelt setting is never
silently dropped. Names of inputs and results follow ``bridge.core.staging`` (one set of rules for
both ends). This module never reads a request stream and never touches the store.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

from werkzeug.datastructures import Headers

from bridge.core import defaults, strict_json
from bridge.core.errors import BridgeError
from bridge.core.job import check_job_id, new_job_id
from bridge.core.paths import check_name, check_relative_path
from bridge.core.strict_json import INT64_MAX
from broker.auth import SUBJECT_NAME
from broker.errors import InvalidField, InvalidJson, MissingField, UnsafeName
from broker.store import InputSpec, NewJob, ParamValue, ResultRecord, State

SHA256_HEX = re.compile(r"[0-9a-f]{64}")
EMPTY_SHA256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
_AGENT_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@:-]{0,127}")
_ERROR_KIND = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,63}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")

# Bounds that keep one job's description small; none limits what a site may compute.
MAX_COMMAND_LENGTH = 128
# A claim's list of the commands its agent runs: its site's commands and the original API's
# command strings it maps (whitelisted paths, up to broker.legacy.config.MAX_COMMAND long).
MAX_CLAIM_COMMANDS = 512
MAX_CLAIM_COMMAND_LENGTH = 1024
MAX_PARAMS = 256
MAX_PARAM_NAME = 128
MAX_PARAM_STRING = 64 * 1024
MAX_METADATA = 32
MAX_METADATA_KEY = 64
MAX_METADATA_VALUE = 1024
MAX_RESULTS = 100_000
MAX_REASON = 4000
MAX_WALLTIME = 366 * 86400.0
OUTCOME_STATES = frozenset(
    {"completed", "failed", "cancelled", "timeout", "out_of_memory", "node_fail",
     "preempted", "lost", "rejected"}
)  # fmt: skip


def parse_json(raw: bytes, *, required: bool = True) -> dict[str, Any]:
    """A JSON object from a request body; an empty body is ``{}`` where nothing is required."""
    if not raw.strip() and not required:
        return {}
    try:
        value = strict_json.loads(raw, what="the request body")
    except strict_json.StrictJsonError as exc:
        raise InvalidJson(exc.message, field=exc.field) from exc
    if not isinstance(value, dict):
        raise InvalidJson(f"the request body must be a JSON object, not {_kind(value)}")
    return value


def _kind(value: object) -> str:
    names = {dict: "an object", list: "an array", str: "a string", bool: "a boolean"}
    if value is None:
        return "null"
    return names.get(type(value), "a number")


def _invalid(field: str, message: str) -> InvalidField:
    return InvalidField(f"{field} {message}", field=field)


def check_keys(body: Mapping[str, Any], allowed: set[str], prefix: str = "") -> None:
    unknown = sorted(set(body) - allowed)
    if unknown and not allowed:
        raise _invalid(f"{prefix}{unknown[0]}", "is not a known field; this call takes none: "
                       "send no body or {}")
    if unknown:
        raise _invalid(
            f"{prefix}{unknown[0]}", f"is not a known field; known: {', '.join(sorted(allowed))}"
        )


def require(body: Mapping[str, Any], key: str, prefix: str = "") -> Any:
    if key not in body or body[key] is None:
        raise MissingField(f"{prefix}{key}")
    return body[key]


def text(value: object, field: str, max_length: int, *, pattern: re.Pattern[str] | None = None
         ) -> str:  # fmt: skip
    if not isinstance(value, str):
        raise _invalid(field, f"must be a string, not {_kind(value)}")
    if not value or len(value) > max_length:
        raise _invalid(field, f"must be 1-{max_length} characters long")
    if pattern is not None and not pattern.fullmatch(value):
        raise _invalid(field, f"{value!r:.80} does not match {pattern.pattern}")
    return value


def integer(value: object, field: str, *, minimum: int = 0, maximum: int = INT64_MAX) -> int:
    """An integer in range; ``7.0`` counts as 7, as JSON (and JSON Schema) has one number
    type. The upper bound is at most what the databases hold (signed 64 bits)."""
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool):
        raise _invalid(field, f"must be an integer, not {_kind(value)}")
    if not minimum <= value <= min(maximum, INT64_MAX):
        raise _invalid(field, f"must be at least {minimum} and at most {min(maximum, INT64_MAX)}")
    return value


def number(value: object, field: str, *, maximum: float) -> float:
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise _invalid(field, f"must be a number, not {_kind(value)}")
    if not math.isfinite(value) or not 0 < value <= maximum:
        raise _invalid(field, f"must be above 0 and at most {maximum:g}")
    return float(value)


def sha256_hex(value: object, field: str) -> str:
    if not isinstance(value, str) or not SHA256_HEX.fullmatch(value):
        raise _invalid(field, "must be a SHA-256 digest: 64 lowercase hex digits")
    return value


def sized_digest(size: int, sha256: str, field: str) -> str:
    """An empty file has exactly one digest; anything else can never be uploaded."""
    if size == 0 and sha256 != EMPTY_SHA256:
        raise _invalid(field, f"of an empty file must be {EMPTY_SHA256}")
    return sha256


def input_name(value: object, field: str = "name") -> str:
    try:
        return check_name(value)
    except BridgeError as exc:
        raise UnsafeName(exc.message, field=field) from exc


def result_name(value: object, field: str = "name") -> str:
    try:
        return str(check_relative_path(value))
    except BridgeError as exc:
        raise UnsafeName(exc.message, field=field) from exc


# --- request bodies ------------------------------------------------------------------------

_CREATE_KEYS = {"job_id", "site", "command", "params", "inputs", "metadata", "walltime_limit"}


def parse_create(body: Mapping[str, Any], client: str) -> NewJob:
    check_keys(body, _CREATE_KEYS)
    walltime = body.get("walltime_limit")
    return NewJob(
        job_id=_job_id(body.get("job_id")),
        client=client,
        site=text(require(body, "site"), "site", 64, pattern=SUBJECT_NAME),
        command=_command(require(body, "command")),
        params=_params(body.get("params", {})),
        inputs=_inputs(body.get("inputs", [])),
        metadata=_metadata(body.get("metadata", {})),
        walltime_limit=None if walltime is None else number(walltime, "walltime_limit",
                                                            maximum=MAX_WALLTIME),
    )  # fmt: skip


def _job_id(value: object) -> str:
    if value is None:
        return new_job_id()
    try:
        return check_job_id(value)
    except BridgeError as exc:
        raise InvalidField(exc.message, field="job_id") from exc


def _command(value: object) -> str:
    command = text(value, "command", MAX_COMMAND_LENGTH)
    if _CONTROL.search(command):
        raise _invalid("command", "must not contain control characters")
    return command


def _params(value: object) -> dict[str, ParamValue]:
    if not isinstance(value, dict):
        raise _invalid("params", f"must be an object, not {_kind(value)}")
    if len(value) > MAX_PARAMS:
        raise _invalid("params", f"has more than {MAX_PARAMS} entries")
    params: dict[str, ParamValue] = {}
    for key, item in value.items():
        field = f"params.{key}"
        text(key, "params (a name)", MAX_PARAM_NAME)
        if isinstance(item, str):
            if len(item) > MAX_PARAM_STRING:
                raise _invalid(field, f"is longer than {MAX_PARAM_STRING} characters")
        elif isinstance(item, float) and not math.isfinite(item):
            raise _invalid(field, "must be a finite number")
        elif not isinstance(item, int | float | bool):
            raise _invalid(field, f"must be a string, number or boolean, not {_kind(item)}")
        params[key] = item
    return params


def _metadata(value: object) -> dict[str, str]:
    if not isinstance(value, dict):
        raise _invalid("metadata", f"must be an object, not {_kind(value)}")
    if len(value) > MAX_METADATA:
        raise _invalid("metadata", f"has more than {MAX_METADATA} entries")
    for key, item in value.items():
        text(key, "metadata (a key)", MAX_METADATA_KEY)
        if not isinstance(item, str) or len(item) > MAX_METADATA_VALUE:
            raise _invalid(f"metadata.{key}", f"must be a string of at most {MAX_METADATA_VALUE}")
    return dict(value)


def _inputs(value: object) -> tuple[InputSpec, ...]:
    if not isinstance(value, list):
        raise _invalid("inputs", f"must be an array, not {_kind(value)}")
    if len(value) > defaults.MAX_INPUT_FILES:
        raise _invalid("inputs", f"has more than {defaults.MAX_INPUT_FILES} files")
    specs = [_input(item, f"inputs[{index}]") for index, item in enumerate(value)]
    seen: set[str] = set()
    for index, spec in enumerate(specs):
        if spec.name in seen:
            raise _invalid(f"inputs[{index}].name", f"{spec.name!r} is declared twice")
        seen.add(spec.name)
    return tuple(specs)


def _input(item: object, prefix: str) -> InputSpec:
    if not isinstance(item, dict):
        raise _invalid(prefix, "must be an object with name, size and sha256")
    check_keys(item, {"name", "size", "sha256", "mode"}, prefix + ".")
    size = integer(require(item, "size", prefix + "."), prefix + ".size")
    sha256 = sha256_hex(require(item, "sha256", prefix + "."), prefix + ".sha256")
    return InputSpec(
        name=input_name(require(item, "name", prefix + "."), prefix + ".name"),
        size=size,
        sha256=sized_digest(size, sha256, prefix + ".sha256"),
        mode=integer(item.get("mode", 0o644), prefix + ".mode", maximum=0o7777),
    )


def parse_no_fields(body: Mapping[str, Any]) -> None:
    """A call that takes no fields (submit, cancel, ack, release, reload): an empty body or
    ``{}``; a key would be a setting that does nothing, so it is refused."""
    check_keys(body, set())


def parse_claim(body: Mapping[str, Any]) -> tuple[str, frozenset[str] | None]:
    """(agent id, the commands it takes; None: any, as agents before the list did)."""
    check_keys(body, {"agent_id", "commands"})
    agent_id = text(require(body, "agent_id"), "agent_id", 128, pattern=_AGENT_ID)
    # Present means a list: a null would silently take every job, so it is refused.
    return agent_id, _claim_commands(body["commands"]) if "commands" in body else None


def _claim_commands(value: object) -> frozenset[str]:
    """The command names an agent runs: those of its site config, the original API's command
    strings it maps, the probe. Each is matched exactly against a job's ``command``."""
    if not isinstance(value, list):
        raise _invalid("commands", f"must be an array of command names, not {_kind(value)}")
    if not 1 <= len(value) <= MAX_CLAIM_COMMANDS:
        raise _invalid("commands", f"must list 1-{MAX_CLAIM_COMMANDS} command names (leave it "
                       "out to take jobs of every command)")  # fmt: skip
    seen: set[str] = set()
    for index, item in enumerate(value):
        field = f"commands[{index}]"
        name = text(item, field, MAX_CLAIM_COMMAND_LENGTH)
        if _CONTROL.search(name):
            raise _invalid(field, "must not contain control characters")
        if name in seen:
            raise _invalid(field, f"{name!r:.80} is listed twice")
        seen.add(name)
    return frozenset(seen)


def parse_lease(body: Mapping[str, Any]) -> tuple[bool, str | None]:
    """(start running?, native id) from a lease renewal."""
    check_keys(body, {"state", "native_id"})
    state = body.get("state")
    if state is not None and state != State.RUNNING.value:
        raise _invalid("state", "may only be 'running'")
    native = body.get("native_id")
    native_id = None if native is None else text(native, "native_id", 256)
    return state is not None, native_id


def parse_complete(
    body: Mapping[str, Any],
) -> tuple[dict[str, Any], list[ResultRecord], list[dict[str, Any]]]:
    check_keys(body, {"outcome", "results", "skipped"})
    return (
        parse_outcome(require(body, "outcome")),
        _results(body.get("results", [])),
        _skipped(body.get("skipped", [])),
    )


def parse_outcome(value: object) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _invalid("outcome", f"must be an object, not {_kind(value)}")
    check_keys(value, {"state", "exit_code", "signal", "reason", "error_kind"}, "outcome.")
    state = require(value, "state", "outcome.")
    if not isinstance(state, str) or state not in OUTCOME_STATES:  # a list is not hashable
        raise _invalid("outcome.state", f"must be one of {', '.join(sorted(OUTCOME_STATES))}")
    outcome: dict[str, Any] = {
        "state": state,
        "exit_code": _optional_int(value.get("exit_code"), "outcome.exit_code", 0, 255),
        "signal": _optional_int(value.get("signal"), "outcome.signal", 1, 127),
        "reason": _reason(value.get("reason", ""), "outcome.reason"),
    }
    if value.get("error_kind") is not None:
        outcome["error_kind"] = text(value["error_kind"], "outcome.error_kind", 64,
                                     pattern=_ERROR_KIND)  # fmt: skip
    return outcome


def _optional_int(value: object, field: str, low: int, high: int) -> int | None:
    return None if value is None else integer(value, field, minimum=low, maximum=high)


def _reason(value: object, field: str) -> str:
    if not isinstance(value, str):
        raise _invalid(field, f"must be a string, not {_kind(value)}")
    return value[:MAX_REASON]


def _results(value: object) -> list[ResultRecord]:
    if not isinstance(value, list) or len(value) > MAX_RESULTS:
        raise _invalid("results", f"must be an array of at most {MAX_RESULTS} objects")
    records, seen = [], set()
    for index, item in enumerate(value):
        prefix = f"results[{index}]"
        if not isinstance(item, dict):
            raise _invalid(prefix, "must be an object with name, size, sha256 and mode")
        check_keys(item, {"name", "size", "sha256", "mode"}, prefix + ".")
        name = result_name(require(item, "name", prefix + "."), prefix + ".name")
        if name in seen:
            raise _invalid(prefix + ".name", f"{name!r} is listed twice")
        seen.add(name)
        size = integer(require(item, "size", prefix + "."), prefix + ".size")
        sha256 = sha256_hex(require(item, "sha256", prefix + "."), prefix + ".sha256")
        records.append(ResultRecord(
            name=name,
            size=size,
            sha256=sized_digest(size, sha256, prefix + ".sha256"),
            mode=integer(item.get("mode", 0o644), prefix + ".mode", maximum=0o7777),
        ))  # fmt: skip
    return records


def _skipped(value: object) -> list[dict[str, Any]]:
    if not isinstance(value, list) or len(value) > MAX_RESULTS:
        raise _invalid("skipped", f"must be an array of at most {MAX_RESULTS} objects")
    skipped = []
    for index, item in enumerate(value):
        prefix = f"skipped[{index}]"
        if not isinstance(item, dict):
            raise _invalid(prefix, "must be an object with name and reason")
        check_keys(item, {"name", "reason", "rule", "required"}, prefix + ".")
        name = text(require(item, "name", prefix + "."), prefix + ".name", 4096)
        entry: dict[str, Any] = {"name": name, "reason": _reason(item.get("reason", ""), prefix)}
        # A result the site's egress policy withheld: the rule, and whether it was required.
        if "rule" in item:
            entry["rule"] = text(item["rule"], prefix + ".rule", 64, pattern=_RULE)
        if "required" in item:
            if not isinstance(item["required"], bool):
                raise _invalid(prefix + ".required", "must be true or false")
            entry["required"] = item["required"]
        skipped.append(entry)
    return skipped


_RULE = re.compile(r"[a-z_]{1,64}")


# --- headers and query values ----------------------------------------------------------------

_DIGITS = re.compile(r"[0-9]{1,19}")


def header_int(headers: Headers, name: str) -> int:
    """A required header holding a non-negative integer (offsets, epochs, lengths)."""
    value = headers.get(name)
    if value is None:
        raise MissingField(name, "header is required")
    if not _DIGITS.fullmatch(value.strip()) or int(value.strip()) > INT64_MAX:
        raise _invalid(name, f"header must be an integer from 0 to {INT64_MAX}, not {value!r:.40}")
    return int(value.strip())


def header_sha256(headers: Headers, name: str) -> str:
    value = headers.get(name)
    if value is None:
        raise MissingField(name, "header is required")
    return sha256_hex(value.strip().lower(), name)


def query_int(args: Mapping[str, str], name: str, default: int) -> int:
    value = args.get(name)
    if value is None or value == "":
        return default
    if not _DIGITS.fullmatch(value) or int(value) > INT64_MAX:
        raise _invalid(name, f"must be an integer from 0 to {INT64_MAX}, not {value!r:.40}")
    return int(value)


def query_wait(args: Mapping[str, str], maximum: float) -> float:
    """Seconds to wait; values above the maximum are cut to it (the contract's ceiling)."""
    value = args.get("wait")
    if value is None or value == "":
        return 0.0
    try:
        seconds = float(value)
    except ValueError:
        raise _invalid("wait", f"must be a number of seconds, not {value!r:.40}") from None
    if not math.isfinite(seconds) or seconds < 0:
        raise _invalid("wait", "must be a finite number of seconds, at least 0")
    return min(seconds, maximum)


def query_state(args: Mapping[str, str]) -> State | None:
    value = args.get("state")
    if value is None or value == "":
        return None
    try:
        return State(value)
    except ValueError:
        allowed = ", ".join(s.value for s in State)
        raise _invalid("state", f"must be one of {allowed}") from None
