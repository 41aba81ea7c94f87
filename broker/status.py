"""What is going on at a broker, as plain data: sites and their agents and queues, job rows and
a job's details.

The operator commands (``mint-bridge broker jobs|sites``), ``/metrics`` and any page that shows
the same things read through these functions, so each figure is computed one way. They take a
``Store`` and the time, not a running broker: the commands open the store directly.

An agent counts as online while it was seen within ``agent_absent_after``, counted from the
broker's start at the earliest (``broker.sites``); a reader without a running broker passes no
start and gets the plain last-seen rule.

This module never writes to the store and never returns a token or a token hash.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from broker.store import AgentSeen, JobEvent, JobRecord, Scope, State, Store


@dataclass(frozen=True)
class AgentStatus:
    site: str
    agent_id: str
    last_seen: float
    online: bool


@dataclass(frozen=True)
class SiteStatus:
    site: str
    registered: bool  # has an active site token: an agent can act for it
    agents: tuple[AgentStatus, ...]
    queued: int = 0
    claimed: int = 0
    running: int = 0
    oldest_queued_at: float | None = None

    @property
    def agents_online(self) -> int:
        return sum(1 for agent in self.agents if agent.online)

    @property
    def last_seen(self) -> float | None:
        return max((agent.last_seen for agent in self.agents), default=None)

    def oldest_wait(self, now: float) -> float | None:
        """Seconds the oldest queued job has waited, None when none is queued."""
        return None if self.oldest_queued_at is None else max(0.0, now - self.oldest_queued_at)


def agent_online(seen: AgentSeen, now: float, absent_after: float, since: float = 0.0) -> bool:
    return max(seen.last_seen, since) + absent_after > now


def site_statuses(
    store: Store, *, now: float, absent_after: float, since: float = 0.0
) -> list[SiteStatus]:
    """Every site with a site token, a job waiting or held, or an agent seen; sorted by name."""
    registered = {
        t.subject
        for t in store.list_tokens()
        if t.scope is Scope.SITE and not t.revoked and not t.expired(now)
    }
    agents: dict[str, list[AgentStatus]] = {}
    for seen in store.agents_seen():
        online = agent_online(seen, now, absent_after, since)
        agents.setdefault(seen.site, []).append(
            AgentStatus(seen.site, seen.agent_id, seen.last_seen, online)
        )
    queues = {stats.site: stats for stats in store.queue_stats()}
    names = sorted(registered | set(agents) | set(queues))
    statuses = []
    for name in names:
        stats = queues.get(name)
        statuses.append(SiteStatus(
            name,
            name in registered,
            tuple(agents.get(name, ())),
            queued=stats.queued if stats else 0,
            claimed=stats.claimed if stats else 0,
            running=stats.running if stats else 0,
            oldest_queued_at=stats.oldest_queued_at if stats else None,
        ))  # fmt: skip
    return statuses


def site_document(status: SiteStatus, now: float) -> dict[str, Any]:
    return {
        "site": status.site,
        "registered": status.registered,
        "agents_online": status.agents_online,
        "last_seen": status.last_seen,
        "queued": status.queued,
        "claimed": status.claimed,
        "running": status.running,
        "oldest_queued_at": status.oldest_queued_at,
        "oldest_wait": status.oldest_wait(now),
        "agents": [
            {"agent_id": a.agent_id, "last_seen": a.last_seen, "online": a.online}
            for a in status.agents
        ],
    }


def list_jobs(
    store: Store,
    *,
    site: str | None = None,
    state: State | None = None,
    since: float | None = None,
    limit: int = 50,
) -> list[JobRecord]:
    """The newest ``limit`` jobs matching the filters; ``since``: created at or after it."""
    jobs = store.list_jobs(site=site, state=state, limit=limit)
    # Newest first: the jobs created since the cut-off are a prefix of the list, so filtering
    # after the limit still gives the newest ``limit`` of them.
    return jobs if since is None else [job for job in jobs if job.created_at >= since]


def exit_of(job: JobRecord) -> tuple[int | None, str]:
    """The job's exit code and reason as its outcome says, ``(None, "")`` before it ended."""
    outcome = job.outcome or {}
    code = outcome.get("exit_code")
    reason = outcome.get("reason")
    return (code if isinstance(code, int) else None), (reason if isinstance(reason, str) else "")


def job_row(job: JobRecord, now: float) -> dict[str, Any]:
    """One line of a job list."""
    code, reason = exit_of(job)
    end = job.finished_at if job.finished_at is not None else now
    return {
        "job_id": job.job_id,
        "site": job.spec.site,
        "client": job.spec.client,
        "command": job.spec.command,
        "state": job.state.value,
        "created_at": job.created_at,
        "finished_at": job.finished_at,
        "duration": max(0.0, end - job.created_at),
        "exit_code": code,
        "reason": reason,
    }


def job_detail(job: JobRecord, events: Sequence[JobEvent] = ()) -> dict[str, Any]:
    """Everything the store knows about one job: its document and its times, lease, agent,
    the size and SHA-256 of every input and result, and ``timeline``: every state change and
    note of ``events`` (``Store.job_events``), oldest first, with its time and agent."""
    detail = job.document()
    detail["timeline"] = [
        {"event": e.state.value, "at": e.at, "agent_id": e.agent_id, "note": e.note}
        for e in events
    ]
    detail["queued_at"] = job.queued_at
    detail["finished_at"] = job.finished_at
    detail["lease"] = {"epoch": job.lease_epoch, "expires": job.lease_expires}
    detail["exit_code"], detail["reason"] = exit_of(job)
    # Results still being uploaded are shown too, with the bytes received so far.
    detail["results"] = [
        {"name": r.name, "size": r.size, "sha256": r.sha256, "received": r.received,
         "listed": r.listed}
        for r in job.results
    ]  # fmt: skip
    return detail
