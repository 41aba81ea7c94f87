"""The job list's filters and keyset cursor, read from a query string into a ``JobQuery``.

Every value is checked before it reaches the store, and a bad one is named with its fix
(``InvalidField`` with the field). Times are UTC, as the console writes them: ``2026-12-01``,
``2026-12-01T08:30`` or ``2026-12-01 08:30:15``. The cursor is the (created_at, job_id) of the
last job of the page before, written ``<created_at>_<job_id>``.
"""

from __future__ import annotations

import datetime
import math
from collections.abc import Mapping

from bridge.core.errors import BridgeError
from bridge.core.job import check_job_id
from broker.auth import SUBJECT_NAME
from broker.errors import InvalidField
from broker.store import JobQuery, JobRecord
from broker.validation import MAX_COMMAND_LENGTH, query_state, text

FILTER_KEYS = ("site", "state", "client", "command", "since", "until")


def _name(args: Mapping[str, str], key: str) -> str | None:
    value = args.get(key, "").strip()
    return text(value, key, 64, pattern=SUBJECT_NAME) if value else None


def _command(args: Mapping[str, str]) -> str | None:
    value = args.get("command", "").strip()
    if not value:
        return None
    command = text(value, "command", MAX_COMMAND_LENGTH)
    if any(ord(c) < 32 or ord(c) == 127 for c in command):
        raise InvalidField("command must not contain control characters", field="command")
    return command


def parse_time(value: str, field: str) -> float:
    try:
        moment = datetime.datetime.fromisoformat(value.strip())
    except ValueError:
        raise InvalidField(
            f"{field} {value!r:.40} is not a time; write it in UTC as 2026-12-01 or "
            "2026-12-01T08:30",
            field=field,
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.UTC)
    return moment.timestamp()


def _time(args: Mapping[str, str], key: str) -> float | None:
    value = args.get(key, "").strip()
    return parse_time(value, key) if value else None


def parse_cursor(value: str) -> tuple[float, str]:
    stamp, _, job_id = value.partition("_")
    try:
        created = float(stamp)
        if not math.isfinite(created):
            raise ValueError(stamp)
        check_job_id(job_id)
    except (ValueError, BridgeError):
        raise InvalidField(
            "before is not a page cursor; use the Next link of the jobs page", field="before"
        ) from None
    return created, job_id


def cursor_of(job: JobRecord) -> str:
    return f"{job.created_at!r}_{job.job_id}"


def job_query(args: Mapping[str, str]) -> JobQuery:
    before = args.get("before", "").strip()
    query = JobQuery(
        site=_name(args, "site"),
        state=query_state(args),
        client=_name(args, "client"),
        command=_command(args),
        since=_time(args, "since"),
        until=_time(args, "until"),
        before=parse_cursor(before) if before else None,
    )
    if query.since is not None and query.until is not None and query.since >= query.until:
        raise InvalidField("since must be earlier than until", field="since")
    return query


def filter_args(args: Mapping[str, str]) -> dict[str, str]:
    """The filters as given (for the form and the Next link), without the cursor."""
    return {key: args[key] for key in FILTER_KEYS if args.get(key, "").strip()}
