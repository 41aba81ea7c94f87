"""Which bytes of a file a ``GET`` with ``Range`` gets, by RFC 9110 section 14.

A pure decision from the request's ``Range`` and ``If-Range`` values, the file's strong ETag
and its length; ``broker.transfers`` turns it into the answer:

- ``Full``: 200 with the whole file. A unit other than ``bytes`` is ignored (14.2: "MUST
  ignore"), as are a value that is no ranges-specifier at all, a ``Range`` whose ``If-Range``
  does not match the current ETag (13.1.5), and a set of more than ``MAX_PARTS`` pieces
  (14.2 allows ignoring what looks like a denial-of-service attempt).
- ``Partial``: 206 with one or more byte ranges, sorted and with overlapping or adjacent ranges
  coalesced (14.2 allows it); a suffix longer than the file means the whole file, a last
  position past the end means "to the end"; ranges that start past the end are dropped.
- ``Unsatisfiable``: 416 with ``Content-Range: bytes */<length>``, only when a ``bytes``
  range set is malformed (e.g. ``bytes=5-2``) or none of its ranges overlaps the file.

This module reads no file and no request; it only decides.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

# More pieces than this after coalescing are answered with the whole file: each piece costs a
# multipart header and a seek, and no client of ours asks for more than one.
MAX_PARTS = 16

# The longest Range value considered; anything longer is answered with the whole file.
MAX_HEADER = 1024

_INT_RANGE = re.compile(r"([0-9]+)-([0-9]*)")
_SUFFIX_RANGE = re.compile(r"-([0-9]+)")


@dataclass(frozen=True)
class Full:
    """Send the whole file (200)."""


@dataclass(frozen=True)
class Partial:
    """Send these ``(first, last)`` byte positions, inclusive, sorted and disjoint (206)."""

    spans: tuple[tuple[int, int], ...]


@dataclass(frozen=True)
class Unsatisfiable:
    """416 with ``Content-Range: bytes */<length>``."""


Plan = Full | Partial | Unsatisfiable


def plan(range_value: str | None, if_range: str | None, etag: str, length: int) -> Plan:
    """What to send for ``Range: range_value`` of a file with this strong ETag and length."""
    if range_value is None or len(range_value) > MAX_HEADER:
        return Full()
    unit, sep, ranges = range_value.strip().partition("=")
    if not sep or unit.strip().lower() != "bytes":
        return Full()  # another unit, or no ranges-specifier at all: ignored (14.2)
    if if_range is not None and not _if_range_holds(if_range, etag):
        return Full()  # the client's copy is another version: it needs the whole file
    specs = _parse_specs(ranges)
    if specs is None:
        return Unsatisfiable()
    spans = _coalesce(span for spec in specs if (span := _resolve(spec, length)) is not None)
    if not spans:
        return Unsatisfiable()
    if len(spans) > MAX_PARTS:
        return Full()
    return Partial(tuple(spans))


def _if_range_holds(if_range: str, etag: str) -> bool:
    # 13.1.5: only a strong entity tag can match; a date never does (we send no Last-Modified).
    value = if_range.strip()
    return not value.startswith("W/") and value == f'"{etag}"'


def _parse_specs(ranges: str) -> list[tuple[int | None, int | None]] | None:
    """``(first, last)`` per range-spec, ``(None, n)`` for a suffix; None if any is malformed."""
    specs: list[tuple[int | None, int | None]] = []
    for item in ranges.split(","):
        item = item.strip(" \t")
        if not item:
            continue  # 5.6.1: empty list elements are allowed and ignored
        if match := _INT_RANGE.fullmatch(item):
            first, last = int(match.group(1)), match.group(2)
            if last and int(last) < first:
                return None  # 14.1.1: an int-range whose last-pos is below its first-pos
            specs.append((first, int(last) if last else None))
        elif match := _SUFFIX_RANGE.fullmatch(item):
            specs.append((None, int(match.group(1))))
        else:
            return None
    return specs or None


def _resolve(spec: tuple[int | None, int | None], length: int) -> tuple[int, int] | None:
    """The positions a spec selects in a file of ``length`` bytes; None if none."""
    first, last = spec
    if first is None:
        suffix = last or 0
        return (max(0, length - suffix), length - 1) if suffix and length else None
    if first >= length:
        return None
    return first, length - 1 if last is None or last >= length else last


def _coalesce(spans: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    merged: list[tuple[int, int]] = []
    for first, last in sorted(spans):
        if merged and first <= merged[-1][1] + 1:
            merged[-1] = (merged[-1][0], max(merged[-1][1], last))
        else:
            merged.append((first, last))
    return merged
