"""Plain-text tables and times for the operator commands (``jobs list``, ``broker sites``).

Columns are padded to their widest cell; the last column is never padded, so a long reason
does not push trailing spaces. This module only formats: it never reads files or stores.
"""

from __future__ import annotations

import time
from collections.abc import Sequence


def render_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """The table as lines joined by newlines (no trailing newline)."""
    widths = [len(h) for h in headers]
    for row in rows:
        for index, cell in enumerate(row):
            widths[index] = max(widths[index], len(cell))
    lines = []
    for row in [list(headers), *[list(r) for r in rows]]:
        cells = [cell.ljust(widths[i]) for i, cell in enumerate(row[:-1])]
        lines.append("  ".join([*cells, row[-1]]).rstrip())
    return "\n".join(lines)


def local_time(timestamp: float | None) -> str:
    """``2026-12-02 18:40:07`` in local time, ``-`` for none."""
    if timestamp is None:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(timestamp))


def seconds_text(seconds: float | None) -> str:
    """``45 s``, ``12 min``, ``3.5 h``, ``2.0 d``; ``-`` for none."""
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"
