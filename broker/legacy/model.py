"""The original API's words, shapes and rules, without HTTP: what
``broker.legacy`` answers.

- Replies are ``{"errors": [{"code": ..., "message": ...}]}``, successes included; only the
  JSON integer 200 means OK (``ok``/``refusal``). "No job yet" is the string code ``"0300"``.
- Status and progress travel as ``status:<value>`` messages; the workflow client splits them
  on ``:``, so no value here contains one.
- ``calc-info`` as the original workflow client sends it is checked by ``parse_calc_info``:
  input names are plain file names (no ``/``), result names relative paths that stay in the
  job, file contents valid base64; mimetype strings are kept exactly as sent.
- The progress and status a workflow client sees are derived from the job's state in the
  store (``progress``/``status``), so a job run by a new agent reads the same as one run by an
  original poller.

Never: let a refusal carry code 200, change a mimetype string, or treat ``parameters`` as
anything but an opaque string (it is echoed to original pollers, which ignore it, and never
given to a program).
"""

from __future__ import annotations

import base64
import binascii
import enum
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from bridge.core import defaults as bridge_defaults
from bridge.core.errors import BridgeError
from bridge.core.paths import check_name, check_relative_path
from broker.legacy.config import LegacyConfig
from broker.store import JobRecord, LegacyRecord, State

OK = 200
NO_JOB = "0300"  # the original's "no job for you", a string on purpose: it is not OK
STDOUT_NAME = "計算標準出力.txt"
STDERR_NAME = "計算標準エラー出力.txt"
LOG_FILES = {STDOUT_NAME: "stdout", STDERR_NAME: "stderr"}
POLLER_PREFIX = "legacy:"  # agent id of an original poller: legacy:<token id>
ORIGIN = {"origin": "mi-distcomp-api"}  # metadata of jobs made by add-calcinfo
# A job of the new API may name the files an original poller should send back (colon-separated,
# like the workflow client's argument); without them the poller calls every run abnormal.
RESULT_FILES_KEY = "legacy_result_files"
MAX_MIMETYPE = 4096
MAX_RESULT_FILES = 10_000
# Characters a result name may have besides letters of any script: the original poller puts
# each existing result name into a shell command line unquoted (``file -b -i <name>``), so
# nothing a shell would read as syntax (space, ';', '|', '$', '`', quotes, globs, '~') passes.
_SHELL_INERT_ASCII = re.compile(r"[A-Za-z0-9._+,@/-]*")


class Progress(enum.StrEnum):
    NOT_START = "not start"
    SENDING_PARAMS = "sending params"
    COMPLETE_SEND = "complete send"
    RUNNING = "running"
    CALC_END = "calc end"
    GETTING_RETURN = "getting return"
    GOT_RETURN = "got return"


class Status(enum.StrEnum):
    NONE = "none"
    COMPLETED = "completed"
    ABNORMAL = "abnormal"


class Refused(Exception):
    """A refusal in the original's shape: HTTP status, JSON ``code`` (never 200), message."""

    def __init__(self, http: int, code: int | str, message: str) -> None:
        super().__init__(message)
        assert code != OK, "a refusal never carries the OK code"
        self.http, self.code, self.message = http, code, message


# --- replies ---------------------------------------------------------------------------------


def ok(message: str = "ok", **extra: Any) -> dict[str, Any]:
    return {"errors": [{"code": OK, "message": message, **extra}]}


def refusal(code: int | str, message: str, **extra: Any) -> dict[str, Any]:
    assert code != OK, "a refusal never carries the OK code"
    return {"errors": [{"code": code, "message": message, **extra}]}


def no_job() -> dict[str, Any]:
    return refusal(NO_JOB, "no job")


def status_message(value: str) -> str:
    """``status:<value>``: the workflow client keeps what follows the first ':'."""
    if ":" in value:
        raise ValueError(f"a status value must not contain ':' ({value!r})")
    return f"status:{value}"


# --- calc-info from add-calcinfo --------------------------------------------------------------


@dataclass(frozen=True)
class LegacyInput:
    name: str
    data: bytes
    mimetype: str
    charset: str


