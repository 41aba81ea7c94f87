"""What the broker keeps about jobs, uploads, leases and tokens: the storage contract.

``Store`` is the small interface every backend implements (SQLite now; PostgreSQL could follow
and run the same test suite). A backend keeps metadata only: sizes, offsets, SHA-256 digests,
states, lease epochs and token hashes. File bytes live on disk (``broker.files``).

Every method that changes a job bumps its ``version`` and, once committed, reports the job (and
the site when a job became claimable) to the change listener, which wakes long polls.

A store never keeps a token, only its SHA-256; it never decides policy on names (the API checks
them before anything reaches the store); and it takes the current time as an argument, so tests
drive leases and TTLs without sleeping.
"""

from __future__ import annotations

import abc
import enum
import hashlib
import json
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from broker.errors import OffsetMismatch, StateConflict

ParamValue = str | int | float | bool

# Called after a commit with the job ids that changed and the sites that got claimable work.
ChangeListener = Callable[[Iterable[str], Iterable[str]], None]

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
    skipped: tuple[Mapping[str, str], ...] = ()
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

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None


class Store(abc.ABC):
    """The storage contract. Methods raise ``broker.errors`` types, never a driver's."""

    def __init__(self, listener: ChangeListener | None = None) -> None:
        self.listener = listener

    # --- jobs -------------------------------------------------------------------------

    @abc.abstractmethod
    def create_job(self, spec: NewJob, now: float) -> tuple[JobRecord, bool]:
        """Create the job, or return the existing one (``False``) for the same client and body;
        another client's id or a different body is a StateConflict. 0-byte inputs count as
        received."""

    @abc.abstractmethod
    def get_job(self, job_id: str) -> JobRecord | None: ...

    @abc.abstractmethod
    def list_jobs(
        self,
        *,
        client: str | None = None,
        site: str | None = None,
        state: State | None = None,
        limit: int = 500,
    ) -> list[JobRecord]:
        """Newest first; ``None`` filters match everything."""

    @abc.abstractmethod
    def set_input_received(
        self, job_id: str, name: str, expected: int, received: int, now: float
    ) -> JobRecord:
        """Record upload progress; ``expected`` must be the offset held (else OffsetMismatch).
        Only while the job is ``created`` (else InvalidState)."""

    @abc.abstractmethod
    def submit(self, job_id: str, now: float) -> JobRecord:
        """``created -> queued`` once every input is complete (else InputsIncomplete naming
        the first); any later state is returned unchanged (idempotent)."""

    @abc.abstractmethod
    def cancel(self, job_id: str, now: float) -> JobRecord:
        """Unclaimed (or agent-lost) jobs end at once; held ones get ``cancel_requested``;
        final ones are returned unchanged."""

    @abc.abstractmethod
    def ack(self, job_id: str, now: float) -> JobRecord:
        """Mark a final job's results deleted (the caller removes the bytes)."""

    # --- agents -------------------------------------------------------------------------

    @abc.abstractmethod
    def claim(self, site: str, agent_id: str, lease_ttl: float, now: float) -> Claim | None:
        """Atomically take the next job of ``site``: first a running job this ``agent_id``
        lost (reattach), else the oldest queued one. Each claim bumps the job's epoch."""

    @abc.abstractmethod
    def renew_lease(
        self, job_id: str, epoch: int, lease_ttl: float, now: float
    ) -> JobRecord:
        """Extend the lease (StaleEpoch when ``epoch`` is not the current holder's)."""

    @abc.abstractmethod
    def mark_running(
        self, job_id: str, epoch: int, native_id: str | None, lease_ttl: float, now: float
    ) -> JobRecord:
        """``claimed -> running`` (idempotent), renewing the lease."""

    @abc.abstractmethod
    def check_lease(self, job_id: str, epoch: int) -> JobRecord:
        """The job if ``epoch`` holds it now, else StaleEpoch/InvalidState."""

    @abc.abstractmethod
    def append_log(
        self, job_id: str, stream: str, epoch: int, expected: int, size: int, now: float
    ) -> JobRecord:
        """Move the log's acknowledged size from ``expected`` to ``size``."""

    @abc.abstractmethod
    def set_result_upload(
        self, job_id: str, epoch: int, result: ResultRecord, expected: int, now: float
    ) -> JobRecord:
        """Record a result upload's declared size/digest and bytes held (``result.received``);
        ``expected`` is the offset held before (else OffsetMismatch). A new declaration at
        offset 0 replaces an old one."""

    @abc.abstractmethod
    def complete(
        self,
        job_id: str,
        epoch: int,
        outcome: Mapping[str, Any],
        results: Sequence[ResultRecord],
        skipped: Sequence[Mapping[str, str]],
        now: float,
    ) -> JobRecord:
        """End the job; each listed result must be fully uploaded with that size and digest.
        Repeating it with the same epoch returns the job unchanged."""

    @abc.abstractmethod
    def expire(self, now: float, queue_ttl: float) -> ExpiryReport:
        """Apply time: expired leases requeue claimed jobs and mark running ones agent_lost;
        jobs queued (or left created) longer than ``queue_ttl`` expire with a reason."""

    @abc.abstractmethod
    def final_jobs_before(self, cutoff: float) -> list[str]:
        """Ids of jobs that ended before ``cutoff`` (for retention)."""

    @abc.abstractmethod
    def delete_job(self, job_id: str) -> None: ...

    @abc.abstractmethod
    def queue_stats(self) -> list[QueueStats]: ...

    @abc.abstractmethod
    def agents_seen(self) -> list[AgentSeen]: ...

    # --- the original API (broker.legacy) ---------------------------------------------------------

    @abc.abstractmethod
    def create_legacy_job(
        self, spec: NewJob, calc_info: Mapping[str, Any], now: float
    ) -> JobRecord:
        """Create a job (``created``) and its legacy record in one step; the id is new."""

    @abc.abstractmethod
    def get_legacy(self, job_id: str) -> LegacyRecord | None: ...

    @abc.abstractmethod
    def queued_job_ids(self, site: str, limit: int) -> list[str]:
        """The site's queued jobs, oldest first (the order the original handed them out)."""

    @abc.abstractmethod
    def legacy_claim(
        self,
        job_id: str,
        site: str,
        poller: str,
        calc_info: Mapping[str, Any],
        lease_ttl: float,
        now: float,
    ) -> JobRecord:
        """Lease this queued job of ``site`` to a legacy poller (``claimed``, a new epoch) and
        set its legacy progress to ``sending params``; a job of the new API gets its legacy
        record (``calc_info``) here. AlreadyClaimed if another poller or agent holds it."""

    @abc.abstractmethod
    def legacy_step(
        self,
        job_id: str,
        poller: str,
        *,
        expect: Collection[str],
        progress: str,
        lease_ttl: float,
        now: float,
        status: str | None = None,
        running: bool = False,
        result_types: Mapping[str, tuple[str, str]] | None = None,
    ) -> JobRecord:
        """Move the poller's job from a progress in ``expect`` to ``progress`` and renew its
        lease (``running``: ``claimed -> running``). StaleEpoch unless ``poller`` holds the
        lease it took at calc-params; InvalidState in another progress or a final state."""

    # --- tokens -------------------------------------------------------------------------

    @abc.abstractmethod
    def create_token(self, record: TokenRecord) -> None: ...

    @abc.abstractmethod
    def get_token(self, token_id: str) -> TokenRecord | None: ...

    @abc.abstractmethod
    def list_tokens(self) -> list[TokenRecord]: ...

    @abc.abstractmethod
    def revoke_token(self, token_id: str, now: float) -> bool:
        """True if the token existed and was not yet revoked."""

    @abc.abstractmethod
    def close(self) -> None: ...


# --- pure checks every backend (and the API, before reading a body) applies -----------------


def check_offset(held: int, expected: int, header: str = "Upload-Offset") -> None:
    """The client's offset must be what the broker holds; the answer says what that is."""
    if held != expected:
        raise OffsetMismatch(
            f"the broker holds {held} bytes, not {expected}; continue from {held}",
            headers={header: str(held)},
            extra={"size": held},
        )


def check_result_declaration(held: ResultRecord | None, new: ResultRecord, offset: int) -> None:
    """A result's size and digest are fixed once its upload began, unless it restarts at 0."""
    if held is None:
        check_offset(0, offset)
        return
    if (held.size, held.sha256) != (new.size, new.sha256):
        if offset != 0:
            raise StateConflict(
                f"result {new.name!r} was declared with Upload-Length {held.size} and another "
                "Upload-SHA256; send the new declaration from offset 0 to replace it",
                field="Upload-Length",
            )
        return
    check_offset(held.received, offset)


def human_duration(seconds: float) -> str:
    """``86400 -> '1d'``, ``90 -> '90s'``: for reasons a person reads."""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"
