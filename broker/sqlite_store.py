"""The SQLite backend of ``broker.store.Store``: one file, WAL mode, one writer at a time.

Every write runs through ``_transaction()``: a process-wide lock plus ``BEGIN IMMEDIATE`` (so a
second process, such as ``broker token create``, waits instead of failing half-way), rollback
on any error, and sqlite3 errors converted to ``StoreError`` there. Reads run through
``_snapshot()`` under the same lock, so a job and its inputs are read consistently.
Change notifications go out only after a commit, never for a rolled-back write.

This module never builds SQL from data (only ``?`` parameters) and never stores a token.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import threading
from collections.abc import Collection, Iterator, Mapping, Sequence
from typing import Any

from broker import sqlite_jobs as q
from broker.errors import (
    AlreadyClaimed,
    InputsIncomplete,
    InvalidState,
    NotFound,
    StaleEpoch,
    StateConflict,
    StoreError,
)
from broker.legacy import sqlite as sqlite_legacy
from broker.store import (
    AgentSeen,
    ChangeListener,
    Claim,
    ExpiryReport,
    JobRecord,
    LegacyRecord,
    NewJob,
    QueueStats,
    ResultRecord,
    Scope,
    State,
    Store,
    TokenRecord,
    check_offset,
    check_result_declaration,
)

# Long enough to outlast another process's short write (token create), short enough that a
# stuck database turns into a 503 the client retries rather than a hung request.
BUSY_TIMEOUT_SECONDS = 10.0


class SQLiteStore(Store):
    def __init__(self, path: str, listener: ChangeListener | None = None) -> None:
        super().__init__(listener)
        self.path = path
        self._lock = threading.Lock()
        try:
            self._conn = sqlite3.connect(
                path, timeout=BUSY_TIMEOUT_SECONDS, isolation_level=None, check_same_thread=False
            )
            self._conn.row_factory = sqlite3.Row
            # FULL: a write the API acknowledged (log bytes, upload offsets) survives power loss.
            for pragma in ("journal_mode=WAL", "synchronous=FULL", "foreign_keys=ON"):
                self._conn.execute(f"PRAGMA {pragma}")
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open the broker database {path}: {exc}") from exc
        with self._transaction() as tx:
            q.create_schema(tx)
            sqlite_legacy.create_schema(tx)

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    # --- the one write path and the one read path ------------------------------------------

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[q.Tx]:
        with self._lock:
            tx = q.Tx(self._conn)
            self._execute_control("BEGIN IMMEDIATE")
            try:
                yield tx
                self._execute_control("COMMIT")
            except BaseException as exc:
                with contextlib.suppress(sqlite3.Error):
                    self._conn.execute("ROLLBACK")
                if isinstance(exc, sqlite3.Error):
                    raise StoreError(f"broker database write failed: {exc}") from exc
                raise
        if self.listener is not None and (tx.jobs or tx.sites):
            self.listener(tx.jobs, tx.sites)

    @contextlib.contextmanager
    def _snapshot(self) -> Iterator[q.Tx]:
        with self._lock:
            self._execute_control("BEGIN")
            try:
                yield q.Tx(self._conn)
            except sqlite3.Error as exc:
                raise StoreError(f"broker database read failed: {exc}") from exc
            finally:
                with contextlib.suppress(sqlite3.Error):
                    self._conn.execute("COMMIT")

    def _execute_control(self, statement: str) -> None:
        try:
            self._conn.execute(statement)
        except sqlite3.Error as exc:
            raise StoreError(f"broker database is unavailable ({statement}): {exc}") from exc

    # --- jobs -------------------------------------------------------------------------

    def create_job(self, spec: NewJob, now: float) -> tuple[JobRecord, bool]:
        with self._transaction() as tx:
            existing = q.load_job(tx, spec.job_id)
            if existing is not None:
                _check_same_request(existing, spec)
                return existing, False
            q.insert_job(tx, spec, now)
            return q.must_load(tx, spec.job_id), True

    def get_job(self, job_id: str) -> JobRecord | None:
        with self._snapshot() as tx:
            return q.load_job(tx, job_id)

    def list_jobs(
        self,
        *,
        client: str | None = None,
        site: str | None = None,
        state: State | None = None,
        limit: int = 500,
    ) -> list[JobRecord]:
        with self._snapshot() as tx:
            ids = q.select_job_ids(tx, client=client, site=site, state=state, limit=limit)
            return [q.must_load(tx, job_id) for job_id in ids]

    def set_input_received(
        self, job_id: str, name: str, expected: int, received: int, now: float
    ) -> JobRecord:
        with self._transaction() as tx:
            job = q.must_load(tx, job_id)
            if job.state is not State.CREATED:
                raise InvalidState(f"job {job_id} is {job.state}; inputs can no longer change")
            record = job.input(name)
            if record is None:
                raise NotFound(f"job {job_id} declares no input {name!r}")
            check_offset(record.received, expected)
            tx.execute(
                "UPDATE inputs SET received = ? WHERE job_id = ? AND name = ?",
                (received, job_id, name),
            )
            return q.bump(tx, job_id, now)

    def submit(self, job_id: str, now: float) -> JobRecord:
        with self._transaction() as tx:
            job = q.must_load(tx, job_id)
            if job.state is not State.CREATED:
                return job
            missing = next((i for i in job.inputs if not i.complete), None)
            if missing is not None:
                raise InputsIncomplete(
                    f"input {missing.name!r} has {missing.received} of {missing.size} bytes; "
                    "finish its upload before submitting",
                    field=missing.name,
                )
            q.set_state(tx, job_id, State.QUEUED, queued_at=now)
            tx.touch(job_id, site=job.spec.site)
            return q.bump(tx, job_id, now)

    def cancel(self, job_id: str, now: float) -> JobRecord:
        with self._transaction() as tx:
            job = q.must_load(tx, job_id)
            if job.state.is_final or (job.cancel_requested and not job.agent_lost):
                return job
            if job.state in (State.CREATED, State.QUEUED) or job.agent_lost:
                reason = (
                    "cancelled while the site's agent was lost; the site may still run it"
                    if job.agent_lost
                    else "cancelled before any agent claimed it"
                )
                q.finish(tx, job_id, State.CANCELLED, q.broker_outcome("cancelled", reason), now)
            else:
                tx.execute("UPDATE jobs SET cancel_requested = 1 WHERE job_id = ?", (job_id,))
            return q.bump(tx, job_id, now)

    def ack(self, job_id: str, now: float) -> JobRecord:
        with self._transaction() as tx:
            job = q.must_load(tx, job_id)
            if not job.state.is_final:
                raise InvalidState(f"job {job_id} is {job.state}; acknowledge it once it ended")
            if job.acked:
                return job
            tx.execute(
                "UPDATE jobs SET acked = 1, results_deleted = 1 WHERE job_id = ?", (job_id,)
            )
            return q.bump(tx, job_id, now)

    # --- agents -------------------------------------------------------------------------

    def claim(self, site: str, agent_id: str, lease_ttl: float, now: float) -> Claim | None:
        with self._transaction() as tx:
            q.seen_agent(tx, site, agent_id, now)
            q.requeue_expired_claims(tx, now, site=site)
            job_id, reattach = q.next_claimable(tx, site, agent_id, now)
            if job_id is None:
                return None
            job = q.take_lease(tx, job_id, agent_id, lease_ttl, now, reattach=reattach)
            assert job.lease_expires is not None
            return Claim(job, job.lease_epoch, job.lease_expires, reattach)

    def renew_lease(self, job_id: str, epoch: int, lease_ttl: float, now: float) -> JobRecord:
        with self._transaction() as tx:
            job = q.held_job(tx, job_id, epoch)
            q.seen_agent(tx, job.spec.site, job.agent_id or "", now)
            return q.renew(tx, job, lease_ttl, now)

    def mark_running(
        self, job_id: str, epoch: int, native_id: str | None, lease_ttl: float, now: float
    ) -> JobRecord:
        with self._transaction() as tx:
            job = q.held_job(tx, job_id, epoch)
            q.seen_agent(tx, job.spec.site, job.agent_id or "", now)
            changed = job.state is State.CLAIMED or (
                native_id is not None and native_id != job.native_id
            )
            if changed:
                tx.execute(
                    "UPDATE jobs SET state = ?, native_id = COALESCE(?, native_id)"
                    " WHERE job_id = ?",
                    (State.RUNNING.value, native_id, job_id),
                )
                q.bump(tx, job_id, now)
                job = q.must_load(tx, job_id)
            return q.renew(tx, job, lease_ttl, now)

    def check_lease(self, job_id: str, epoch: int) -> JobRecord:
        with self._snapshot() as tx:
            return q.held_job(tx, job_id, epoch)

    def append_log(
        self, job_id: str, stream: str, epoch: int, expected: int, size: int, now: float
    ) -> JobRecord:
        with self._transaction() as tx:
            job = q.held_job(tx, job_id, epoch)
            check_offset(job.logs[stream], expected, header="Log-Size")
            tx.execute(q.log_update(stream), (size, job_id))
            return q.bump(tx, job_id, now)

    def set_result_upload(
        self, job_id: str, epoch: int, result: ResultRecord, expected: int, now: float
    ) -> JobRecord:
        with self._transaction() as tx:
            job = q.held_job(tx, job_id, epoch)
            check_result_declaration(job.result(result.name), result, expected)
            q.upsert_result(tx, job_id, result)
            return q.must_load(tx, job_id)

    def complete(
        self,
        job_id: str,
        epoch: int,
        outcome: Mapping[str, Any],
        results: Sequence[ResultRecord],
        skipped: Sequence[Mapping[str, str]],
        now: float,
    ) -> JobRecord:
        with self._transaction() as tx:
            job = q.must_load(tx, job_id)
            if job.state.is_final and job.lease_epoch == epoch and job.outcome is not None:
                return job  # a retried complete: the first one counted
            job = q.held_job(tx, job_id, epoch)
            q.check_results_uploaded(job, results)
            q.list_results(tx, job_id, results)
            state = State.CANCELLED if outcome.get("state") == "cancelled" else State.FINISHED
            q.finish(tx, job_id, state, dict(outcome), now)
            tx.execute(
                "UPDATE jobs SET skipped = ? WHERE job_id = ?",
                (json.dumps([dict(s) for s in skipped]), job_id),
            )
            return q.bump(tx, job_id, now)

    def expire(self, now: float, queue_ttl: float) -> ExpiryReport:
        with self._transaction() as tx:
            requeued, cancelled = q.requeue_expired_claims(tx, now, site=None)
            lost = q.mark_agents_lost(tx, now)
            expired = q.expire_waiting(tx, now, queue_ttl)
        return ExpiryReport(tuple(requeued), tuple(lost), tuple(expired), tuple(cancelled))

    def final_jobs_before(self, cutoff: float) -> list[str]:
        with self._snapshot() as tx:
            rows = tx.execute(
                "SELECT job_id FROM jobs WHERE finished_at IS NOT NULL AND finished_at < ?",
                (cutoff,),
            ).fetchall()
        return [str(row["job_id"]) for row in rows]

    def delete_job(self, job_id: str) -> None:
        with self._transaction() as tx:
            tx.execute("DELETE FROM jobs WHERE job_id = ?", (job_id,))
            tx.touch(job_id)

    def queue_stats(self) -> list[QueueStats]:
        with self._snapshot() as tx:
            return q.queue_stats(tx)

    def agents_seen(self) -> list[AgentSeen]:
        with self._snapshot() as tx:
            rows = tx.execute(
                "SELECT site, agent_id, last_seen FROM agents ORDER BY site, agent_id"
            ).fetchall()
        return [AgentSeen(r["site"], r["agent_id"], r["last_seen"]) for r in rows]

    # --- the original API (broker.legacy) ---------------------------------------------------------

    def create_legacy_job(
        self, spec: NewJob, calc_info: Mapping[str, Any], now: float
    ) -> JobRecord:
        with self._transaction() as tx:
            if q.load_job(tx, spec.job_id) is not None:
                raise StateConflict(f"job id {spec.job_id} is taken; the broker makes a new one")
            q.insert_job(tx, spec, now)
            sqlite_legacy.insert(tx, spec.job_id, calc_info)
            return q.must_load(tx, spec.job_id)

    def get_legacy(self, job_id: str) -> LegacyRecord | None:
        with self._snapshot() as tx:
            return sqlite_legacy.load(tx, job_id)

    def queued_job_ids(self, site: str, limit: int) -> list[str]:
        with self._snapshot() as tx:
            return sqlite_legacy.queued_ids(tx, site, State.QUEUED.value, limit)

    def legacy_claim(
        self,
        job_id: str,
        site: str,
        poller: str,
        calc_info: Mapping[str, Any],
        lease_ttl: float,
        now: float,
    ) -> JobRecord:
        with self._transaction() as tx:
            # A lapsed lease of another poller frees the job first, as a claim does.
            q.requeue_expired_claims(tx, now, site=site)
            job = q.must_load(tx, job_id)
            if job.spec.site != site:
                raise InvalidState(f"job {job_id} is not a job of site {site}")
            if job.state is not State.QUEUED:
                if job.state.is_held:
                    raise AlreadyClaimed(
                        f"job {job_id} is taken already (by {job.agent_id}); only one poller "
                        "or agent runs a job"
                    )
                raise InvalidState(f"job {job_id} is {job.state}; it cannot be taken now")
            q.seen_agent(tx, site, poller, now)
            job = q.take_lease(tx, job_id, poller, lease_ttl, now, reattach=False)
            sqlite_legacy.take(tx, job_id, calc_info, poller, job.lease_epoch, "sending params")
            return job

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
        with self._transaction() as tx:
            job = q.must_load(tx, job_id)
            record = sqlite_legacy.load(tx, job_id)
            if job.state.is_final:
                raise InvalidState(f"job {job_id} is {job.state}; it takes no more steps")
            holds = (
                job.state.is_held
                and record is not None
                and job.agent_id == poller == record.poller
                and record.epoch == job.lease_epoch
            )
            if not holds or record is None:
                raise StaleEpoch(
                    f"job {job_id} is not held by this poller (held by {job.agent_id}, "
                    f"{job.state}); take jobs with calc-params first",
                    extra={"epoch": job.lease_epoch},
                )
            if record.progress not in expect:
                wanted = " or ".join(f"'{p}'" for p in sorted(expect))
                raise InvalidState(
                    f"job {job_id} is at '{record.progress}'; this call needs {wanted}"
                )
            if running and job.state is State.CLAIMED:
                tx.execute(
                    "UPDATE jobs SET state = ? WHERE job_id = ?", (State.RUNNING.value, job_id)
                )
            sqlite_legacy.advance(tx, job_id, progress, status, result_types)
            q.seen_agent(tx, job.spec.site, poller, now)
            q.renew(tx, job, lease_ttl, now)
            return q.bump(tx, job_id, now)

    # --- tokens -------------------------------------------------------------------------

    def create_token(self, record: TokenRecord) -> None:
        with self._transaction() as tx:
            if tx.execute(
                "SELECT 1 FROM tokens WHERE token_id = ?", (record.token_id,)
            ).fetchone():
                raise StateConflict(f"token id {record.token_id} exists already")
            tx.execute(
                "INSERT INTO tokens (token_id, sha256, scope, subject, created_at, revoked_at)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (
                    record.token_id,
                    record.sha256,
                    record.scope.value,
                    record.subject,
                    record.created_at,
                    record.revoked_at,
                ),
            )

    def get_token(self, token_id: str) -> TokenRecord | None:
        with self._snapshot() as tx:
            row = tx.execute("SELECT * FROM tokens WHERE token_id = ?", (token_id,)).fetchone()
        return _token(row) if row is not None else None

    def list_tokens(self) -> list[TokenRecord]:
        with self._snapshot() as tx:
            rows = tx.execute("SELECT * FROM tokens ORDER BY created_at, token_id").fetchall()
        return [_token(row) for row in rows]

    def revoke_token(self, token_id: str, now: float) -> bool:
        with self._transaction() as tx:
            cursor = tx.execute(
                "UPDATE tokens SET revoked_at = ? WHERE token_id = ? AND revoked_at IS NULL",
                (now, token_id),
            )
            return cursor.rowcount == 1


def _check_same_request(existing: JobRecord, spec: NewJob) -> None:
    if existing.spec.client != spec.client:
        raise StateConflict(f"job id {spec.job_id} is taken; create the job with a new id")
    if existing.spec.fingerprint() != spec.fingerprint():
        raise StateConflict(
            f"job {spec.job_id} exists with a different request; use a new job id for a "
            "different job",
            field="job_id",
        )


def _token(row: sqlite3.Row) -> TokenRecord:
    return TokenRecord(
        token_id=row["token_id"],
        sha256=row["sha256"],
        scope=Scope(row["scope"]),
        subject=row["subject"],
        created_at=row["created_at"],
        revoked_at=row["revoked_at"],
    )
