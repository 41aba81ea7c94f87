"""The one-line JSON summary ``mint-bridge run --json`` prints on stdout when it ends.

Stable field names, for scripts around MInt modules::

    {"job_id": ..., "site": ..., "command": ..., "exit_code": 0, "state": "finished",
     "reason": ..., "inputs": [{"name", "size", "sha256"}],
     "results": [{"name", "size", "sha256"}], "skipped": [{"name", "reason"}],
     "seconds": {"total": ..., "inputs": ..., "results": ...}}

The solver's own stdout streams before it, so the summary is always the last line.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from bridge.client.request import RunResult
from bridge.core.errors import BridgeError
from bridge.core.progress import Transfer


@dataclass
class Summary:
    """Every file that went through (any size): a progress watcher."""

    inputs: list[dict[str, Any]] = field(default_factory=list)
    results: list[dict[str, Any]] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=lambda: {"in": 0.0, "out": 0.0})

    def started(self, transfer: Transfer) -> None:
        pass

    def advanced(self, transfer: Transfer) -> None:
        pass

    def ended(self, transfer: Transfer) -> None:
        self.seconds[transfer.direction] += transfer.seconds
        if not transfer.ok:
            return
        entry = {"name": transfer.name, "size": transfer.size, "sha256": transfer.sha256}
        files = self.inputs if transfer.direction == "in" else self.results
        # A retried transfer (reconnect, resume) counts once, as its last complete attempt.
        files[:] = [f for f in files if f["name"] != transfer.name]
        files.append(entry)


def print_result(
    summary: Summary, job_id: str, site: str, command: str, result: RunResult, started: float
) -> None:
    received = set(result.results)
    _print({
        **_head(job_id, site, command, result.exit_code, started, summary),
        "state": result.outcome.state.value,
        "reason": result.outcome.reason,
        "results": [f for f in summary.results if f["name"] in received],
        "skipped": [{"name": str(s.get("name")), "reason": str(s.get("reason"))}
                    for s in result.skipped],
    })  # fmt: skip


def print_failure(
    summary: Summary, job_id: str, site: str, command: str, exc: BridgeError, started: float
) -> None:
    _print({
        **_head(job_id, site, command, int(exc.exit_code), started, summary),
        "state": "error",
        "reason": str(exc),
        "error": type(exc).__name__,
        "results": summary.results,
        "skipped": [],
    })  # fmt: skip


def _head(
    job_id: str, site: str, command: str, code: int, started: float, summary: Summary
) -> dict[str, Any]:
    return {
        "job_id": job_id,
        "site": site,
        "command": command,
        "exit_code": code,
        "inputs": summary.inputs,
        "seconds": {
            "total": round(time.monotonic() - started, 3),
            "inputs": round(summary.seconds["in"], 3),
            "results": round(summary.seconds["out"], 3),
        },
    }


def _print(document: dict[str, Any]) -> None:
    sys.stdout.flush()  # after the solver's own output
    sys.stdout.write(json.dumps(document, ensure_ascii=False, sort_keys=True) + "\n")
    sys.stdout.flush()


__all__ = ["Summary", "print_failure", "print_result"]
