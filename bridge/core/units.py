"""Parsing of human-written durations and sizes in config files ("90s", "2h", "7d", "10GiB")."""

from __future__ import annotations

import math
import re

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d|w)?\s*$")
_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400, None: 1}

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(B|KB|KiB|MB|MiB|GB|GiB|TB|TiB)?\s*$", re.IGNORECASE)
_SIZE_UNITS = {
    "b": 1,
    "kb": 1000,
    "kib": 1 << 10,
    "mb": 1000**2,
    "mib": 1 << 20,
    "gb": 1000**3,
    "gib": 1 << 30,
    "tb": 1000**4,
    "tib": 1 << 40,
}


def parse_duration(value: object) -> float:
    """Seconds from a number or a string like ``"90s"``, ``"30m"``, ``"2h"``, ``"7d"``.

    ``HH:MM:SS`` (the form PBS and Slurm use for walltime) is accepted too.
    Raises ValueError with the accepted forms in the message.
    """
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 90, '30m', '2h', '7d' or '01:30:00'")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError("a duration cannot be negative")
        if not math.isfinite(value):  # TOML has inf and nan; a NaN limit would never trigger
            raise ValueError("a duration must be a finite number")
        return float(value)
    text = str(value)
    if re.fullmatch(r"\d+:\d{1,2}:\d{1,2}", text.strip()):
        hours, minutes, seconds = (int(part) for part in text.strip().split(":"))
        if minutes >= 60 or seconds >= 60:
            raise ValueError(f"{text!r}: minutes and seconds must be below 60")
        return float(hours * 3600 + minutes * 60 + seconds)
    match = _DURATION.match(text)
    if not match:
        raise ValueError(
            f"{text!r} is not a duration; use seconds or a number with s/m/h/d/w, e.g. '30m'"
        )
    return float(match.group(1)) * _DURATION_UNITS[match.group(2)]


def parse_size(value: object) -> int:
    """Bytes from a number or a string like ``"512MiB"`` or ``"10GB"``."""
    if isinstance(value, bool):
        raise ValueError("expected a size such as 1048576 or '10GiB'")
    if isinstance(value, int):
        if value < 0:
            raise ValueError("a size cannot be negative")
        return value
    match = _SIZE.match(str(value))
    if not match:
        raise ValueError(f"{value!r} is not a size; use bytes or e.g. '512MiB', '10GB'")
    unit = (match.group(2) or "b").lower()
    return int(float(match.group(1)) * _SIZE_UNITS[unit])