@dataclass(frozen=True)
class CalcInfo:
    command: str
    site: str
    parameters: str
    inputs: tuple[LegacyInput, ...]
    result_files: Mapping[str, Mapping[str, str]]

    def stored(self) -> dict[str, Any]:
        """As registered, without file contents (those become the job's inputs)."""
        return {
            "command": self.command,
            "remote-site": self.site,
            "parameters": self.parameters,
            "parameter_files": {i.name: [i.mimetype, i.charset] for i in self.inputs},
            "result_files": {name: dict(value) for name, value in self.result_files.items()},
        }


_CALC_INFO_KEYS = {"command", "remote-site", "parameters", "parameter_files", "result_files"}


def parse_calc_info(body: Mapping[str, Any]) -> CalcInfo:
    """The body of add-calcinfo, checked; Refused (HTTP 202, as the original) if it is not
    acceptable. The site and the command are checked against the whitelist by the caller."""
    info = body.get("calc-info")
    if not isinstance(info, dict):
        raise _bad("the body must be {\"calc-info\": {...}}")
    unknown = sorted(set(info) - _CALC_INFO_KEYS)
    if unknown:
        raise _bad(f"calc-info has an unknown key {unknown[0]!r}")
    for key in ("command", "remote-site"):
        if not isinstance(info.get(key), str) or not info[key]:
            raise _bad(f"calc-info.{key} must be a non-empty string")
    parameters = info.get("parameters", "")
    if not isinstance(parameters, str):
        raise _bad("calc-info.parameters must be a string")
    return CalcInfo(
        command=info["command"],
        site=info["remote-site"],
        parameters=parameters,
        inputs=_inputs(info.get("parameter_files", {})),
        result_files=_result_files(info.get("result_files", {})),
    )


def _bad(message: str, code: int = 400) -> Refused:
    # 202, not 400: the original answered refusals of add-calcinfo so (a 400 upset the API
    # gateway in front of it); the workflow client treats anything but 200/201 as failure.
    return Refused(202, code, message)


def _inputs(raw: object) -> tuple[LegacyInput, ...]:
    if not isinstance(raw, dict):
        raise _bad("calc-info.parameter_files must be an object")
    if len(raw) > bridge_defaults.MAX_INPUT_FILES:
        raise _bad(f"calc-info.parameter_files has more than {bridge_defaults.MAX_INPUT_FILES}")
    inputs: list[LegacyInput] = []
    for name, value in raw.items():
        input_name(name)
        if (
            not isinstance(value, list)
            or len(value) != 3
            or not all(isinstance(item, str) for item in value)
        ):
            raise _bad(f"parameter_files[{name!r}] must be [base64, mimetype, charset]")
        content, mimetype, charset = value
        check_mimetype(mimetype, f"parameter_files[{name!r}][1]")
        check_mimetype(charset, f"parameter_files[{name!r}][2]")
        inputs.append(LegacyInput(name, decode(content, f"parameter_files[{name!r}][0]"),
                                  mimetype, charset))  # fmt: skip
    return tuple(inputs)


def input_name(name: object) -> str:
    """An input key: a plain file name. The original poller writes ``key.split('/')[-1]`` and
    then looks the shortened name up again, so a key with '/' would kill it."""
    try:
        return check_name(name)
    except BridgeError as exc:
        raise _bad(exc.message) from exc


def result_name(name: object) -> str:
    """A declared result: a relative path inside the job's work dir. The original poller
    reads it relative to its work dir, following '..' and absolute names, and hands it to a
    shell unquoted, so those and shell syntax are refused here. The empty name the workflow
    client declares for an empty output list is kept: it never names a file."""
    if name == "":
        return ""
    problem = result_name_problem(name)
    if problem:
        raise _bad(problem)
    assert isinstance(name, str)
    return name


def result_name_problem(name: object) -> str | None:
    try:
        check_relative_path(name)
    except BridgeError as exc:
        return exc.message
    assert isinstance(name, str)
    ascii_only = "".join(ch for ch in name if ord(ch) < 128)
    if not _SHELL_INERT_ASCII.fullmatch(ascii_only):
        bad = next(ch for ch in ascii_only if not _SHELL_INERT_ASCII.fullmatch(ch))
        return (
            f"result file {name!r:.120} has {bad!r}: original pollers hand result names to a "
            "shell, so they may use only letters, digits and . _ + , @ / -"
        )
    return None


