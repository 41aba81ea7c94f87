"""``mint-bridge site audit show``: which files left this site, for which job, to whom, how big,
with which SHA-256 (and which were held back, and why).

By default only ``result_sent`` and ``result_withheld`` lines are shown; ``--all`` shows every
event. ``--since`` takes a UTC date (``2026-12-01``) or time (``2026-12-01T08:00``). Lines
that are not JSON are left out and counted (``audit verify`` says what happened to them).

Never: change a file. This only reads.
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from bridge.core.errors import ConfigError
from bridge.core.text_table import render_table
from bridge.site.audit_chain import read_lines, timestamp

RESULT_EVENTS = frozenset({"result_sent", "result_withheld"})
HEADERS = ("TIME (UTC)", "JOB", "EVENT", "FILE", "SIZE", "SHA-256", "TO / RULE")


@dataclass
class Selection:
    entries: list[dict[str, Any]] = field(default_factory=list)
    unreadable: int = 0


def parse_since(text: str | None) -> str | None:
    """``--since`` as a ``ts`` prefix to compare with (UTC); ConfigError naming the fix."""
    if not text:
        return None
    try:
        moment = datetime.datetime.fromisoformat(text)
    except ValueError as exc:
        raise ConfigError(
            f"--since {text!r:.40} is not a date; use YYYY-MM-DD or YYYY-MM-DDTHH:MM (UTC)",
            field="since",
        ) from exc
    if moment.tzinfo is not None:
        moment = moment.astimezone(datetime.UTC)
    return timestamp(moment.replace(tzinfo=datetime.UTC))


def select(
    directory: str, job: str | None = None, since: str | None = None, every_event: bool = False
) -> Selection:
    chosen = Selection()
    for _path, _number, raw in read_lines(directory):
        try:
            entry = json.loads(raw)
        except ValueError:
            chosen.unreadable += 1
            continue
        if not isinstance(entry, dict):
            chosen.unreadable += 1
        elif _wanted(entry, job, since, every_event):
            chosen.entries.append(entry)
    return chosen


def _wanted(entry: dict[str, Any], job: str | None, since: str | None, every: bool) -> bool:
    if not every and entry.get("event") not in RESULT_EVENTS:
        return False
    if job is not None and entry.get("job") != job:
        return False
    return since is None or str(entry.get("ts", "")) >= since


def as_json(entries: list[dict[str, Any]]) -> str:
    return json.dumps(entries, indent=2, ensure_ascii=False)


def as_table(entries: Iterable[dict[str, Any]]) -> str:
    return render_table(HEADERS, [_row(e) for e in entries])


def _row(entry: dict[str, Any]) -> list[str]:
    event = str(entry.get("event", "?"))
    ts = str(entry.get("ts", ""))[:19].replace("T", " ")
    size = entry.get("size")
    return [
        ts, str(entry.get("job") or "-"), event.removeprefix("result_"),
        str(entry.get("name", "-")), "-" if size is None else str(size),
        str(entry.get("sha256") or "-"), _to_or_rule(entry),
    ]  # fmt: skip


def _to_or_rule(entry: dict[str, Any]) -> str:
    event = entry.get("event")
    if event == "result_withheld":
        return f"withheld: {entry.get('rule', '?')}"
    if event == "result_sent":
        return _whom(entry, str(entry.get("to", "?")))
    if event in ("job_received", "refused"):
        detail = entry.get("command") or entry.get("attempted") or ""
        return f"{_whom(entry, str(entry.get('peer', '?')))} {detail}".strip()
    keys = ("native_id", "state", "exit_code", "by", "reason")
    return " ".join(f"{k}={entry[k]}" for k in keys if entry.get(k) is not None)


def _whom(entry: dict[str, Any], address: str) -> str:
    via = entry.get("via", "?")
    if entry.get("token_id"):
        return f"{via} {address} token {entry['token_id']}"
    if entry.get("key"):
        return f"{via} {address} key {entry['key']}"
    return f"{via} {address}"
