"""Health results for people (a compact table) and for programs (stable JSON, exit codes).

Exit codes follow the monitoring plugin convention, so Nagios, Icinga or Zabbix can run
``mint-bridge health`` as it is: 0 ok, 1 warn, 2 fail, 3 unknown (including a bad command
line). The JSON document (``SCHEMA``) only ever gains fields; names and meanings stay.
"""

from __future__ import annotations

import datetime
import json
from collections import Counter
from typing import Any

from bridge import __version__
from node_setup.health.result import Check, Status, Value, worst

SCHEMA = "mint-bridge.health/1"
_MAX_VALUE = 60  # table column; JSON always has the full value


def exit_code(checks: list[Check]) -> int:
    return int(worst(checks))


def to_json(checks: list[Check], timeout: float) -> dict[str, Any]:
    overall = worst(checks)
    targets: dict[str, str] = {}
    for target in dict.fromkeys(c.target for c in checks):
        targets[target] = worst([c for c in checks if c.target == target]).label
    return {
        "schema": SCHEMA,
        "mint_bridge_version": __version__,
        "status": overall.label,
        "exit_code": int(overall),
        "checked_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "timeout_s": timeout,
        "targets": targets,
        "checks": [
            {
                "target": c.target,
                "check": c.name,
                "status": c.status.label,
                "value": c.value,
                "unit": c.unit,
                "message": c.message,
                "fix": c.fix,
            }
            for c in checks
        ],
    }


def render_json(checks: list[Check], timeout: float) -> str:
    return json.dumps(to_json(checks, timeout), indent=2, ensure_ascii=False)


def render_table(checks: list[Check]) -> str:
    rows = [("STATUS", "TARGET", "CHECK", "VALUE")]
    details: dict[int, list[str]] = {}
    for check in checks:
        rows.append((_label(check.status), check.target, check.name, _value(check)))
        if check.status is not Status.OK:
            lines = [f"why: {check.message}"] if check.message else []
            details[len(rows) - 1] = lines + ([f"fix: {check.fix}"] if check.fix else [])
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    out: list[str] = []
    for index, row in enumerate(rows):
        cells = [cell.ljust(width) for cell, width in zip(row[:3], widths, strict=True)]
        out.append("  ".join([*cells, row[3]]).rstrip())
        out.extend(" " * (widths[0] + 2) + line for line in details.get(index, []))
    out.append(summary(checks))
    return "\n".join(out)


def summary(checks: list[Check]) -> str:
    overall = worst(checks)
    counts = Counter(c.status for c in checks)
    parts = ", ".join(f"{counts[s]} {s.label}" for s in Status if counts[s])
    return f"overall: {_label(overall)} (exit {int(overall)}); {len(checks)} checks: {parts or '-'}"


def _label(status: Status) -> str:
    # Upper case draws the eye to what needs attention in a long table.
    return status.label if status is Status.OK else status.label.upper()


def _value(check: Check) -> str:
    text = _format(check.value, check.unit)
    return text if len(text) <= _MAX_VALUE else text[: _MAX_VALUE - 3] + "..."


def _format(value: Value, unit: str) -> str:
    if value is None:
        return "-"
    if unit == "B" and isinstance(value, int):
        return _size(value)
    return f"{value} {unit}".strip()


def _size(size: int) -> str:
    for unit, scale in (("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if size >= scale:
            return f"{size / scale:.1f} {unit}"
    return f"{size} B"
