"""The records a broker store keeps and returns: jobs, their uploads, leases, tokens and
console sessions.

Every record is a frozen dataclass: a backend builds new ones for every change and hands them
out freely, so no caller can change what the store holds. ``JobRecord.document`` is the job
document of the API.

This module holds data shapes only: it never reads or writes a backend and never checks a
state transition (``broker.store.rules`` does).
"""

from __future__ import annotations

import enum
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

ParamValue = str | int | float | bool

LOG_STREAMS = ("stdout", "stderr")


class State(enum.StrEnum):
    CREATED = "created"
    QUEUED = "queued"
    CLAIMED = "claimed"
    RUNNING = "running"
    FINISHED = "finished"
    CANCELLED = "cancelled"
    EXPIRED = "expired"

    @property
    def is_final(self) -> bool:
        return self in (State.FINISHED, State.CANCELLED, State.EXPIRED)

    @property
    def is_held(self) -> bool:
        """Held by an agent under a lease."""
        return self in (State.CLAIMED, State.RUNNING)


class Scope(enum.StrEnum):
    CLIENT = "client"
    SITE = "site"
    ADMIN = "admin"
    # Read-only: what the broker is doing (/metrics), never a job's inputs or a change.
    OPERATOR = "operator"


@dataclass(frozen=True)
class InputSpec:
    name: str
    size: int
    sha256: str
    mode: int = 0o644


@dataclass(frozen=True)
class NewJob:
    """A job as a client submits it to the store; ``fingerprint`` makes create idempotent."""

    job_id: str
    client: str
    site: str
    command: str
    params: Mapping[str, ParamValue] = field(default_factory=dict)
    inputs: tuple[InputSpec, ...] = ()
    metadata: Mapping[str, str] = field(default_factory=dict)
    walltime_limit: float | None = None

    def fingerprint(self) -> str:
        canonical = {
            "site": self.site,
            "command": self.command,
            "params": dict(self.params),
            "inputs": [[i.name, i.size, i.sha256, i.mode] for i in self.inputs],
            "metadata": dict(self.metadata),
            "walltime_limit": self.walltime_limit,
        }
        text = json.dumps(canonical, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True)
class InputRecord:
    name: str
    size: int
    sha256: str
    mode: int
    received: int

    @property
    def complete(self) -> bool:
        # ``received`` only reaches ``size`` once the SHA-256 matched (see the upload code).
        return self.received == self.size


@dataclass(frozen=True)
class ResultRecord:
    """A result upload; ``listed`` once the agent's ``complete`` named it."""

    name: str
    size: int
    sha256: str
    received: int = 0
    mode: int = 0o644
    listed: bool = False

    @property
    def complete(self) -> bool:
        return self.received == self.size


@dataclass(frozen=True)
class JobRecord:
    spec: NewJob
    state: State
    version: int
    inputs: tuple[InputRecord, ...]
    results: tuple[ResultRecord, ...] = ()
    outcome: Mapping[str, Any] | None = None
    skipped: tuple[Mapping[str, Any], ...] = ()
    logs: Mapping[str, int] = field(default_factory=lambda: dict.fromkeys(LOG_STREAMS, 0))
    cancel_requested: bool = False
    agent_lost: bool = False
    agent_id: str | None = None
    native_id: str | None = None
    lease_epoch: int = 0
    lease_expires: float | None = None
    created_at: float = 0.0
    updated_at: float = 0.0
    queued_at: float | None = None
    finished_at: float | None = None
    acked: bool = False
    results_deleted: bool = False

    @property
    def job_id(self) -> str:
        return self.spec.job_id

    def input(self, name: str) -> InputRecord | None:
        return next((i for i in self.inputs if i.name == name), None)

    def result(self, name: str) -> ResultRecord | None:
        return next((r for r in self.results if r.name == name), None)

    def listed_results(self) -> list[ResultRecord]:
        return [r for r in self.results if r.listed]

    def document(self) -> dict[str, Any]:
        """The job document of the API (docs/broker-api.md, "Job document")."""
        spec = self.spec
        return {
            "job_id": spec.job_id,
            "site": spec.site,
            "client": spec.client,
            "command": spec.command,
            "params": dict(spec.params),
            "metadata": dict(spec.metadata),
            "walltime_limit": spec.walltime_limit,
            "inputs": [_input_doc(i) for i in self.inputs],
            "state": self.state.value,
            "version": self.version,
            "outcome": dict(self.outcome) if self.outcome is not None else None,
            "logs": dict(self.logs),
            "results": [_result_doc(r) for r in self.listed_results()],
            "results_available": self.state.is_final and not self.results_deleted,
            "skipped": [dict(s) for s in self.skipped],
            "cancel_requested": self.cancel_requested,
            "agent_lost": self.agent_lost,
            "agent_id": self.agent_id,
            "native_id": self.native_id,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
        }


