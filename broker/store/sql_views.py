"""SQL of what operators look at (the console, ``broker.console``) for the SQL backends: each
job's timeline (``job_events``), pages of jobs walked by keyset, and recent failures.

A timeline entry is written by ``record_event`` inside the transaction that changed the job
(``sql_jobs.bump`` calls it after every visible change): only a change of state, or a note
the caller names, adds one. Pages never use OFFSET: the cursor is the (created_at, job_id) of
the last row shown, so page 1,000 costs what page 1 does on the ``jobs_by_*_created``
indexes. Every function runs inside a transaction or snapshot ``SQLStore`` opened and never
builds SQL text from data.
"""

from __future__ import annotations

import json

from broker.store import rules
from broker.store.records import JobEvent, JobQuery, State
from broker.store.sql_tx import Tx


def record_event(tx: Tx, job_id: str, now: float, note: str | None = None) -> None:
    """A timeline entry for the job's current state, unless that state is already the last
    entry's and no note is given."""
    row = tx.execute("SELECT state, agent_id FROM jobs WHERE job_id = ?", (job_id,)).fetchone()
    if row is None:
        return
    last = tx.execute(
        "SELECT state FROM job_events WHERE job_id = ? ORDER BY seq DESC LIMIT 1", (job_id,)
    ).fetchone()
    if note is None and last is not None and last["state"] == row["state"]:
        return
    tx.execute(
        "INSERT INTO job_events (job_id, at, state, agent_id, note) VALUES (?, ?, ?, ?, ?)",
        (job_id, now, row["state"], row["agent_id"], note),
    )


def load_events(tx: Tx, job_id: str) -> list[JobEvent]:
    rows = tx.execute(
        "SELECT at, state, agent_id, note FROM job_events WHERE job_id = ? ORDER BY seq",
        (job_id,),
    ).fetchall()
    return [JobEvent(r["at"], State(r["state"]), r["agent_id"], r["note"]) for r in rows]


# Each filter is "(CAST(? AS type) IS NULL OR column op ?)": PostgreSQL needs a type for a
# parameter only tested for NULL; the text stays constant, so it is prepared once.
_PAGE = (
    "SELECT job_id FROM jobs WHERE (CAST(? AS TEXT) IS NULL OR site = ?)"
    " AND (CAST(? AS TEXT) IS NULL OR state = ?)"
    " AND (CAST(? AS TEXT) IS NULL OR client = ?)"
    " AND (CAST(? AS TEXT) IS NULL OR command = ?)"
    " AND (CAST(? AS DOUBLE PRECISION) IS NULL OR created_at >= ?)"
    " AND (CAST(? AS DOUBLE PRECISION) IS NULL OR created_at < ?)"
    " AND (CAST(? AS DOUBLE PRECISION) IS NULL OR created_at < ?"
    " OR (created_at = ? AND job_id < ?))"
    " ORDER BY created_at DESC, job_id DESC LIMIT ?"
)


def page_ids(tx: Tx, query: JobQuery, limit: int) -> list[str]:
    state = None if query.state is None else query.state.value
    at, last_id = query.before if query.before is not None else (None, None)
    rows = tx.execute(
        _PAGE,
        (
            query.site, query.site, state, state, query.client, query.client,
            query.command, query.command, query.since, query.since, query.until, query.until,
            at, at, at, last_id, limit,
        ),
    ).fetchall()  # fmt: skip
    return [str(row["job_id"]) for row in rows]


def failures_since(tx: Tx, since: float) -> dict[str, int]:
    """Jobs of each site that ended at or after ``since`` without success."""
    rows = tx.execute(
        "SELECT site, state, outcome FROM jobs WHERE finished_at IS NOT NULL AND finished_at >= ?",
        (since,),
    ).fetchall()
    failed: dict[str, int] = {}
    for row in rows:
        outcome = json.loads(row["outcome"]) if row["outcome"] is not None else None
        if rules.is_failure(State(row["state"]), outcome):
            failed[row["site"]] = failed.get(row["site"], 0) + 1
    return failed


def token_used(tx: Tx, token_id: str, now: float) -> None:
    tx.execute("UPDATE tokens SET last_used = ? WHERE token_id = ?", (now, token_id))
