"""``mint-bridge site audit verify``: check the audit log's hash chain across all its files.

Reports the first line where the chain breaks, and how: a line ``edited`` after it was written
(the next line's ``prev`` no longer matches its SHA-256, or its own ``seq`` changed), lines
``deleted`` (``seq`` jumps past numbers found nowhere else; a whole file deleted shows the
same way), lines ``reordered`` (a ``seq`` out of place that appears elsewhere), a file
``truncated`` (ends inside a line, or is empty) and a line that is ``not an entry`` at all.

What a chain cannot show by itself: a change to the newest line, or the newest lines cut off
at a line boundary, is seen once the next line is written after it (or against a copy of the
last line's hash kept elsewhere, such as the ``last`` this command prints).

Never: change a file. This only reads.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from bridge.site.audit_chain import GENESIS, line_hash, log_files, read_lines


@dataclass(frozen=True)
class Break:
    """Where the chain first breaks: the file, its line number (1-based), kind and detail."""

    path: str
    line: int
    kind: str
    detail: str

    def describe(self) -> str:
        return f"{self.path} line {self.line}: {self.kind}: {self.detail}"


@dataclass(frozen=True)
class Report:
    files: int
    lines: int
    last_seq: int
    last_hash: str
    broken: Break | None


@dataclass
class _State:
    prev: str = GENESIS
    seq: int = 1  # the next line's expected seq
    where: tuple[str, int] | None = None  # the previous line's file and number
    lines: int = 0


def verify(directory: str) -> Report:
    files = log_files(directory)
    seqs = set(_all_seqs(directory))
    state = _State()
    broken = _first_empty(files) or _walk(directory, state, seqs)
    return Report(len(files), state.lines, state.seq - 1, state.prev, broken)


def _walk(directory: str, state: _State, seqs: set[int]) -> Break | None:
    for path, number, raw in read_lines(directory):
        if not raw.endswith(b"\n"):
            return Break(path, number, "truncated", "the file ends inside this line (cut off)")
        entry = _entry(raw)
        if entry is None:
            return Break(path, number, "not an entry", "not a JSON audit line (edited or damaged)")
        problem = _check(state, entry, (path, number), seqs)
        if problem is not None:
            return problem
        state.prev, state.seq, state.where = line_hash(raw), entry["seq"] + 1, (path, number)
        state.lines += 1
    return None


def _check(
    state: _State, entry: dict[str, Any], where: tuple[str, int], seqs: set[int]
) -> Break | None:
    seq, expected = entry["seq"], state.seq
    if entry["prev"] == state.prev:
        if seq != expected:
            return Break(*where, "edited", f"its seq is {seq}, the chain says {expected}")
        return None
    if seq < expected or (seq > expected and expected in seqs):
        return Break(
            *where, "reordered",
            f"seq {seq} stands where seq {expected} belongs: lines were moved",
        )  # fmt: skip
    if seq > expected:
        missing = f"seq {expected}" if seq == expected + 1 else f"seq {expected}..{seq - 1}"
        detail = f"{seq - expected} line(s) before it are missing ({missing})"
        return Break(*where, "deleted", detail)
    if state.where is None:
        detail = "the first line does not start the chain: earlier lines are gone"
        return Break(*where, "deleted", detail)
    return Break(
        *state.where, "edited",
        "changed after it was written: the next line's prev no longer matches its SHA-256",
    )  # fmt: skip


def _entry(raw: bytes) -> dict[str, Any] | None:
    try:
        entry = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(entry, dict):
        return None
    seq, prev = entry.get("seq"), entry.get("prev")
    if not isinstance(seq, int) or isinstance(seq, bool) or not isinstance(prev, str):
        return None
    return entry


def _all_seqs(directory: str) -> Iterator[int]:
    for _path, _number, raw in read_lines(directory):
        entry = _entry(raw)
        if entry is not None:
            yield entry["seq"]


def _first_empty(files: list[str]) -> Break | None:
    for path in files:
        if os.path.getsize(path) == 0:
            return Break(path, 1, "truncated", "the file is empty (cut to nothing)")
    return None
