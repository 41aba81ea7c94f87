"""``SQLStore``: the storage contract carried out once for every SQL backend.

Each method is one transaction or read snapshot of the backend's ``Database`` (SQLite's
``sqlite_db``, PostgreSQL's ``postgres_db``: they convert the driver's errors to
``StoreError``), asks ``broker.store.rules`` whether a change is allowed, and leaves the SQL to
``sql_jobs``, ``sql_tokens``, ``sql_sessions`` and ``sql_legacy``. The change listener is told
here, in ``_changed``, and only after a commit; PostgreSQL also publishes the changes to other
instances inside the transaction (``postgres_notify``).

A backend subclass only opens its database and checks its schema. This module never builds SQL
from data (only ``?`` parameters) and never stores a token.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Collection, Iterator, Mapping, Sequence
from typing import Any, Protocol

from broker.store import rules, sql_legacy, sql_sessions, sql_tokens, sql_views
from broker.store import sql_jobs as q
from broker.store.interface import ChangeListener, Store
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
from broker.store.sql_tx import Tx


class Database(Protocol):
    """A backend's connection(s): one way to write, one way to read, both converting errors."""

    def transaction(self) -> contextlib.AbstractContextManager[Tx]:
        """A write transaction, committed when the block ends without an error."""

    def snapshot(self) -> contextlib.AbstractContextManager[Tx]:
        """A consistent read of several statements; writes nothing."""

    def close(self) -> None: ...