def _result_files(raw: object) -> dict[str, dict[str, str]]:
    if not isinstance(raw, dict):
        raise _bad("calc-info.result_files must be an object")
    if len(raw) > MAX_RESULT_FILES:
        raise _bad(f"calc-info.result_files has more than {MAX_RESULT_FILES} entries")
    files: dict[str, dict[str, str]] = {}
    for name, value in raw.items():
        result_name(name)
        # The original poller fills this object in and sends it back: it must be an object.
        if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
            raise _bad(f"result_files[{name!r}] must be an object of strings")
        files[name] = dict(value)
    return files


def check_mimetype(value: object, where: str) -> str:
    if not isinstance(value, str) or len(value) > MAX_MIMETYPE:
        raise _bad(f"{where} must be a string of at most {MAX_MIMETYPE} characters")
    return value


def decode(content: object, where: str, *, http: int = 202) -> bytes:
    if not isinstance(content, str):
        raise Refused(http, 400, f"{where} must be a base64 string")
    try:
        return base64.b64decode(content.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError) as exc:
        raise Refused(http, 400, f"{where} is not valid base64: {exc}") from exc


def encoded_size(size: int) -> int:
    """Bytes of ``size`` bytes in base64."""
    return (size + 2) // 3 * 4


# --- files the broker describes itself -------------------------------------------------------


_TEXT_BYTES = frozenset(range(32, 127)) | {7, 8, 9, 10, 11, 12, 13, 27}


def guess_mimetype(data: bytes) -> tuple[str, str]:
    """(mimetype1, mimetype2) in the form ``file -b -i`` gives them to the original clients:
    the type keeps its ';', the charset has none."""
    if not data:
        return "inode/x-empty;", "charset=binary"
    if all(byte in _TEXT_BYTES for byte in data):
        return "text/plain;", "charset=us-ascii"
    if b"\x00" not in data:
        try:
            data.decode("utf-8")
        except UnicodeDecodeError:
            pass
        else:
            return "text/plain;", "charset=utf-8"
    return "application/octet-stream;", "charset=binary"


def file_entry(data: bytes, types: tuple[str, str] | None = None) -> dict[str, str]:
    mimetype1, mimetype2 = types if types is not None else guess_mimetype(data)
    return {"content": base64.b64encode(data).decode("ascii"), "mimetype1": mimetype1,
            "mimetype2": mimetype2}  # fmt: skip


def missing_entry(name: str, message: str | None = None) -> dict[str, str]:
    """What the original poller sends for a declared file that does not exist."""
    return {"content": "", "mimetype1": "Error",
            "mimetype2": message or f"出力指定ファイル({name})がありませんでした。"}  # fmt: skip


def std_file(log: bytes, reason: str | None = None) -> bytes:
    """計算標準出力.txt / 計算標準エラー出力.txt of a job a new agent ran: the log plus "\\n\\n",
    as the original poller wrote them; a job that did not complete gets its reason after it."""
    text = log + b"\n\n"
    if reason:
        text += f"mint-bridge: {reason}\n".encode()
    return text


def strip_std_file(data: bytes) -> bytes:
    """The log inside an original poller's 計算標準出力.txt (it appended "\\n\\n")."""
    return data[:-2] if data.endswith(b"\n\n") else data


# --- what a workflow client sees -------------------------------------------------------------


def held_by_poller(job: JobRecord, record: LegacyRecord | None) -> bool:
    """The original poller that took the job at calc-params holds its lease now (or held
    the last one, for a job that ended under it)."""
    return (
        record is not None
        and record.poller is not None
        and job.agent_id == record.poller
        and record.epoch == job.lease_epoch
    )


def progress(job: JobRecord, record: LegacyRecord | None) -> Progress:
    if job.state.is_final:
        return Progress.GOT_RETURN
    if job.state in (State.CREATED, State.QUEUED):
        return Progress.NOT_START
    if held_by_poller(job, record) and record is not None and record.progress:
        return Progress(record.progress)
    # A new agent's job: claimed means it is fetching the inputs.
    return Progress.SENDING_PARAMS if job.state is State.CLAIMED else Progress.RUNNING


def declared_results(job: JobRecord, record: LegacyRecord | None) -> list[str]:
    """The result names a workflow client gets back, in the order it declared them."""
    if record is not None:
        files = record.calc_info.get("result_files")
        if isinstance(files, dict):
            return list(files)
    return [r.name for r in job.listed_results()] + [STDOUT_NAME, STDERR_NAME]


