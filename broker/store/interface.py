"""``Store``: the storage contract every backend of the broker implements.

Backends: SQLite (``broker.store.sqlite``, the embedded default), PostgreSQL
(``broker.store.postgres``, for brokers that outgrow one file) and memory
(``broker.store.memory``, the contract's reference for tests); the same test suite
(tests/unit/broker/test_store.py) runs over every one. A backend keeps
metadata only: sizes, offsets, SHA-256 digests, states, lease epochs and token hashes. File
bytes live on disk (``broker.files``).

Every method that changes a job bumps its ``version`` and, once committed, reports the job (and
the site when a job became claimable) to the change listener, which wakes long polls. A write
that fails changes nothing and reports nothing.

A store never keeps a token, only its SHA-256; it never decides policy on names (the API checks
them before anything reaches the store); and it takes the current time as an argument, so tests
drive leases and TTLs without sleeping.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from typing import Any

from broker.store.records import (
    AgentSeen,
    Claim,
    ExpiryReport,
    JobEvent,
    JobQuery,
    JobRecord,
    LegacyRecord,
    NewJob,
    QueueStats,
    ResultRecord,
    SessionRecord,
    State,
    TokenRecord,
)
from broker.store.timing import TransactionTimes

# Called after a commit with the job ids that changed and the sites that got claimable work,
# each with the commands of that work (None: any claim of the site; ``records.Claimable``).
ChangeListener = Callable[[Iterable[str], Mapping[str, Collection[str] | None]], None]


class Store(abc.ABC):
    """The storage contract. Methods raise ``broker.errors`` types, never a driver's."""

    def __init__(self, listener: ChangeListener | None = None) -> None:
        self.listener = listener
        # Filled by each backend's transaction helper; read by /metrics.
        self.transaction_times = TransactionTimes()

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
    def page_jobs(self, query: JobQuery, limit: int) -> list[JobRecord]:
        """At most ``limit`` jobs matching ``query``, newest first by (created_at, job_id),
        those after the cursor ``query.before`` only (keyset pagination: no OFFSET)."""

    @abc.abstractmethod
    def job_events(self, job_id: str) -> list[JobEvent]:
        """The job's timeline, oldest first: its creation, each change of state and each
        note (``rules.NOTE_*``); empty for an unknown job."""

    @abc.abstractmethod
    def failures_since(self, since: float) -> dict[str, int]:
        """Per site, the jobs that ended at or after ``since`` and failed
        (``rules.is_failure``); sites without any are left out."""

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
    def claim(
        self,
        site: str,
        agent_id: str,
        lease_ttl: float,
        now: float,
        *,
        token_id: str | None = None,
        commands: Collection[str] | None = None,
        others: Collection[str] | None = None,
    ) -> Claim | None:
        """Atomically take the next job of ``site``: first a running job this ``agent_id``
        lost (reattach, whatever its command), else the oldest queued one whose command is in
        ``commands`` (None: of any command); the others stay queued for whoever runs them.
        With ``others`` (the commands someone else at the site runs: an original poller's
        whitelist), a job of a command in neither list is taken too: nobody else would run it,
        and the agent's site rejects it at once with its reason. Each claim bumps the job's
        epoch.

        With ``token_id``, the token is looked up in the same transaction: a token revoked
        (or deleted) by then takes nothing and gets Unauthorized, however long ago its
        request was authenticated."""

    @abc.abstractmethod
    def release_claim(self, job_id: str, epoch: int, now: float) -> JobRecord:
        """The lease holder hands the job back now instead of letting its lease lapse: a
        claimed job is queued again at its old place (or ends cancelled if a cancel was
        requested), a running one is marked agent_lost so its agent's next claim re-attaches.
        StaleEpoch/InvalidState unless ``epoch`` holds the job."""

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
        skipped: Sequence[Mapping[str, Any]],
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

    def count_jobs(self) -> dict[tuple[str, State], int]:
        """How many jobs each site has in each state (only pairs with at least one job).

        A backend answers this with one grouped query (metrics ask for it on every scrape);
        this default, correct for any backend, reads every job."""
        counts: dict[tuple[str, State], int] = {}
        for job in self.list_jobs(limit=-1):
            key = (job.spec.site, job.state)
            counts[key] = counts.get(key, 0) + 1
        return counts

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
    def token_used(self, token_id: str, now: float) -> None:
        """Record that a request presented the token at ``now`` (``TokenRecord.last_used``)."""

    # --- console sessions (every instance on the store sees the same ones) -------------------

    @abc.abstractmethod
    def create_session(self, record: SessionRecord, limit: int) -> None:
        """Keep a new console session; then, if more than ``limit`` are kept, the oldest go
        (a flood of log-ins cannot grow the table). A ``session_hash`` held already is a
        StateConflict."""

    @abc.abstractmethod
    def get_session(self, session_hash: str) -> SessionRecord | None:
        """The session kept under this hash, ended or not (the caller applies the times)."""

    @abc.abstractmethod
    def touch_session(self, session_hash: str, now: float) -> None:
        """Record a use at ``now`` (``SessionRecord.used_at``); nothing for an unknown hash."""

    @abc.abstractmethod
    def delete_session(self, session_hash: str) -> bool:
        """End the session (log-out); True if it was kept."""

    @abc.abstractmethod
    def delete_token_sessions(self, token_id: str) -> int:
        """End every session opened with ``token_id``; how many ended."""

    @abc.abstractmethod
    def delete_ended_sessions(self, now: float, idle: float) -> int:
        """Remove the sessions ended at ``now`` (``SessionRecord.ended``); how many."""

    # --- long polls counted across instances ----------------------------------------------

    def hold_poll(self, poll_id: str, token_id: str, limit: int, until: float, now: float) -> bool:
        """Count a long poll of ``token_id`` that waits until ``until`` against ``limit`` on
        every instance of this store; False when the token holds ``limit`` already.

        Not abstract: a store only one instance serves (SQLite, memory) counts nothing here,
        the instance's own count (``broker.notify``) is the whole limit."""
        return True

    def end_poll(self, poll_id: str) -> None:
        """The poll ``hold_poll`` counted has returned."""
        return

    def ping(self) -> None:  # not abstract: a store in memory is always reachable
        """Reach the database now (``/healthz``); StoreError if it cannot be reached."""
        return

    @abc.abstractmethod
    def close(self) -> None: ...

