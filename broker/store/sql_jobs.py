"""SQL of the jobs (``jobs``, ``inputs``, ``results``, ``agents``) for the SQL backends: row
mapping and the small steps their methods share.

Written once in the SQL that SQLite and PostgreSQL both speak; the statements that lock rows
come from the transaction's ``Dialect`` (``broker.store.sql_tx``), the tables from each
backend's schema module (``sqlite_schema``, ``postgres_schema``). Every function here runs
inside a transaction or snapshot that ``SQLStore`` opened; none opens, commits or rolls back
one itself, and none builds SQL text from data. Whether a change is allowed is asked of
``broker.store.rules``, never decided here.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Sequence
from typing import Any

from broker.errors import NotFound
from broker.store import rules, sql_views
from broker.store.records import (
    InputRecord,
    InputSpec,
    JobRecord,
    NewJob,
    QueueStats,
    ResultRecord,
    State,
)
from broker.store.sql_tx import Row, Tx

_LOG_UPDATES = {
    "stdout": "UPDATE jobs SET stdout_size = ? WHERE job_id = ?",
    "stderr": "UPDATE jobs SET stderr_size = ? WHERE job_id = ?",
}


def insert_job(tx: Tx, spec: NewJob, now: float) -> bool:
    """False (and nothing written) when the id exists: the caller decides what that means.

    Insert first, look later: on PostgreSQL a second transaction creating the same id waits
    here for the first to commit and then sees its job, as SQLite's one writer would."""
    cursor = tx.execute(
        "INSERT INTO jobs (job_id, client, site, command, params, metadata, walltime_limit,"
        " state, version, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, 1, ?, ?)"
        " ON CONFLICT (job_id) DO NOTHING",
        (
            spec.job_id,
            spec.client,
            spec.site,
            spec.command,
            json.dumps(dict(spec.params)),
            json.dumps(dict(spec.metadata)),
            spec.walltime_limit,
            State.CREATED.value,
            now,
            now,
        ),
    )
    if cursor.rowcount != 1:
        return False
    for position, item in enumerate(spec.inputs):
        # An empty input has nothing to upload: received (0) == size makes it complete.
        tx.execute(
            "INSERT INTO inputs (job_id, position, name, size, sha256, mode, received)"
            " VALUES (?, ?, ?, ?, ?, ?, 0)",
            (spec.job_id, position, item.name, item.size, item.sha256, item.mode),
        )
    sql_views.record_event(tx, spec.job_id, now)
    tx.touch(spec.job_id)
    return True


def load_job(tx: Tx, job_id: str) -> JobRecord | None:
    # A write locks the row it reads: what it decides on cannot change before it commits.
    sql = tx.dialect.lock_job if tx.writing else "SELECT * FROM jobs WHERE job_id = ?"
    row = tx.execute(sql, (job_id,)).fetchone()
    if row is None:
        return None
    inputs = tx.execute(
        "SELECT * FROM inputs WHERE job_id = ? ORDER BY position", (job_id,)
    ).fetchall()
    results = tx.execute("SELECT * FROM results WHERE job_id = ? ORDER BY name", (job_id,))
    return _job(row, inputs, results.fetchall())


def must_load(tx: Tx, job_id: str) -> JobRecord:
    job = load_job(tx, job_id)
    if job is None:
        raise rules.job_not_found(job_id)
    return job