def status(job: JobRecord, record: LegacyRecord | None) -> Status:
    if not job.state.is_final:
        if held_by_poller(job, record) and record is not None and record.status:
            return Status(record.status)
        return Status.NONE
    outcome = job.outcome or {}
    if outcome.get("state") != "completed":
        return Status.ABNORMAL
    # The original poller's rule: a run that left none of the declared files (besides the two
    # it writes itself) is abnormal whatever its exit code.
    listed = {r.name for r in job.listed_results()}
    wanted = [n for n in declared_results(job, record) if n not in LOG_FILES]
    return Status.COMPLETED if any(name in listed for name in wanted) else Status.ABNORMAL


# How long a job that ended abnormally reads "getting return" to a workflow client that has not
# yet been told "abnormal" (see ``reported_progress``); the original client asks every 10 s.
ABNORMAL_GRACE = 60.0


def reported_progress(
    job: JobRecord, record: LegacyRecord | None, *, abnormal_told: bool, now: float
) -> Progress:
    """The progress calc-progress answers.

    The workflow client asks calc-status, then calc-progress, and stops at "got return". A job
    that ends abnormally between the two calls (a new agent's job turns final at once) would
    read "none", then "got return": the client would never see "abnormal" and exit 0. So such a
    job reads "getting return" until a calc-status has answered "abnormal" for it (or, for a
    client that never asks calc-status, until ``ABNORMAL_GRACE`` has passed).
    """
    value = progress(job, record)
    if value is not Progress.GOT_RETURN or abnormal_told:
        return value
    if status(job, record) is not Status.ABNORMAL:
        return value
    ended = job.finished_at if job.finished_at is not None else now
    return Progress.GETTING_RETURN if now - ended < ABNORMAL_GRACE else value


def outcome_reason(job: JobRecord) -> str | None:
    """Why a job did not complete, for its 計算標準エラー出力.txt; None if it completed."""
    outcome = job.outcome or {}
    if outcome.get("state") == "completed":
        return None
    state = outcome.get("state") or job.state.value
    reason = outcome.get("reason") or ""
    return f"job {state}: {reason}" if reason else f"job {state}"


# --- jobs an original poller may take --------------------------------------------------------


def offer_problem(job: JobRecord, record: LegacyRecord | None, config: LegacyConfig) -> str | None:
    """Why this queued job must not go to an original poller (None: it may).

    The poller runs ``command`` with a shell, so only an exact whitelisted command is ever
    handed out; it ignores parameters, so a job of the new API with parameters waits for a new
    agent; and its files travel in one base64 body, so they must fit ``max_body``.
    """
    if not config.allows(job.spec.site, job.spec.command):
        return (
            f"command {job.spec.command!r:.80} is not whitelisted for original pollers of "
            f"site {job.spec.site} ([legacy.sites] in broker.toml)"
        )
    if record is None:
        if job.spec.params:
            return "the job has parameters, which an original poller would ignore"
        try:
            new_api_result_files(job)
        except Refused as exc:
            return exc.message
    size = sum(encoded_size(i.size) for i in job.inputs)
    if size > config.max_body:
        return (
            f"its inputs take {size} bytes as base64, more than the legacy limit of "
            f"{config.max_body} ([legacy] max_body); run it with a new agent"
        )
    return None


def new_api_result_files(job: JobRecord) -> list[str]:
    """The results a job of the new API asks an original poller for (metadata
    ``legacy_result_files``, colon-separated), then the two files the poller always writes."""
    raw = job.spec.metadata.get(RESULT_FILES_KEY, "")
    names = [name for name in raw.split(":") if name] if raw else []
    for name in names:
        problem = result_name_problem(name)
        if problem:
            raise Refused(409, 400, f"metadata {RESULT_FILES_KEY}: {problem}")
    return [*names, STDOUT_NAME, STDERR_NAME]


def calc_info_of(job: JobRecord, record: LegacyRecord | None) -> dict[str, Any]:
    """The stored calc-info (without contents) of a job: as registered, or made up for a job
    of the new API. ``parameters`` of a new-API job is empty: its typed parameters are not
    handed to original pollers (such jobs are not offered to them at all)."""
    if record is not None:
        return dict(record.calc_info)
    empty = {"content": "", "mimetype1": "", "mimetype2": ""}
    return {
        "command": job.spec.command,
        "remote-site": job.spec.site,
        "parameters": "",
        "parameter_files": {},  # types are guessed from the bytes when they are sent
        "result_files": {name: dict(empty) for name in new_api_result_files(job)},
    }
