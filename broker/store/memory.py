"""A ``broker.store.Store`` in one process's memory: the contract's reference backend.

It keeps the same records as the SQLite backend, answers in the same orders (insertion order
stands in for SQLite's rowid) and applies the same ``broker.store.rules``, so the one store
test suite runs over both. Mappings a caller hands in (params, outcome, calc-info) are copied
through JSON, as SQLite stores them, so a caller can neither change a record afterwards nor
store what SQLite could not.

Every method runs under one lock. A write works on a copy of the tables (the records are
frozen, so copying the dicts is enough) and replaces them only when it ends without an error:
a refused write leaves nothing behind, as SQLite's rollback does. Change notifications go out
after that "commit", outside the lock. A copy per write costs time proportional to the number
of jobs: right for tests, not for a broker.

No config selects this backend and a running broker never uses it: its data dies with the
process.
"""

from __future__ import annotations

import contextlib
import dataclasses
import threading
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from typing import Any

from broker.store import rules
from broker.store.interface import ChangeListener, Store
from broker.store.memory_tables import Tables, Tx, by_name, to_json
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


class MemoryStore(Store):
    def __init__(self, listener: ChangeListener | None = None) -> None:
        super().__init__(listener)
        self._lock = threading.Lock()
        self._tables = Tables()

    def close(self) -> None:
        pass  # nothing to release; the tables go with the object

    @contextlib.contextmanager
    def _transaction(self, operation: str = "other") -> Iterator[Tx]:
        with self.transaction_times.measure(operation, "write"), self._lock:
            tx = Tx(self._tables.copy())
            yield tx
            # Reached only when the write raised nothing: its copy becomes the store's tables.
            self._tables = tx.tables
        if self.listener is not None and (tx.jobs or tx.sites):
            self.listener(tx.jobs, tx.sites)

    @contextlib.contextmanager
    def _snapshot(self, operation: str = "other") -> Iterator[Tx]:
        with self.transaction_times.measure(operation, "read"), self._lock:
            yield Tx(self._tables)

    # --- jobs -------------------------------------------------------------------------

    def create_job(self, spec: NewJob, now: float) -> tuple[JobRecord, bool]:
        with self._transaction("create_job") as tx:
            existing = tx.load(spec.job_id)
            if existing is not None:
                rules.check_same_request(existing, spec)
                return existing, False
            return tx.insert(spec, now), True

    def get_job(self, job_id: str) -> JobRecord | None:
        with self._snapshot("get_job") as tx:
            return tx.load(job_id)

    def list_jobs(
        self,
        *,
        client: str | None = None,
        site: str | None = None,
        state: State | None = None,
        limit: int = 500,
    ) -> list[JobRecord]:
        with self._snapshot("list_jobs") as tx:
            jobs = tx.select(
                lambda j: (client is None or j.spec.client == client)
                and (site is None or j.spec.site == site)
                and (state is None or j.state == state)
            )
            jobs.sort(key=lambda j: (j.created_at, tx.tables.order[j.job_id]), reverse=True)
        return jobs[:limit] if limit >= 0 else jobs  # a negative LIMIT is none in SQL

    def page_jobs(self, query: JobQuery, limit: int) -> list[JobRecord]:
        with self._snapshot("page_jobs") as tx:
            jobs = tx.select(lambda j: matches(j, query))
        jobs.sort(key=lambda j: (j.created_at, j.job_id), reverse=True)
        return jobs[:limit]

    def job_events(self, job_id: str) -> list[JobEvent]:
        with self._snapshot("job_events") as tx:
            return list(tx.tables.events.get(job_id, ()))

    def failures_since(self, since: float) -> dict[str, int]:
        failed: dict[str, int] = {}
        with self._snapshot("failures_since") as tx:
            ended = tx.select(lambda j: j.finished_at is not None and j.finished_at >= since)
        for job in ended:
            if rules.is_failure(job.state, job.outcome):
                failed[job.spec.site] = failed.get(job.spec.site, 0) + 1
        return failed

    def set_input_received(
        self, job_id: str, name: str, expected: int, received: int, now: float
    ) -> JobRecord:
        with self._transaction("set_input_received") as tx:
            job = tx.must_load(job_id)
            record = rules.writable_input(job, name)
            rules.check_offset(record.received, expected)
            inputs = tuple(
                dataclasses.replace(i, received=received) if i.name == name else i
                for i in job.inputs
            )
            tx.update(job_id, inputs=inputs)
            return tx.bump(job_id, now)

    def submit(self, job_id: str, now: float) -> JobRecord:
        with self._transaction("submit") as tx:
            job = tx.must_load(job_id)
            if job.state is not State.CREATED:
                return job
            rules.check_inputs_complete(job)
            tx.update(job_id, state=State.QUEUED, queued_at=now)
            tx.touch(job_id, site=job.spec.site, command=job.spec.command)
            return tx.bump(job_id, now)

    def cancel(self, job_id: str, now: float) -> JobRecord:
        with self._transaction("cancel") as tx:
            job = tx.must_load(job_id)
            if rules.cancel_is_done(job):
                return job
            outcome = rules.cancel_outcome(job)
            if outcome is not None:
                tx.finish(job_id, State.CANCELLED, outcome, now)
            else:
                tx.update(job_id, cancel_requested=True)
                return tx.bump(job_id, now, rules.NOTE_CANCEL_REQUESTED)
            return tx.bump(job_id, now)

    def ack(self, job_id: str, now: float) -> JobRecord:
        with self._transaction("ack") as tx:
            job = tx.must_load(job_id)
            rules.check_ackable(job)
            if job.acked:
                return job
            tx.update(job_id, acked=True, results_deleted=True)
            return tx.bump(job_id, now)

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
        wanted = None if commands is None else frozenset(commands)
        taken_elsewhere = None if others is None else frozenset(others)
        with self._transaction("claim") as tx:
            if token_id is not None:
                rules.check_claiming_token(tx.tables.tokens.get(token_id), token_id)
            tx.seen_agent(site, agent_id, now)
            tx.requeue_expired_claims(now, site=site)
            job_id, reattach = tx.next_claimable(site, agent_id, now, wanted, taken_elsewhere)
            if job_id is None:
                return None
            job = tx.take_lease(job_id, agent_id, lease_ttl, now, reattach=reattach)
            assert job.lease_expires is not None
            return Claim(job, job.lease_epoch, job.lease_expires, reattach)

    def release_claim(self, job_id: str, epoch: int, now: float) -> JobRecord:
        with self._transaction("release_claim") as tx:
            return tx.release(tx.held(job_id, epoch), now)

    def renew_lease(self, job_id: str, epoch: int, lease_ttl: float, now: float) -> JobRecord:
        with self._transaction("renew_lease") as tx:
            job = tx.held(job_id, epoch)
            tx.seen_agent(job.spec.site, job.agent_id or "", now)
            return tx.renew(job, lease_ttl, now)

    def mark_running(
        self, job_id: str, epoch: int, native_id: str | None, lease_ttl: float, now: float
    ) -> JobRecord:
        with self._transaction("mark_running") as tx:
            job = tx.held(job_id, epoch)
            tx.seen_agent(job.spec.site, job.agent_id or "", now)
            if rules.starts_running(job, native_id):
                kept = native_id if native_id is not None else job.native_id
                tx.update(job_id, state=State.RUNNING, native_id=kept)
                job = tx.bump(job_id, now)
            return tx.renew(job, lease_ttl, now)

    def check_lease(self, job_id: str, epoch: int) -> JobRecord:
        with self._snapshot("check_lease") as tx:
            return tx.held(job_id, epoch)

    def append_log(
        self, job_id: str, stream: str, epoch: int, expected: int, size: int, now: float
    ) -> JobRecord:
        with self._transaction("append_log") as tx:
            job = tx.held(job_id, epoch)
            rules.check_offset(rules.log_size(job, stream), expected, header="Log-Size")
            tx.update(job_id, logs={**job.logs, stream: size})
            return tx.bump(job_id, now)

    def set_result_upload(
        self, job_id: str, epoch: int, result: ResultRecord, expected: int, now: float
    ) -> JobRecord:
        with self._transaction("set_result_upload") as tx:
            job = tx.held(job_id, epoch)
            held = job.result(result.name)
            rules.check_result_declaration(held, result, expected)
            if held is None:
                record = ResultRecord(result.name, result.size, result.sha256, result.received,
                                      result.mode, listed=False)  # fmt: skip
            else:
                # The upload's mode and listing stay; its declaration and bytes held move on.
                record = dataclasses.replace(held, size=result.size, sha256=result.sha256,
                                             received=result.received)  # fmt: skip
            others = [r for r in job.results if r.name != result.name]
            return tx.update(job_id, results=by_name([*others, record]))

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
            job = tx.must_load(job_id)
            if rules.is_repeated_complete(job, epoch):
                return job
            job = tx.held(job_id, epoch)
            rules.check_results_uploaded(job, results)
            modes = {r.name: r.mode for r in results}
            listed = tuple(
                dataclasses.replace(r, listed=True, mode=modes[r.name]) if r.name in modes else r
                for r in job.results
            )
            tx.update(job_id, results=listed)
            tx.finish(job_id, rules.completed_state(outcome), outcome, now)
            tx.update(job_id, skipped=tuple(to_json([dict(s) for s in skipped])))
            return tx.bump(job_id, now)

    def expire(self, now: float, queue_ttl: float) -> ExpiryReport:
        with self._transaction("expire") as tx:
            requeued, cancelled = tx.requeue_expired_claims(now, site=None)
            lost = tx.mark_agents_lost(now)
            expired = tx.select(lambda j: rules.waited_too_long(j, now, queue_ttl))
            for job in expired:
                tx.finish(job.job_id, State.EXPIRED, rules.expiry_outcome(job, queue_ttl), now)
                tx.bump(job.job_id, now)
        return ExpiryReport(
            tuple(requeued),
            tuple(lost),
            tuple(j.job_id for j in expired),
            tuple(cancelled),
        )

    def final_jobs_before(self, cutoff: float) -> list[str]:
        with self._snapshot("final_jobs_before") as tx:
            ended = tx.select(lambda j: j.finished_at is not None and j.finished_at < cutoff)
        return [j.job_id for j in ended]

    def delete_job(self, job_id: str) -> None:
        with self._transaction("delete_job") as tx:
            # The job's legacy record goes with it, as SQLite's ON DELETE CASCADE does.
            tx.tables.jobs.pop(job_id, None)
            tx.tables.order.pop(job_id, None)
            tx.tables.legacy.pop(job_id, None)
            tx.tables.events.pop(job_id, None)
            tx.touch(job_id)

    def queue_stats(self) -> list[QueueStats]:
        waiting = (State.QUEUED, State.CLAIMED, State.RUNNING)
        with self._snapshot("queue_stats") as tx:
            jobs = tx.select(lambda j: j.state in waiting)
        stats = []
        for site in sorted({j.spec.site for j in jobs}):
            of_site = [j for j in jobs if j.spec.site == site]
            queued = [j.queued_at for j in of_site if j.state is State.QUEUED]
            times = [t for t in queued if t is not None]
            stats.append(QueueStats(
                site,
                len(queued),
                min(times) if times else None,
                sum(1 for j in of_site if j.state is State.CLAIMED),
                sum(1 for j in of_site if j.state is State.RUNNING),
            ))  # fmt: skip
        return stats

    def count_jobs(self) -> dict[tuple[str, State], int]:
        counts: dict[tuple[str, State], int] = {}
        with self._snapshot("count_jobs") as tx:
            for job in tx.tables.jobs.values():
                key = (job.spec.site, job.state)
                counts[key] = counts.get(key, 0) + 1
        return counts

    def agents_seen(self) -> list[AgentSeen]:
        with self._snapshot("agents_seen") as tx:
            seen = sorted(tx.tables.agents.items())
        return [AgentSeen(site, agent_id, last) for (site, agent_id), last in seen]

    # --- the original API (broker.legacy) -----------------------------------------------------

    def create_legacy_job(
        self, spec: NewJob, calc_info: Mapping[str, Any], now: float
    ) -> JobRecord:
        with self._transaction("create_legacy_job") as tx:
            if tx.load(spec.job_id) is not None:
                raise rules.id_taken(spec.job_id)
            job = tx.insert(spec, now)
            tx.tables.legacy[spec.job_id] = LegacyRecord(spec.job_id, to_json(dict(calc_info)))
            return job

    def get_legacy(self, job_id: str) -> LegacyRecord | None:
        with self._snapshot("get_legacy") as tx:
            return tx.tables.legacy.get(job_id)

    def queued_job_ids(self, site: str, limit: int) -> list[str]:
        with self._snapshot("queued_job_ids") as tx:
            jobs = tx.queue_order(
                tx.select(lambda j: j.spec.site == site and j.state is State.QUEUED)
            )
        ids = [j.job_id for j in jobs]
        return ids[:limit] if limit >= 0 else ids  # a negative LIMIT is none in SQL

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
            tx.requeue_expired_claims(now, site=site)
            rules.check_legacy_claimable(tx.must_load(job_id), site)
            tx.seen_agent(site, poller, now)
            job = tx.take_lease(job_id, poller, lease_ttl, now, reattach=False)
            # A poller's new claim: its progress starts over, nothing of an earlier claim is kept.
            record = tx.tables.legacy.get(job_id) or LegacyRecord(job_id, to_json(dict(calc_info)))
            tx.tables.legacy[job_id] = dataclasses.replace(
                record, progress=rules.LEGACY_CLAIMED_PROGRESS, status=None, poller=poller,
                epoch=job.lease_epoch, result_types={},
            )  # fmt: skip
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
            job = tx.must_load(job_id)
            record = rules.check_legacy_step(job, tx.tables.legacy.get(job_id), poller, expect)
            if running and job.state is State.CLAIMED:
                tx.update(job_id, state=State.RUNNING)
            tx.tables.legacy[job_id] = dataclasses.replace(
                record,
                progress=progress,
                status=status if status is not None else record.status,
                result_types=record.result_types if result_types is None else {
                    name: (str(pair[0]), str(pair[1])) for name, pair in result_types.items()
                },
            )  # fmt: skip
            tx.seen_agent(job.spec.site, poller, now)
            tx.renew(job, lease_ttl, now)
            return tx.bump(job_id, now)

    # --- tokens -------------------------------------------------------------------------

    def create_token(self, record: TokenRecord) -> None:
        with self._transaction("create_token") as tx:
            if record.token_id in tx.tables.tokens:
                raise rules.token_exists(record.token_id)
            tx.tables.tokens[record.token_id] = record

    def get_token(self, token_id: str) -> TokenRecord | None:
        with self._snapshot("get_token") as tx:
            return tx.tables.tokens.get(token_id)

    def list_tokens(self) -> list[TokenRecord]:
        with self._snapshot("list_tokens") as tx:
            tokens = list(tx.tables.tokens.values())
        return sorted(tokens, key=lambda t: (t.created_at, t.token_id))

    def revoke_token(self, token_id: str, now: float) -> bool:
        with self._transaction("revoke_token") as tx:
            token = tx.tables.tokens.get(token_id)
            if token is None or token.revoked:
                return False
            tx.tables.tokens[token_id] = dataclasses.replace(token, revoked_at=now)
            return True

    def token_used(self, token_id: str, now: float) -> None:
        with self._transaction("token_used") as tx:
            token = tx.tables.tokens.get(token_id)
            if token is not None:
                tx.tables.tokens[token_id] = dataclasses.replace(token, last_used=now)

    # --- console sessions -------------------------------------------------------------

    def create_session(self, record: SessionRecord, limit: int) -> None:
        with self._transaction("create_session") as tx:
            sessions = tx.tables.sessions
            if record.session_hash in sessions:
                raise rules.session_exists()
            sessions[record.session_hash] = record
            oldest = sorted(sessions.values(), key=lambda r: (r.created_at, r.session_hash))
            for old in oldest[: max(0, len(sessions) - limit)]:
                del sessions[old.session_hash]

    def get_session(self, session_hash: str) -> SessionRecord | None:
        with self._snapshot("get_session") as tx:
            return tx.tables.sessions.get(session_hash)

    def touch_session(self, session_hash: str, now: float) -> None:
        with self._transaction("touch_session") as tx:
            found = tx.tables.sessions.get(session_hash)
            if found is not None:
                tx.tables.sessions[session_hash] = dataclasses.replace(found, used_at=now)

    def delete_session(self, session_hash: str) -> bool:
        with self._transaction("delete_session") as tx:
            return tx.tables.sessions.pop(session_hash, None) is not None

    def delete_token_sessions(self, token_id: str) -> int:
        return self._delete_sessions("delete_token_sessions", lambda r: r.token_id == token_id)

    def delete_ended_sessions(self, now: float, idle: float) -> int:
        return self._delete_sessions("delete_ended_sessions", lambda r: r.ended(now, idle))

    def _delete_sessions(self, operation: str, which: Callable[[SessionRecord], bool]) -> int:
        with self._transaction(operation) as tx:
            gone = [k for k, r in tx.tables.sessions.items() if which(r)]
            for key in gone:
                del tx.tables.sessions[key]
        return len(gone)


def matches(job: JobRecord, query: JobQuery) -> bool:
    """Whether ``job`` is on a page of ``query`` (the SQL of ``sql_views.page_ids``)."""
    spec = job.spec
    wanted = (
        (query.site, spec.site), (query.state, job.state), (query.client, spec.client),
        (query.command, spec.command),
    )  # fmt: skip
    if any(want is not None and want != have for want, have in wanted):
        return False
    if query.since is not None and job.created_at < query.since:
        return False
    if query.until is not None and job.created_at >= query.until:
        return False
    return query.before is None or (job.created_at, job.job_id) < query.before
