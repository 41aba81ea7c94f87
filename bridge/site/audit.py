"""The site's tamper-evident audit log: every job event a security officer asks about.

Both entries (``site serve-ssh`` and the agent) record through ``JobAudit``; the format and the
chain are ``bridge.site.audit_chain``'s. Each line is a JSON object with these fields, in this
order (names are stable; a new field is only ever added):

    ts        UTC time, ``2026-12-03T11:52:07.123456Z``
    seq       1, 2, 3, ... across all files
    event     one of ``EVENTS``
    job       the job id (``null`` for a refusal before any job was named)
    ...       the event's own fields (below)
    prev      SHA-256 of the previous line

    job_received    via, peer, key | token_id, command, params, inputs [{name, size}]
    input_received  name, size, sha256
    program_started native_id, scheduler
    program_ended   state, exit_code, signal, reason
    result_sent     name, size, sha256, via, to, key | token_id
    result_withheld name, size, sha256, rule
    released        by
    rejected        by, reason
    refused         via, peer, key | token_id, attempted, reason

``via`` is ``ssh`` (``peer``/``to``: the client's address from ``SSH_CONNECTION``; ``key``: the
SHA-256 fingerprint of the key it logged in with, from ``SSH_USER_AUTH`` when sshd sets
``ExposeAuthInfo yes``, else ``null``), ``local`` (the site entry on pipes) or ``broker``
(``peer``/``to``: the broker URL; ``token_id``: the public id of the agent's token).

Writing a line is part of the step it records: a line that cannot be written raises
``AuditFailed`` and the step does not happen (a result is never sent unrecorded).

Never: record a token, a file's content or a site program's path; send a line anywhere.
"""

from __future__ import annotations

import contextlib
import logging
import re
from dataclasses import dataclass
from typing import Any

from bridge.core.errors import AuditFailed, BridgeError
from bridge.core.job import JobOutcome, JobRequest, ParamValue
from bridge.site.audit_chain import AuditWriter
from bridge.site.audit_once import RecordedEvents
from bridge.site.egress import Withheld
from schedulers import JobHandle, Scheduler

log = logging.getLogger(__name__)

EVENTS = (
    "job_received", "input_received", "program_started", "program_ended", "result_sent",
    "result_withheld", "released", "rejected", "refused",
)  # fmt: skip
# What a refusal records of the attempt: enough to see what was tried, bounded.
ATTEMPT_CHARS = 200
_TOKEN_ID = re.compile(r"mbt_([0-9a-f]{12})_")


@dataclass(frozen=True)
class Peer:
    """Who is on the other end: an SSH client, or the broker this agent pulls from."""

    via: str  # "ssh", "local" or "broker"
    address: str  # SSH: "ip:port"; broker: its URL
    key: str | None = None  # SSH: "SHA256:..." fingerprint, when sshd exposes it
    token_id: str | None = None  # broker: the public id of the agent's token

    def identity(self) -> dict[str, Any]:
        if self.via == "broker":
            return {"token_id": self.token_id}
        return {"key": self.key}


def token_id(token: str) -> str | None:
    """The public id of a broker token (``mbt_<id>_<secret>``); never the secret."""
    match = _TOKEN_ID.match(token.strip())
    return match.group(1) if match else None


