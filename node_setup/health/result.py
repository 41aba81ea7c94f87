"""What a health check reports: a status, the measured value, and a one-line fix.

Statuses map to the monitoring plugin convention (Nagios, Icinga, Zabbix): ok 0, warn 1,
fail 2, unknown 3. ``unknown`` marks a check that could not be evaluated (an earlier step
failed, or the checker itself hit an error). The overall status is the most severe one, in
the order ok < warn < unknown < fail, as Icinga sorts states: a known failure outranks an
unknown, and an unknown outranks a mere warning because it may hide a failure.
"""

from __future__ import annotations

import enum
import threading
from dataclasses import dataclass


class Status(enum.IntEnum):
    """Each value is the exit code of ``mint-bridge health`` when it is the overall status."""

    OK = 0
    WARN = 1
    FAIL = 2
    UNKNOWN = 3

    @property
    def label(self) -> str:
        return self.name.lower()


_SEVERITY = {Status.OK: 0, Status.WARN: 1, Status.UNKNOWN: 2, Status.FAIL: 3}

Value = str | int | float | None


@dataclass(frozen=True)
class Check:
    target: str  # a site name, "bridge", "broker" or "site"
    name: str  # dotted, stable: "ssh.tcp", "site.disk_free", "broker.cert_expiry"
    status: Status
    value: Value = None  # what was measured, in ``unit``
    unit: str = ""
    message: str = ""  # what was seen, one line
    fix: str = ""  # what to do, one line; empty when ok


def worst(checks: list[Check]) -> Status:
    if not checks:
        return Status.UNKNOWN  # nothing was checked: never report that as fine
    return max((c.status for c in checks), key=_SEVERITY.__getitem__)


class Probe:
    """Collects the checks of one target; the step in progress is named if it times out.

    A probe runs in its own thread; the runner reads ``snapshot()`` when the thread ends or
    when the deadline passes, whichever comes first.
    """

    def __init__(self, target: str) -> None:
        self.target = target
        self._checks: list[Check] = []
        self._lock = threading.Lock()
        self.step = "start"
        self.step_fix = ""

    def start(self, step: str, fix: str = "") -> None:
        """Name the check now running (and the fix to give if it never answers)."""
        self.step = step
        self.step_fix = fix

    def add(
        self,
        name: str,
        status: Status,
        value: Value = None,
        unit: str = "",
        message: str = "",
        fix: str = "",
    ) -> Check:
        check = Check(self.target, name, status, value, unit, message, fix if status else "")
        with self._lock:
            self._checks.append(check)
        return check

    def ok(self, name: str, value: Value = None, unit: str = "", message: str = "") -> Check:
        return self.add(name, Status.OK, value, unit, message)

    def warn(self, name: str, value: Value, unit: str, message: str, fix: str) -> Check:
        return self.add(name, Status.WARN, value, unit, message, fix)

    def fail(self, name: str, value: Value, unit: str, message: str, fix: str) -> Check:
        return self.add(name, Status.FAIL, value, unit, message, fix)

    def unknown(self, name: str, message: str, fix: str = "") -> Check:
        return self.add(name, Status.UNKNOWN, None, "", message, fix)

    def snapshot(self) -> list[Check]:
        with self._lock:
            return list(self._checks)
