"""The transaction the SQL backends (SQLite, PostgreSQL) hand to their shared SQL modules.

``sql_jobs``, ``sql_tokens`` and ``sql_legacy`` are written once, in the SQL both engines
speak, with ``?`` parameters; they run inside a ``Tx`` and never open, commit or roll back one.
What differs between the engines is kept here as data: ``Dialect`` holds the few statements
that lock rows (PostgreSQL serves many transactions at once and locks the rows it decides on;
SQLite has one writer at a time and needs no lock clause).

A ``Tx`` remembers which jobs and sites changed, so that the store reports them once the
transaction committed. This module never builds SQL from data.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from broker.store.records import Claimable, note_claimable


class Row(Protocol):
    def __getitem__(self, key: str, /) -> Any: ...


class Cursor(Protocol):
    @property
    def rowcount(self) -> int: ...

    def fetchone(self) -> Any: ...

    def fetchall(self) -> Sequence[Any]: ...


@dataclass(frozen=True)
class Dialect:
    """The statements whose text differs between the engines: those that lock what they read.

    Each takes the parameters noted beside it, in the same order on every engine.
    """

    # (job_id): a job row a write goes on to change.
    lock_job: str
    # (site, state running, agent_id, now): the oldest running job this agent lost.
    next_lost: str
    # (site, state queued, commands, commands, others, others): the oldest queued job nobody
    # else is taking right now whose command is in ``commands`` (a JSON array; NULL: any
    # command) or, with ``others`` (a JSON array or NULL), not in ``others`` either.
    next_queued: str
    # (state claimed, now, site, site): claimed jobs whose lease lapsed, with their command.
    expired_claims: str
    # (state running, now): running jobs whose lease lapsed and whose agent is not yet lost.
    lapsed_running: str
    # (state queued, cutoff, state created, cutoff): jobs that waited longer than the TTL.
    waited_too_long: str
    # (token_id): the token of a claim, held so a revoke waits for the claim to commit.
    lock_claimer: str


class Tx(abc.ABC):
    """One open transaction (``writing``) or read snapshot of a SQL backend."""

    def __init__(self, dialect: Dialect, *, writing: bool) -> None:
        self.dialect = dialect
        self.writing = writing
        self.jobs: set[str] = set()
        self.sites: Claimable = {}

    @abc.abstractmethod
    def execute(self, sql: str, params: Sequence[Any] = ()) -> Cursor:
        """Run one statement with ``?`` parameters."""

    def touch(self, job_id: str, site: str | None = None, command: str | None = None) -> None:
        """The job changed; with ``site``, it became claimable there (for ``command``'s
        claims, or for any claim of the site when ``command`` is None)."""
        self.jobs.add(job_id)
        if site is not None:
            note_claimable(self.sites, site, command)
