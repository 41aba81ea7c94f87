"""The original API's reply shapes and words, without HTTP: what ``broker.legacy`` answers.

- Replies are ``{"errors": [{"code": ..., "message": ...}]}``, successes included; only the
  JSON integer 200 means OK (``ok``/``refusal``). "No job yet" is the string code ``"0300"``.
- Status and progress travel as ``status:<value>`` messages; the workflow client splits them
  on ``:``, so no value here contains one.
- A file travels as ``{"content": base64, "mimetype1", "mimetype2"}`` with the two strings
  ``file -b -i`` gives; the two log files an original poller writes have fixed names.

Never: let a refusal carry code 200, or put a ':' into a status value.
"""

from __future__ import annotations

import base64
import enum
from typing import Any

OK = 200
NO_JOB = "0300"  # the original's "no job for you", a string on purpose: it is not OK
STDOUT_NAME = "計算標準出力.txt"
STDERR_NAME = "計算標準エラー出力.txt"
LOG_FILES = {STDOUT_NAME: "stdout", STDERR_NAME: "stderr"}


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
