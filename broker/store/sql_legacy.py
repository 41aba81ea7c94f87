"""SQL of the original API's records (``legacy_jobs``) for the SQL backends (SQLite,
PostgreSQL).

One row per job that the original API created or handed to an original poller; it goes with
the job (``ON DELETE CASCADE``), so retention removes both. Runs inside the store's one
transaction (``broker.store.sql_tx.Tx``), together with the job's own changes; the table is
made by each backend's schema module.

This module never builds SQL from data (only ``?`` parameters) and never decides policy: who
may act on a job is checked by the API before it gets here.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from broker.store.records import LegacyRecord
from broker.store.sql_tx import Tx


def insert(tx: Tx, job_id: str, calc_info: Mapping[str, Any]) -> None:
    tx.execute(
        "INSERT INTO legacy_jobs (job_id, calc_info) VALUES (?, ?)",
        (job_id, json.dumps(dict(calc_info), ensure_ascii=False)),
    )


def load(tx: Tx, job_id: str) -> LegacyRecord | None:
    row = tx.execute("SELECT * FROM legacy_jobs WHERE job_id = ?", (job_id,)).fetchone()
    if row is None:
        return None
    types = json.loads(row["result_types"])
    return LegacyRecord(
        job_id=row["job_id"],
        calc_info=json.loads(row["calc_info"]),
        progress=row["progress"],
        status=row["status"],
        poller=row["poller"],
        epoch=row["epoch"],
        result_types={name: (str(pair[0]), str(pair[1])) for name, pair in types.items()},
    )


def take(tx: Tx, job_id: str, calc_info: Mapping[str, Any], poller: str, epoch: int,
         progress: str) -> None:  # fmt: skip
    """A poller's new claim: its progress starts over, nothing of an earlier claim is kept."""
    if load(tx, job_id) is None:
        insert(tx, job_id, calc_info)
    tx.execute(
        "UPDATE legacy_jobs SET progress = ?, status = NULL, poller = ?, epoch = ?,"
        " result_types = '{}' WHERE job_id = ?",
        (progress, poller, epoch, job_id),
    )


def advance(
    tx: Tx,
    job_id: str,
    progress: str,
    status: str | None,
    result_types: Mapping[str, tuple[str, str]] | None,
) -> None:
    tx.execute(
        "UPDATE legacy_jobs SET progress = ?, status = COALESCE(?, status),"
        " result_types = COALESCE(?, result_types) WHERE job_id = ?",
        (
            progress,
            status,
            None if result_types is None else json.dumps(
                {name: list(pair) for name, pair in result_types.items()}, ensure_ascii=False
            ),
            job_id,
        ),
    )


def queued_ids(tx: Tx, site: str, state: str, limit: int) -> list[str]:
    rows = tx.execute(
        "SELECT job_id FROM jobs WHERE site = ? AND state = ? ORDER BY queued_at, rowid LIMIT ?",
        (site, state, limit),
    ).fetchall()
    return [str(row["job_id"]) for row in rows]