def _job(row: Row, inputs: Sequence[Row], results: Sequence[Row]) -> JobRecord:
    spec = NewJob(
        job_id=row["job_id"],
        client=row["client"],
        site=row["site"],
        command=row["command"],
        params=json.loads(row["params"]),
        inputs=tuple(InputSpec(i["name"], i["size"], i["sha256"], i["mode"]) for i in inputs),
        metadata=json.loads(row["metadata"]),
        walltime_limit=row["walltime_limit"],
    )
    return JobRecord(
        spec=spec,
        state=State(row["state"]),
        version=row["version"],
        inputs=tuple(
            InputRecord(i["name"], i["size"], i["sha256"], i["mode"], i["received"])
            for i in inputs
        ),
        results=tuple(
            ResultRecord(
                r["name"], r["size"], r["sha256"], r["received"], r["mode"], bool(r["listed"])
            )
            for r in results
        ),
        outcome=json.loads(row["outcome"]) if row["outcome"] is not None else None,
        skipped=tuple(json.loads(row["skipped"])),
        logs={"stdout": row["stdout_size"], "stderr": row["stderr_size"]},
        cancel_requested=bool(row["cancel_requested"]),
        agent_lost=bool(row["agent_lost"]),
        agent_id=row["agent_id"],
        native_id=row["native_id"],
        lease_epoch=row["lease_epoch"],
        lease_expires=row["lease_expires"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        queued_at=row["queued_at"],
        finished_at=row["finished_at"],
        acked=bool(row["acked"]),
        results_deleted=bool(row["results_deleted"]),
    )


def select_job_ids(
    tx: Tx, *, client: str | None, site: str | None, state: State | None, limit: int
) -> list[str]:
    state_value = None if state is None else state.value
    rows = tx.execute(
        # CAST: PostgreSQL needs a type for a parameter that is only tested for NULL.
        "SELECT job_id FROM jobs WHERE (CAST(? AS TEXT) IS NULL OR client = ?)"
        " AND (CAST(? AS TEXT) IS NULL OR site = ?)"
        " AND (CAST(? AS TEXT) IS NULL OR state = ?) ORDER BY created_at DESC, rowid DESC LIMIT ?",
        (client, client, site, site, state_value, state_value, limit),
    ).fetchall()
    return [str(row["job_id"]) for row in rows]


def bump(tx: Tx, job_id: str, now: float, note: str | None = None) -> JobRecord:
    """Every visible change goes through here: new version, new timestamp, a timeline entry
    when the state changed (or ``note`` says what happened), listeners told."""
    tx.execute(
        "UPDATE jobs SET version = version + 1, updated_at = ? WHERE job_id = ?", (now, job_id)
    )
    sql_views.record_event(tx, job_id, now, note)
    tx.touch(job_id)
    return must_load(tx, job_id)


def set_state(tx: Tx, job_id: str, state: State, *, queued_at: float | None = None) -> None:
    tx.execute(
        "UPDATE jobs SET state = ?, queued_at = COALESCE(?, queued_at) WHERE job_id = ?",
        (state.value, queued_at, job_id),
    )


def finish(tx: Tx, job_id: str, state: State, outcome: dict[str, Any], now: float) -> None:
    tx.execute(
        "UPDATE jobs SET state = ?, outcome = ?, finished_at = ?, lease_expires = NULL"
        " WHERE job_id = ?",
        (state.value, json.dumps(outcome), now, job_id),
    )


def seen_agent(tx: Tx, site: str, agent_id: str, now: float) -> None:
    tx.execute(
        "INSERT INTO agents (site, agent_id, last_seen) VALUES (?, ?, ?)"
        " ON CONFLICT (site, agent_id) DO UPDATE SET last_seen = excluded.last_seen",
        (site, agent_id, now),
    )


def requeue_expired_claims(tx: Tx, now: float, *, site: str | None) -> tuple[list[str], list[str]]:
    """Claimed jobs whose agent never started them go back to the queue (or end, if a cancel
    was requested meanwhile). Returns (requeued, cancelled)."""
    rows = tx.execute(
        tx.dialect.expired_claims, (State.CLAIMED.value, now, site, site)
    ).fetchall()
    requeued, cancelled = [], []
    for row in rows:
        job_id = row["job_id"]
        if row["cancel_requested"]:
            finish(tx, job_id, State.CANCELLED, rules.abandoned_claim_outcome(), now)
            cancelled.append(job_id)
        else:
            requeue(tx, job_id, row["site"], row["command"], queued_at=now)
            requeued.append(job_id)
        bump(tx, job_id, now)
    return requeued, cancelled


def requeue(tx: Tx, job_id: str, site: str, command: str, *, queued_at: float | None) -> None:
    """A claimed job back in its site's queue, at ``queued_at`` (None: its old place)."""
    tx.execute(
        "UPDATE jobs SET state = ?, queued_at = COALESCE(?, queued_at), agent_id = NULL,"
        " native_id = NULL, lease_expires = NULL WHERE job_id = ?",
        (State.QUEUED.value, queued_at, job_id),
    )
    tx.touch(job_id, site=site, command=command)


def release(tx: Tx, job: JobRecord, now: float) -> JobRecord:
    """What ``Store.release_claim`` writes for a job its holder hands back."""
    outcome = rules.release_outcome(job)
    if outcome is not None:
        finish(tx, job.job_id, State.CANCELLED, outcome, now)
    elif job.state is State.CLAIMED:
        # Its old place: the job waited that long already and nobody started it.
        requeue(tx, job.job_id, job.spec.site, job.spec.command, queued_at=None)
    else:
        # Running in its scheduler: only its agent can follow it; that agent's next claim
        # re-attaches (see next_claimable), as after a lapsed lease, but at once.
        tx.execute(
            "UPDATE jobs SET agent_lost = 1, lease_expires = ? WHERE job_id = ?",
            (now, job.job_id),
        )
        tx.touch(job.job_id, site=job.spec.site)
        return bump(tx, job.job_id, now, rules.NOTE_HANDED_BACK)
    return bump(tx, job.job_id, now)


def mark_agents_lost(tx: Tx, now: float) -> list[str]:
    rows = tx.execute(tx.dialect.lapsed_running, (State.RUNNING.value, now)).fetchall()
    for row in rows:
        tx.execute("UPDATE jobs SET agent_lost = 1 WHERE job_id = ?", (row["job_id"],))
        # The site's waiting claims look again: the agent that lost it may be among them.
        tx.touch(row["job_id"], site=row["site"])
        bump(tx, row["job_id"], now, rules.NOTE_AGENT_LOST)
    return [str(row["job_id"]) for row in rows]


def expire_waiting(tx: Tx, now: float, queue_ttl: float) -> list[str]:
    """Jobs nobody took (queued) or the client left (created) for longer than the queue TTL."""
    # The same test as ``rules.waited_too_long``, in SQL so that it uses the queue index.
    rows = tx.execute(
        tx.dialect.waited_too_long,
        (State.QUEUED.value, now - queue_ttl, State.CREATED.value, now - queue_ttl),
    ).fetchall()
    for row in rows:
        outcome = rules.expiry_outcome(must_load(tx, row["job_id"]), queue_ttl)
        finish(tx, row["job_id"], State.EXPIRED, outcome, now)
        bump(tx, row["job_id"], now)
    return [str(row["job_id"]) for row in rows]


def next_claimable(
    tx: Tx,
    site: str,
    agent_id: str,
    now: float,
    commands: Collection[str] | None,
    others: Collection[str] | None = None,
) -> tuple[str | None, bool]:
    """(job id, reattach): a running job this agent lost comes back before new work (of any
    command: the agent took it once); new work only of ``commands`` (None: any), or of a
    command nobody runs (in neither list) once ``others`` is given."""
    lost = tx.execute(
        tx.dialect.next_lost, (site, State.RUNNING.value, agent_id, now)
    ).fetchone()
    if lost is not None:
        return str(lost["job_id"]), True
    # One parameter whatever the number of commands (a JSON array): the SQL text stays fixed.
    wanted = None if commands is None else json.dumps(sorted(commands))
    elsewhere = None if others is None else json.dumps(sorted(others))
    params = (site, State.QUEUED.value, wanted, wanted, elsewhere, elsewhere)
    queued = tx.execute(tx.dialect.next_queued, params).fetchone()
    return (str(queued["job_id"]), False) if queued is not None else (None, False)


def take_lease(
    tx: Tx, job_id: str, agent_id: str, lease_ttl: float, now: float, *, reattach: bool
) -> JobRecord:
    state = State.RUNNING if reattach else State.CLAIMED
    tx.execute(
        "UPDATE jobs SET state = ?, lease_epoch = lease_epoch + 1, lease_expires = ?,"
        " agent_id = ?, agent_lost = 0 WHERE job_id = ?",
        (state.value, now + lease_ttl, agent_id, job_id),
    )
    return bump(tx, job_id, now)


def held_job(tx: Tx, job_id: str, epoch: int) -> JobRecord:
    """The job if the agent presenting ``epoch`` holds its lease now."""
    return rules.check_held(must_load(tx, job_id), epoch)


def renew(tx: Tx, job: JobRecord, lease_ttl: float, now: float) -> JobRecord:
    tx.execute(
        "UPDATE jobs SET lease_expires = ?, agent_lost = 0 WHERE job_id = ?",
        (now + lease_ttl, job.job_id),
    )
    if job.agent_lost:
        return bump(tx, job.job_id, now)  # the agent is back: visible in the document
    return must_load(tx, job.job_id)


def log_update(stream: str) -> str:
    try:
        return _LOG_UPDATES[stream]
    except KeyError:
        raise NotFound(f"no log stream {stream!r}; use stdout or stderr") from None


def upsert_result(tx: Tx, job_id: str, result: ResultRecord) -> None:
    tx.execute(
        "INSERT INTO results (job_id, name, size, sha256, received, mode, listed)"
        " VALUES (?, ?, ?, ?, ?, ?, 0) ON CONFLICT (job_id, name) DO UPDATE SET"
        " size = excluded.size, sha256 = excluded.sha256, received = excluded.received",
        (job_id, result.name, result.size, result.sha256, result.received, result.mode),
    )


def list_results(tx: Tx, job_id: str, results: Sequence[ResultRecord]) -> None:
    for result in results:
        tx.execute(
            "UPDATE results SET listed = 1, mode = ? WHERE job_id = ? AND name = ?",
            (result.mode, job_id, result.name),
        )


def queue_stats(tx: Tx) -> list[QueueStats]:
    rows = tx.execute(
        "SELECT site, SUM(CASE WHEN state = 'queued' THEN 1 ELSE 0 END) AS queued,"
        " MIN(CASE WHEN state = 'queued' THEN queued_at END) AS oldest,"
        " SUM(CASE WHEN state = 'claimed' THEN 1 ELSE 0 END) AS claimed,"
        " SUM(CASE WHEN state = 'running' THEN 1 ELSE 0 END) AS running"
        " FROM jobs WHERE state IN ('queued', 'claimed', 'running') GROUP BY site ORDER BY site"
    ).fetchall()
    return [
        QueueStats(r["site"], r["queued"], r["oldest"], r["claimed"], r["running"]) for r in rows
    ]
