"""The in-memory store's tables and the steps its methods share (``broker.store.memory``).

``Tables`` holds the records, ``Tx`` one write or read on them: it loads, replaces and bumps
records and remembers what changed, like the SQL backends' ``sql_jobs`` steps inside a
``sql_tx.Tx``. Nothing here takes the lock, commits or notifies: ``MemoryStore`` does.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from broker.store import rules
from broker.store.records import (
    Claimable,
    InputRecord,
    InputSpec,
    JobEvent,
    JobRecord,
    LegacyRecord,
    NewJob,
    ResultRecord,
    SessionRecord,
    State,
    TokenRecord,
    note_claimable,
)


def to_json(value: Any) -> Any:
    """A deep copy with SQLite's JSON columns' types (tuples become lists, keys strings)."""
    return json.loads(json.dumps(value, ensure_ascii=False))


@dataclass
class Tables:
    jobs: dict[str, JobRecord] = field(default_factory=dict)
    # Insertion number of each job: the tie-break of every ordering, like SQLite's rowid.
    order: dict[str, int] = field(default_factory=dict)
    next_order: int = 1
    legacy: dict[str, LegacyRecord] = field(default_factory=dict)
    agents: dict[tuple[str, str], float] = field(default_factory=dict)
    tokens: dict[str, TokenRecord] = field(default_factory=dict)
    events: dict[str, tuple[JobEvent, ...]] = field(default_factory=dict)
    # Console sessions by the hash of their id.
    sessions: dict[str, SessionRecord] = field(default_factory=dict)

    def copy(self) -> Tables:
        return Tables(
            dict(self.jobs),
            dict(self.order),
            self.next_order,
            dict(self.legacy),
            dict(self.agents),
            dict(self.tokens),
            dict(self.events),
            dict(self.sessions),
        )


class Tx:
    """One write (on a copy of the tables) or read; remembers what changed, for notification."""

    def __init__(self, tables: Tables) -> None:
        self.tables = tables
        self.jobs: set[str] = set()
        self.sites: Claimable = {}

    def touch(self, job_id: str, site: str | None = None, command: str | None = None) -> None:
        """As ``sql_tx.Tx.touch``: with ``site``, the job became claimable for ``command``."""
        self.jobs.add(job_id)
        if site is not None:
            note_claimable(self.sites, site, command)

    # --- reading ---------------------------------------------------------------------------

    def load(self, job_id: str) -> JobRecord | None:
        return self.tables.jobs.get(job_id)

    def must_load(self, job_id: str) -> JobRecord:
        job = self.load(job_id)
        if job is None:
            raise rules.job_not_found(job_id)
        return job

    def held(self, job_id: str, epoch: int) -> JobRecord:
        return rules.check_held(self.must_load(job_id), epoch)

    def select(self, wanted: Callable[[JobRecord], bool]) -> list[JobRecord]:
        """The jobs ``wanted`` accepts, in insertion order."""
        jobs = self.tables.jobs.values()
        return sorted((j for j in jobs if wanted(j)), key=lambda j: self.tables.order[j.job_id])

    def queue_order(self, jobs: list[JobRecord]) -> list[JobRecord]:
        """Oldest queued first (a job never queued first, as SQL sorts NULL), then insertion."""
        return sorted(jobs, key=lambda j: (j.queued_at is not None, j.queued_at or 0.0,
                                           self.tables.order[j.job_id]))  # fmt: skip

    def next_claimable(
        self,
        site: str,
        agent_id: str,
        now: float,
        commands: frozenset[str] | None,
        others: frozenset[str] | None,
    ) -> tuple[str | None, bool]:
        """(job id, reattach): a running job this agent lost comes back before new work (of
        any command: the agent took it once); new work only of ``commands`` (None: any), or
        of a command nobody runs (in neither list) once ``others`` is given."""
        lost = self.queue_order(self.select(
            lambda j: j.spec.site == site and j.state is State.RUNNING
            and j.agent_id == agent_id and (j.agent_lost or lapsed(j, now))
        ))  # fmt: skip
        if lost:
            return lost[0].job_id, True
        queued = self.queue_order(
            self.select(lambda j: j.spec.site == site and j.state is State.QUEUED
                        and takes(j.spec.command, commands, others))
        )
        return (queued[0].job_id, False) if queued else (None, False)

    # --- writing ---------------------------------------------------------------------------

    def insert(self, spec: NewJob, now: float) -> JobRecord:
        kept = NewJob(
            job_id=spec.job_id,
            client=spec.client,
            site=spec.site,
            command=spec.command,
            params=to_json(dict(spec.params)),
            inputs=tuple(InputSpec(i.name, i.size, i.sha256, i.mode) for i in spec.inputs),
            metadata=to_json(dict(spec.metadata)),
            walltime_limit=spec.walltime_limit,
        )
        # An empty input has nothing to upload: received (0) == size makes it complete.
        inputs = tuple(InputRecord(i.name, i.size, i.sha256, i.mode, 0) for i in kept.inputs)
        job = JobRecord(kept, State.CREATED, 1, inputs, created_at=now, updated_at=now)
        self.tables.jobs[spec.job_id] = job
        self.tables.order[spec.job_id] = self.tables.next_order
        self.tables.next_order += 1
        self.record_event(job_id=spec.job_id, now=now)
        self.touch(spec.job_id)
        return job

    def update(self, job_id: str, **changes: Any) -> JobRecord:
        job = dataclasses.replace(self.must_load(job_id), **changes)
        self.tables.jobs[job_id] = job
        return job

    def bump(self, job_id: str, now: float, note: str | None = None) -> JobRecord:
        """Every visible change goes through here: new version, new timestamp, a timeline entry
        when the state changed (or ``note`` says what happened), listeners told."""
        job = self.must_load(job_id)
        self.touch(job_id)
        self.record_event(job_id, now, note)
        return self.update(job_id, version=job.version + 1, updated_at=now)

    def record_event(self, job_id: str, now: float, note: str | None = None) -> None:
        """As ``sql_views.record_event``: an entry unless the state is the last entry's."""
        job = self.must_load(job_id)
        events = self.tables.events.get(job_id, ())
        if note is None and events and events[-1].state is job.state:
            return
        self.tables.events[job_id] = (*events, JobEvent(now, job.state, job.agent_id, note))

    def finish(self, job_id: str, state: State, outcome: Mapping[str, Any], now: float) -> None:
        self.update(job_id, state=state, outcome=to_json(dict(outcome)), finished_at=now,
                    lease_expires=None)  # fmt: skip

    def seen_agent(self, site: str, agent_id: str, now: float) -> None:
        self.tables.agents[(site, agent_id)] = now

    def requeue_expired_claims(self, now: float, site: str | None) -> tuple[list[str], list[str]]:
        """Claimed jobs whose agent never started them go back to the queue (or end, if a
        cancel was requested meanwhile). Returns (requeued, cancelled)."""
        expired = self.select(
            lambda j: j.state is State.CLAIMED
            and lapsed(j, now)
            and (site is None or j.spec.site == site)
        )
        requeued, cancelled = [], []
        for job in expired:
            if job.cancel_requested:
                self.finish(job.job_id, State.CANCELLED, rules.abandoned_claim_outcome(), now)
                cancelled.append(job.job_id)
            else:
                self.requeue(job, queued_at=now)
                requeued.append(job.job_id)
            self.bump(job.job_id, now)
        return requeued, cancelled

    def requeue(self, job: JobRecord, *, queued_at: float | None) -> None:
        """A claimed job back in its site's queue, at ``queued_at`` (None: its old place)."""
        kept = job.queued_at if queued_at is None else queued_at
        self.update(job.job_id, state=State.QUEUED, queued_at=kept, agent_id=None,
                    native_id=None, lease_expires=None)  # fmt: skip
        self.touch(job.job_id, site=job.spec.site, command=job.spec.command)

    def release(self, job: JobRecord, now: float) -> JobRecord:
        """What ``Store.release_claim`` writes for a job its holder hands back."""
        outcome = rules.release_outcome(job)
        if outcome is not None:
            self.finish(job.job_id, State.CANCELLED, outcome, now)
        elif job.state is State.CLAIMED:
            self.requeue(job, queued_at=None)  # its old place: nobody started it
        else:
            # Running in its scheduler: its agent's next claim re-attaches, at once.
            self.update(job.job_id, agent_lost=True, lease_expires=now)
            self.touch(job.job_id, site=job.spec.site)
            return self.bump(job.job_id, now, rules.NOTE_HANDED_BACK)
        return self.bump(job.job_id, now)

    def mark_agents_lost(self, now: float) -> list[str]:
        lost = self.select(
            lambda j: j.state is State.RUNNING and not j.agent_lost and lapsed(j, now)
        )
        for job in lost:
            self.update(job.job_id, agent_lost=True)
            # The site's waiting claims look again: the agent that lost it may be among them.
            self.touch(job.job_id, site=job.spec.site)
            self.bump(job.job_id, now, rules.NOTE_AGENT_LOST)
        return [j.job_id for j in lost]

    def take_lease(
        self, job_id: str, agent_id: str, lease_ttl: float, now: float, *, reattach: bool
    ) -> JobRecord:
        job = self.must_load(job_id)
        self.update(job_id, state=State.RUNNING if reattach else State.CLAIMED,
                    lease_epoch=job.lease_epoch + 1, lease_expires=now + lease_ttl,
                    agent_id=agent_id, agent_lost=False)  # fmt: skip
        return self.bump(job_id, now)

    def renew(self, job: JobRecord, lease_ttl: float, now: float) -> JobRecord:
        renewed = self.update(job.job_id, lease_expires=now + lease_ttl, agent_lost=False)
        if job.agent_lost:
            return self.bump(job.job_id, now)  # the agent is back: visible in the document
        return renewed


def takes(command: str, commands: frozenset[str] | None, others: frozenset[str] | None) -> bool:
    """As ``sql_jobs.next_claimable``'s filter: the agent's own, or a command nobody runs."""
    if commands is None or command in commands:
        return True
    return others is not None and command not in others


def lapsed(job: JobRecord, now: float) -> bool:
    return job.lease_expires is not None and job.lease_expires < now


def by_name(results: list[ResultRecord]) -> tuple[ResultRecord, ...]:
    # SQLite returns a job's results ordered by name (byte order of UTF-8 = code point order).
    return tuple(sorted(results, key=lambda r: r.name))