def _input_doc(record: InputRecord) -> dict[str, Any]:
    return {
        "name": record.name,
        "size": record.size,
        "sha256": record.sha256,
        "mode": record.mode,
        "received": record.received,
    }


def _result_doc(record: ResultRecord) -> dict[str, Any]:
    return {"name": record.name, "size": record.size, "sha256": record.sha256, "mode": record.mode}


@dataclass(frozen=True)
class LegacyRecord:
    """What the original API (``broker.legacy``) keeps about a job besides the job itself.

    ``calc_info`` is the job as the original workflow client registered it, without file
    contents (those are the job's inputs). ``progress``, ``poller`` and ``epoch`` describe the
    original poller's steps while it holds the job's lease; ``status`` is what its calc-end
    said; ``result_types`` the mimetype strings it sent with each result, kept unchanged.
    """

    job_id: str
    calc_info: Mapping[str, Any]
    progress: str | None = None
    status: str | None = None
    poller: str | None = None
    epoch: int = 0
    result_types: Mapping[str, tuple[str, str]] = field(default_factory=dict)


# Per site that got claimable work in one write: the commands of those jobs, or None when any
# claim of the site may be concerned (a running job whose agent must re-attach). It tells the
# notifier which waiting claim to wake: one that takes those commands.
Claimable = dict[str, set[str] | None]


def note_claimable(sites: Claimable, site: str, command: str | None) -> None:
    """Record that ``site`` has claimable work of ``command`` (None: of any claim)."""
    if command is None:
        sites[site] = None
        return
    known = sites.setdefault(site, set())
    if known is not None:
        known.add(command)


@dataclass(frozen=True)
class Claim:
    job: JobRecord
    epoch: int
    lease_expires: float
    reattach: bool


@dataclass(frozen=True)
class ExpiryReport:
    requeued: tuple[str, ...] = ()
    agent_lost: tuple[str, ...] = ()
    expired: tuple[str, ...] = ()
    cancelled: tuple[str, ...] = ()


@dataclass(frozen=True)
class QueueStats:
    site: str
    queued: int
    oldest_queued_at: float | None
    claimed: int
    running: int


@dataclass(frozen=True)
class AgentSeen:
    site: str
    agent_id: str
    last_seen: float


@dataclass(frozen=True)
class TokenRecord:
    token_id: str
    sha256: str
    scope: Scope
    subject: str
    created_at: float
    revoked_at: float | None = None
    expires_at: float | None = None  # None: never expires
    # When a request last presented it (to the minute: see ``broker.auth.LAST_USED_STEP``).
    last_used: float | None = None

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None

    def expired(self, now: float) -> bool:
        return self.expires_at is not None and now >= self.expires_at

@dataclass(frozen=True)
class SessionRecord:
    """A web console log-in session, as every broker instance on the store sees it.

    ``session_hash`` is the SHA-256 of the session id the browser holds (the id itself is
    never stored); ``token_id`` is the token it was opened with, so revoking or expiring that
    token ends it; ``csrf`` is the session's random CSRF secret (``broker.console.sessions``
    says why it is kept here). ``expires_at`` is the end of its lifetime, whatever its use."""

    session_hash: str
    token_id: str
    scope: Scope
    csrf: str
    created_at: float
    used_at: float
    expires_at: float

    def ended(self, now: float, idle: float) -> bool:
        """Past its lifetime, or unused for ``idle`` seconds."""
        return now >= self.expires_at or now - self.used_at >= idle


@dataclass(frozen=True)
class JobEvent:
    """One entry of a job's timeline: the state it entered (or a note, such as a cancel
    request, in the state it kept), when, and the agent holding it then."""

    at: float
    state: State
    agent_id: str | None = None
    note: str | None = None


@dataclass(frozen=True)
class JobQuery:
    """The filters of a page of jobs (``Store.page_jobs``); ``None`` matches everything.

    ``since``/``until`` bound ``created_at`` (since inclusive, until exclusive); ``before`` is
    the keyset cursor: the (created_at, job_id) of the last job of the previous page."""

    site: str | None = None
    state: State | None = None
    client: str | None = None
    command: str | None = None
    since: float | None = None
    until: float | None = None
    before: tuple[float, str] | None = None