class SQLStore(Store):
    def __init__(self, database: Database, listener: ChangeListener | None = None) -> None:
        super().__init__(listener)
        self._db = database

    def close(self) -> None:
        self._db.close()

    @property
    def database(self) -> Database:
        """The backend's connections, for whole-store tools (``broker.store.copy``)."""
        return self._db

    def ping(self) -> None:
        with self._snapshot("ping") as tx:
            tx.execute("SELECT 1").fetchall()

    @contextlib.contextmanager
    def _transaction(self, operation: str = "other") -> Iterator[Tx]:
        """The one write path; ``operation`` (the store method) labels its time on /metrics."""
        with self.transaction_times.measure(operation, "write"), self._db.transaction() as tx:
            yield tx
        # Reached only once the transaction committed: a rolled-back write reports nothing.
        self._changed(tx)

    def _changed(self, tx: Tx) -> None:
        if self.listener is not None and (tx.jobs or tx.sites):
            self.listener(tx.jobs, tx.sites)

    @contextlib.contextmanager
    def _snapshot(self, operation: str = "other") -> Iterator[Tx]:
        with self.transaction_times.measure(operation, "read"), self._db.snapshot() as tx:
            yield tx

    # --- jobs -------------------------------------------------------------------------

    def create_job(self, spec: NewJob, now: float) -> tuple[JobRecord, bool]:
        with self._transaction("create_job") as tx:
            if q.insert_job(tx, spec, now):
                return q.must_load(tx, spec.job_id), True
            existing = q.must_load(tx, spec.job_id)
            rules.check_same_request(existing, spec)
            return existing, False

    def get_job(self, job_id: str) -> JobRecord | None:
        with self._snapshot("get_job") as tx:
            return q.load_job(tx, job_id)

    def list_jobs(
        self,
        *,
        client: str | None = None,
        site: str | None = None,
        state: State | None = None,
        limit: int = 500,
    ) -> list[JobRecord]:
        with self._snapshot("list_jobs") as tx:
            ids = q.select_job_ids(tx, client=client, site=site, state=state, limit=limit)
            return [q.must_load(tx, job_id) for job_id in ids]

    def page_jobs(self, query: JobQuery, limit: int) -> list[JobRecord]:
        with self._snapshot("page_jobs") as tx:
            return [q.must_load(tx, job_id) for job_id in sql_views.page_ids(tx, query, limit)]

    def job_events(self, job_id: str) -> list[JobEvent]:
        with self._snapshot("job_events") as tx:
            return sql_views.load_events(tx, job_id)

    def failures_since(self, since: float) -> dict[str, int]:
        with self._snapshot("failures_since") as tx:
            return sql_views.failures_since(tx, since)

    def set_input_received(
        self, job_id: str, name: str, expected: int, received: int, now: float
    ) -> JobRecord:
        with self._transaction("set_input_received") as tx:
            record = rules.writable_input(q.must_load(tx, job_id), name)
            rules.check_offset(record.received, expected)
            tx.execute(
                "UPDATE inputs SET received = ? WHERE job_id = ? AND name = ?",
                (received, job_id, name),
            )
            return q.bump(tx, job_id, now)

    def submit(self, job_id: str, now: float) -> JobRecord:
        with self._transaction("submit") as tx:
            job = q.must_load(tx, job_id)
            if job.state is not State.CREATED:
                return job
            rules.check_inputs_complete(job)
            q.set_state(tx, job_id, State.QUEUED, queued_at=now)
            tx.touch(job_id, site=job.spec.site, command=job.spec.command)
            return q.bump(tx, job_id, now)

    def cancel(self, job_id: str, now: float) -> JobRecord:
        with self._transaction("cancel") as tx:
            job = q.must_load(tx, job_id)
            if rules.cancel_is_done(job):
                return job
            outcome = rules.cancel_outcome(job)
            if outcome is not None:
                q.finish(tx, job_id, State.CANCELLED, outcome, now)
            else:
                tx.execute("UPDATE jobs SET cancel_requested = 1 WHERE job_id = ?", (job_id,))
                return q.bump(tx, job_id, now, rules.NOTE_CANCEL_REQUESTED)
            return q.bump(tx, job_id, now)

    def ack(self, job_id: str, now: float) -> JobRecord:
        with self._transaction("ack") as tx:
            job = q.must_load(tx, job_id)
            rules.check_ackable(job)
            if job.acked:
                return job
            tx.execute(
                "UPDATE jobs SET acked = 1, results_deleted = 1 WHERE job_id = ?", (job_id,)
            )
            return q.bump(tx, job_id, now)

    # --- agents -------------------------------------------------------------------------

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
        with self._transaction("claim") as tx:
            if token_id is not None:
                # Inside the write transaction: a revoke by another process (the CLI) either
                # committed before, and is seen here, or waits until this claim committed.
                rules.check_claiming_token(sql_tokens.load_for_claim(tx, token_id), token_id)
            q.requeue_expired_claims(tx, now, site=site)
            job_id, reattach = q.next_claimable(tx, site, agent_id, now, commands, others)
            # After the jobs, as every other write orders its locks (job, then agent): two
            # transactions never wait on each other's rows in a circle.
            q.seen_agent(tx, site, agent_id, now)
            if job_id is None:
                return None
            job = q.take_lease(tx, job_id, agent_id, lease_ttl, now, reattach=reattach)
            assert job.lease_expires is not None
            return Claim(job, job.lease_epoch, job.lease_expires, reattach)

    def release_claim(self, job_id: str, epoch: int, now: float) -> JobRecord:
        with self._transaction("release_claim") as tx:
            return q.release(tx, q.held_job(tx, job_id, epoch), now)

    def renew_lease(self, job_id: str, epoch: int, lease_ttl: float, now: float) -> JobRecord:
        with self._transaction("renew_lease") as tx:
            job = q.held_job(tx, job_id, epoch)
            q.seen_agent(tx, job.spec.site, job.agent_id or "", now)
            return q.renew(tx, job, lease_ttl, now)

    def mark_running(
        self, job_id: str, epoch: int, native_id: str | None, lease_ttl: float, now: float
    ) -> JobRecord:
        with self._transaction("mark_running") as tx:
            job = q.held_job(tx, job_id, epoch)
            q.seen_agent(tx, job.spec.site, job.agent_id or "", now)
            if rules.starts_running(job, native_id):
                tx.execute(
                    "UPDATE jobs SET state = ?, native_id = COALESCE(?, native_id)"
                    " WHERE job_id = ?",
                    (State.RUNNING.value, native_id, job_id),
                )
                q.bump(tx, job_id, now)
                job = q.must_load(tx, job_id)
            return q.renew(tx, job, lease_ttl, now)

    def check_lease(self, job_id: str, epoch: int) -> JobRecord:
        with self._snapshot("check_lease") as tx:
            return q.held_job(tx, job_id, epoch)

    def append_log(
        self, job_id: str, stream: str, epoch: int, expected: int, size: int, now: float
    ) -> JobRecord:
        with self._transaction("append_log") as tx:
            job = q.held_job(tx, job_id, epoch)
            rules.check_offset(rules.log_size(job, stream), expected, header="Log-Size")
            tx.execute(q.log_update(stream), (size, job_id))
            return q.bump(tx, job_id, now)

    def set_result_upload(
        self, job_id: str, epoch: int, result: ResultRecord, expected: int, now: float
    ) -> JobRecord:
        with self._transaction("set_result_upload") as tx:
            job = q.held_job(tx, job_id, epoch)
            rules.check_result_declaration(job.result(result.name), result, expected)
            q.upsert_result(tx, job_id, result)
            return q.must_load(tx, job_id)

    def complete(
        self,
        job_id: str,
        epoch: int,
        outcome: Mapping[str, Any],
        results: Sequence[ResultRecord],
        skipped: Sequence[Mapping[str, Any]],
        now: float,
    ) -> JobRecord:
        with self._transaction("complete") as tx:
            job = q.must_load(tx, job_id)
            if rules.is_repeated_complete(job, epoch):
                return job
            job = q.held_job(tx, job_id, epoch)
            rules.check_results_uploaded(job, results)
            q.list_results(tx, job_id, results)
            q.finish(tx, job_id, rules.completed_state(outcome), dict(outcome), now)
            tx.execute(
                "UPDATE jobs SET skipped = ? WHERE job_id = ?",
                (json.dumps([dict(s) for s in skipped]), job_id),
            )
            return q.bump(tx, job_id, now)

    def expire(self, now: float, queue_ttl: float) -> ExpiryReport:
        with self._transaction("expire") as tx:
            requeued, cancelled = q.requeue_expired_claims(tx, now, site=None)
            lost = q.mark_agents_lost(tx, now)
            expired = q.expire_waiting(tx, now, queue_ttl)
        return ExpiryReport(tuple(requeued), tuple(lost), tuple(expired), tuple(cancelled))

    def final_jobs_before(self, cutoff: float) -> list[str]:
        with self._snapshot("final_jobs_before") as tx:
            rows = tx.execute(
                "SELECT job_id FROM jobs WHERE finished_at IS NOT NULL AND finished_at < ?",
                (cutoff,),
            ).fetchall()
        return [str(row["job_id"]) for row in rows]

    def delete_job(self, job_id: str) -> None:
        with self._transaction("delete_job") as tx:
            tx.execute("DELETE FROM jobs WHERE job_id = ?", (job_id,))
            tx.touch(job_id)

    def queue_stats(self) -> list[QueueStats]:
        with self._snapshot("queue_stats") as tx:
            return q.queue_stats(tx)

    def count_jobs(self) -> dict[tuple[str, State], int]:
        with self._snapshot("count_jobs") as tx:
            rows = tx.execute("SELECT site, state, COUNT(*) AS n FROM jobs GROUP BY site, state")
            return {(r["site"], State(r["state"])): r["n"] for r in rows.fetchall()}

    def agents_seen(self) -> list[AgentSeen]:
        with self._snapshot("agents_seen") as tx:
            rows = tx.execute(
                "SELECT site, agent_id, last_seen FROM agents ORDER BY site, agent_id"
            ).fetchall()
        return [AgentSeen(r["site"], r["agent_id"], r["last_seen"]) for r in rows]

    # --- the original API (broker.legacy) -----------------------------------------------------

    def create_legacy_job(
        self, spec: NewJob, calc_info: Mapping[str, Any], now: float
    ) -> JobRecord:
        with self._transaction("create_legacy_job") as tx:
            if not q.insert_job(tx, spec, now):
                raise rules.id_taken(spec.job_id)
            sql_legacy.insert(tx, spec.job_id, calc_info)
            return q.must_load(tx, spec.job_id)

    def get_legacy(self, job_id: str) -> LegacyRecord | None:
        with self._snapshot("get_legacy") as tx:
            return sql_legacy.load(tx, job_id)

    def queued_job_ids(self, site: str, limit: int) -> list[str]:
        with self._snapshot("queued_job_ids") as tx:
            return sql_legacy.queued_ids(tx, site, State.QUEUED.value, limit)

    def legacy_claim(
        self,
        job_id: str,
        site: str,
        poller: str,
        calc_info: Mapping[str, Any],
        lease_ttl: float,
        now: float,
    ) -> JobRecord:
        with self._transaction("legacy_claim") as tx:
            # A lapsed lease of another poller frees the job first, as a claim does.
            q.requeue_expired_claims(tx, now, site=site)
            rules.check_legacy_claimable(q.must_load(tx, job_id), site)
            q.seen_agent(tx, site, poller, now)
            job = q.take_lease(tx, job_id, poller, lease_ttl, now, reattach=False)
            sql_legacy.take(tx, job_id, calc_info, poller, job.lease_epoch,
                               rules.LEGACY_CLAIMED_PROGRESS)  # fmt: skip
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
        with self._transaction("legacy_step") as tx:
            job = q.must_load(tx, job_id)
            rules.check_legacy_step(job, sql_legacy.load(tx, job_id), poller, expect)
            if running and job.state is State.CLAIMED:
                tx.execute(
                    "UPDATE jobs SET state = ? WHERE job_id = ?", (State.RUNNING.value, job_id)
                )
            sql_legacy.advance(tx, job_id, progress, status, result_types)
            q.seen_agent(tx, job.spec.site, poller, now)
            q.renew(tx, job, lease_ttl, now)
            return q.bump(tx, job_id, now)

    # --- tokens -------------------------------------------------------------------------

    def create_token(self, record: TokenRecord) -> None:
        with self._transaction("create_token") as tx:
            sql_tokens.insert(tx, record)

    def get_token(self, token_id: str) -> TokenRecord | None:
        with self._snapshot("get_token") as tx:
            return sql_tokens.load(tx, token_id)

    def list_tokens(self) -> list[TokenRecord]:
        with self._snapshot("list_tokens") as tx:
            return sql_tokens.load_all(tx)

    def revoke_token(self, token_id: str, now: float) -> bool:
        with self._transaction("revoke_token") as tx:
            return sql_tokens.revoke(tx, token_id, now)

    def token_used(self, token_id: str, now: float) -> None:
        with self._transaction("token_used") as tx:
            sql_views.token_used(tx, token_id, now)

    # --- console sessions -------------------------------------------------------------

    def create_session(self, record: SessionRecord, limit: int) -> None:
        with self._transaction("create_session") as tx:
            sql_sessions.insert(tx, record, limit)

    def get_session(self, session_hash: str) -> SessionRecord | None:
        with self._snapshot("get_session") as tx:
            return sql_sessions.load(tx, session_hash)

    def touch_session(self, session_hash: str, now: float) -> None:
        with self._transaction("touch_session") as tx:
            sql_sessions.touch(tx, session_hash, now)

    def delete_session(self, session_hash: str) -> bool:
        with self._transaction("delete_session") as tx:
            return sql_sessions.delete(tx, session_hash)

    def delete_token_sessions(self, token_id: str) -> int:
        with self._transaction("delete_token_sessions") as tx:
            return sql_sessions.delete_of_token(tx, token_id)

    def delete_ended_sessions(self, now: float, idle: float) -> int:
        with self._transaction("delete_ended_sessions") as tx:
            return sql_sessions.delete_ended(tx, now, idle)
