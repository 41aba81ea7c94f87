"""Which of a job's once-only audit events are already on record, kept in its control dir.

A re-attached job (a dropped SSH connection, a restarted site entry or agent) reaches its end
and its results again; its ``program_ended``, ``result_sent`` and ``result_withheld`` lines are
written the first time only. Each recorded event's key is appended to ``audited`` in the
job's control dir right after its audit line is on disk; a crash between the two writes can
only repeat a line, never lose one.

Never: skip a line whose key differs (a result that changed is recorded again), or record
anything but keys here (the audit log is the record).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence

from bridge.core.workdir_files import AUDITED_FILE


class RecordedEvents:
    """The keys of the once-only events of one job already in the audit log."""

    def __init__(self, control_dir: str) -> None:
        self.path = os.path.join(control_dir, AUDITED_FILE)
        self._keys: set[str] | None = None

    @staticmethod
    def key(event: str, parts: Sequence[object]) -> str:
        return json.dumps([event, *parts], separators=(",", ":"))

    def has(self, key: str) -> bool:
        return key in self._load()

    def add(self, key: str) -> None:
        self._load().add(key)
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except FileNotFoundError:
            return  # no control dir (a probe already cleaned up): nothing can re-attach
        try:
            os.write(fd, key.encode() + b"\n")
        finally:
            os.close(fd)

    def _load(self) -> set[str]:
        if self._keys is None:
            try:
                with open(self.path, encoding="utf-8") as handle:
                    self._keys = {line.rstrip("\n") for line in handle if line.endswith("\n")}
            except FileNotFoundError:
                self._keys = set()
        return self._keys
