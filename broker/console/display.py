"""How the console writes times, durations and sizes; registered as Jinja filters.

Every time is UTC, written the same way on every page, so an operator can compare a page with
a log line. Pure functions of their arguments.
"""

from __future__ import annotations

import datetime

from flask import Flask

_UNITS = ("B", "KiB", "MiB", "GiB", "TiB")


def utc(moment: float | None) -> str:
    if moment is None:
        return "-"
    return datetime.datetime.fromtimestamp(moment, datetime.UTC).strftime("%Y-%m-%d %H:%M:%S")


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    whole = round(seconds)
    if whole < 60:
        return f"{seconds:.1f} s" if seconds < 10 else f"{whole} s"
    minutes, secs = divmod(whole, 60)
    if minutes < 60:
        return f"{minutes} min {secs} s"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h {minutes} min"
    return f"{hours // 24} d {hours % 24} h"


def size(count: int | None) -> str:
    if count is None:
        return "-"
    value = float(count)
    for unit in _UNITS:
        if value < 1024 or unit == _UNITS[-1]:
            return f"{count} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{count} B"  # not reached: the loop returns at the last unit


def init_app(app: Flask) -> None:
    app.add_template_filter(utc, "utc")
    app.add_template_filter(duration, "duration")
    app.add_template_filter(size, "size")