class JobAudit:
    """The audit lines of one job, as its steps happen."""

    def __init__(
        self, writer: AuditWriter, job_id: str, peer: Peer, control_dir: str | None = None
    ) -> None:
        self.writer = writer
        self.job_id = job_id
        self.peer = peer
        # The job's control dir: its end and results are recorded once, however often a
        # re-attached job reaches them again.
        self.recorded = RecordedEvents(control_dir) if control_dir else None

    def _record(self, event: str, **fields: Any) -> None:
        record(self.writer, event, self.job_id, fields)

    def _record_once(self, key_parts: tuple[object, ...], event: str, **fields: Any) -> None:
        if self.recorded is None:
            self._record(event, **fields)
            return
        key = RecordedEvents.key(event, key_parts)
        if self.recorded.has(key):
            log.info("%s: %s %s already in the audit log", self.job_id, event, key_parts[0])
            return
        self._record(event, **fields)
        self.recorded.add(key)

    def received(self, request: JobRequest, values: dict[str, ParamValue]) -> None:
        self._record(
            "job_received", via=self.peer.via, peer=self.peer.address, **self.peer.identity(),
            command=request.command, params=values,
            inputs=[{"name": i.name, "size": i.size} for i in request.inputs],
        )  # fmt: skip

    def input_received(self, name: str, size: int, sha256: str) -> None:
        self._record("input_received", name=name, size=size, sha256=sha256)

    def program_started(self, native_id: str, scheduler: str) -> None:
        self._record("program_started", native_id=native_id, scheduler=scheduler)

    def program_ended(self, outcome: JobOutcome) -> None:
        # The site's own record: the reason unscrubbed (it never leaves the site).
        self._record_once(
            (outcome.state.value, outcome.exit_code, outcome.signal),
            "program_ended", state=outcome.state.value, exit_code=outcome.exit_code,
            signal=outcome.signal, reason=outcome.reason,
        )  # fmt: skip

    def result_sent(self, name: str, size: int, sha256: str) -> None:
        """Call before the file's bytes go: when this returns, the line is on disk."""
        self._record_once(
            (name, size, sha256), "result_sent", name=name, size=size, sha256=sha256,
            via=self.peer.via, to=self.peer.address, **self.peer.identity(),
        )  # fmt: skip

    def result_withheld(self, name: str, size: int | None, sha256: str | None, rule: str) -> None:
        """A result the site's egress policy kept back, and the rule that did."""
        self._record_once(
            (name, size, rule), "result_withheld", name=name, size=size, sha256=sha256, rule=rule
        )

    def released(self, by: str) -> None:
        """A held job's results were released by site operator ``by``."""
        self._record("released", by=by)

    def rejected(self, by: str, reason: str) -> None:
        """A held job's results were rejected by site operator ``by``: they never leave."""
        self._record("rejected", by=by, reason=reason)


def record_start(job_audit: JobAudit, scheduler: Scheduler, handle: JobHandle) -> None:
    """Record a job's start; one that cannot be recorded is undone (the job is cancelled),
    so no job runs that the audit log does not show."""
    try:
        job_audit.program_started(handle.native_id, scheduler.name)
    except AuditFailed:
        with contextlib.suppress(BridgeError):
            scheduler.cancel(handle)
        raise


def record(writer: AuditWriter, event: str, job: str | None, fields: dict[str, Any]) -> None:
    """Append one event line; raises ``AuditFailed`` (logged with its path) if it cannot."""
    if event not in EVENTS:
        raise ValueError(f"unknown audit event {event!r}")  # a programming error, not input
    try:
        writer.append({"event": event, "job": job, **fields})
    except AuditFailed as exc:
        log.error("%s: audit log %s: %s; the job stops", job or "-", exc.path, exc.message)
        raise AuditFailed(
            f"{exc.message}; the job stops here and nothing more leaves the site: ask the "
            "site admin to free space in or fix the audit dir ([site] audit_dir; details in "
            "the site log)"
        ) from exc


def refused(writer: AuditWriter, peer: Peer, attempted: str, reason: str,
            job: str | None = None) -> None:  # fmt: skip
    """A request the site entry refused (a shell, an unknown command, a bad frame). The
    refusal stands even if its line cannot be written, so a failure is only logged."""
    fields = {
        "via": peer.via, "peer": peer.address, **peer.identity(),
        "attempted": attempted[:ATTEMPT_CHARS], "reason": reason[: ATTEMPT_CHARS * 2],
    }  # fmt: skip
    # Already logged by record(); the request is refused either way.
    with contextlib.suppress(AuditFailed):
        record(writer, "refused", job, fields)


def record_withheld(job_audit: JobAudit, withheld: list[Withheld]) -> None:
    """One ``result_withheld`` line per result the egress policy kept back, with its size
    from ``lstat`` (and its SHA-256 when a content pass read it whole), before the manifest
    goes."""
    for item in withheld:
        job_audit.result_withheld(item.name, item.size, item.sha256, item.rule)
