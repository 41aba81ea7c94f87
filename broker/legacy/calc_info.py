"""``calc-info`` as the original workflow client sends it (add-calcinfo), checked, and the
base64 its files travel in.

Input names are plain file names (no ``/``), result names relative paths that stay in the job
and use no shell syntax, file contents valid base64; mimetype strings are kept exactly as sent.
A refusal of add-calcinfo is HTTP 202, as the original answered it.

Never: change a mimetype string, or treat ``parameters`` as anything but an opaque string (it
is echoed to original pollers, which ignore it, and never given to a program).
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from bridge.core import defaults as bridge_defaults
from bridge.core.errors import BridgeError
from bridge.core.paths import check_name, check_relative_path
from broker.legacy.replies import Refused

MAX_MIMETYPE = 4096
MAX_RESULT_FILES = 10_000
# Characters a result name may have besides letters of any script: the original poller puts
# each existing result name into a shell command line unquoted (``file -b -i <name>``), so
# nothing a shell would read as syntax (space, ';', '|', '$', '`', quotes, globs, '~') passes.
_SHELL_INERT_ASCII = re.compile(r"[A-Za-z0-9._+,@/-]*")


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
