"""The one JSON decoder for every document another party wrote (request bodies, frames, answers).

Python's ``json`` accepts things no peer of ours may send: nesting deep enough to raise
RecursionError, duplicate keys (the last silently wins), lone UTF-16 surrogates (which later
become non-UTF-8 file names or argv bytes), integers of any size (which overflow SQLite and
PostgreSQL) and NaN/Infinity. ``loads`` refuses each with ``StrictJsonError`` naming the rule and,
where it is known, the path (``inputs[2].name``). The depth is measured by a scan that never
recurses, before the parser runs, so a 100k-deep document costs one linear pass.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any, NoReturn

from bridge.core.errors import ProtocolError

MAX_DEPTH = 32
MAX_DOCUMENT = 16 * 1024 * 1024
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1

# A JSON string, unrolled so the regex engine never backtracks over long strings.
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_BRACKET = re.compile(rb"[\[\]{}]")
_SURROGATE = re.compile("[\ud800-\udfff]")


class StrictJsonError(ProtocolError):
    """A JSON document breaks one of the rules above; ``field`` is the path, if known."""


def loads(data: bytes | str, *, max_depth: int = MAX_DEPTH, max_size: int = MAX_DOCUMENT,
          what: str = "the document") -> Any:  # fmt: skip
    """The value ``data`` holds, or StrictJsonError saying which rule it breaks."""
    raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else bytes(data)
    if len(raw) > max_size:
        raise StrictJsonError(f"{what} is {len(raw)} bytes; at most {max_size} are accepted")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise StrictJsonError(f"{what} is not UTF-8 (byte {exc.start}): send UTF-8") from exc
    _check_depth(raw, max_depth, what)
    try:
        value = json.loads(
            text,
            object_pairs_hook=_unique_object,
            parse_int=_int64,
            parse_float=_finite_float,
            parse_constant=_reject_constant,
        )
    except _Refused as exc:
        raise StrictJsonError(f"{what}: {exc}") from exc
    except (ValueError, RecursionError) as exc:  # RecursionError only if the scan were wrong
        raise StrictJsonError(f"{what} is not valid JSON: {exc}") from exc
    _check_strings(value, what)
    return value


def loads_object(data: bytes | str, **options: Any) -> dict[str, Any]:
    """``loads`` for documents that must be a JSON object."""
    value = loads(data, **options)
    if not isinstance(value, dict):
        what = options.get("what", "the document")
        raise StrictJsonError(f"{what} must be a JSON object, not {type(value).__name__}")
    return value


class _Refused(ValueError):
    """Raised from the parser's hooks; turned into StrictJsonError by ``loads``."""


def _check_depth(raw: bytes, max_depth: int, what: str) -> None:
    # Strings go first so brackets inside them do not count; the rest is a flat counter.
    depth = 0
    for match in _BRACKET.finditer(_STRING.sub(b'""', raw)):
        depth += 1 if match.group() in (b"[", b"{") else -1
        if depth > max_depth:
            raise StrictJsonError(
                f"{what} nests arrays/objects more than {max_depth} deep: flatten it"
            )


def _unique_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise _Refused(f"duplicate key {_show(key)}: each key may appear once per object")
        result[key] = value
    return result


def _int64(digits: str) -> int:
    # Length first: int() of thousands of digits is refused by Python itself, slowly.
    if len(digits) > 20 or not INT64_MIN <= int(digits) <= INT64_MAX:
        raise _Refused(f"integer {digits[:24]}{'...' if len(digits) > 24 else ''} "
                       "is outside signed 64 bits")  # fmt: skip
    return int(digits)


def _finite_float(digits: str) -> float:
    value = float(digits)
    if not math.isfinite(value):
        raise _Refused(f"number {digits[:24]} is too large for a 64-bit float")
    return value


def _reject_constant(name: str) -> NoReturn:
    raise _Refused(f"{name} is not a JSON number")


def _check_strings(value: Any, what: str) -> None:
    """Every key and string must be valid Unicode scalar values (no lone surrogates)."""
    pending: list[tuple[str, Any]] = [("", value)]
    while pending:  # iterative: depth is bounded already, but no recursion is simpler to trust
        path, item = pending.pop()
        if isinstance(item, str):
            _check_text(item, path, what)
        elif isinstance(item, dict):
            for key, child in item.items():
                child_path = f"{path}.{key}" if path else key
                _check_text(key, child_path, what)
                pending.append((child_path, child))
        elif isinstance(item, list):
            pending.extend((f"{path}[{index}]", child) for index, child in enumerate(item))


def _check_text(text: str, path: str, what: str) -> None:
    if _SURROGATE.search(text):
        where = _show(path) if path else what
        raise StrictJsonError(
            f"{where} holds a lone UTF-16 surrogate, which is no Unicode character: "
            "send valid UTF-8 text",
            field=path or None,
        )


def _show(text: str) -> str:
    return ascii(text[:80])
