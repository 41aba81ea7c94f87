"""``mint-bridge broker jobs list|show|cancel`` and ``mint-bridge broker sites``: the operator's
view of the broker, on the broker host, reading the store directly (as ``broker token`` does).

Tables for people, ``--json`` for scripts (one document; fields are only ever added). The
figures come from ``broker.status``, the same functions ``/metrics`` uses. A cancel made here
reaches a waiting client at its next status poll and the agent at its next lease renewal: the
command is not the broker process, so it cannot wake their long polls.

This module never prints a token or a token hash, and changes nothing but the cancel asked for.
"""

from __future__ import annotations

import json
import sys
import time
from datetime import datetime
from typing import Any

import click

from bridge.core.errors import BridgeError
from bridge.core.job import check_job_id
from bridge.core.text_table import local_time, render_table, seconds_text
from bridge.core.units import parse_duration
from broker.cli_common import CONFIG_OPTION as _CONFIG
from broker.cli_common import open_store as _open_store
from broker.cli_common import run_reporting as _run
from broker.config import load_config
from broker.status import job_detail, job_row, list_jobs, site_document, site_statuses
from broker.store import State

_JSON = click.option("--json", "as_json", is_flag=True,
                     help="One JSON document instead of a table.")  # fmt: skip


def _echo_json(document: Any) -> None:
    click.echo(json.dumps(document, indent=2, sort_keys=False))


def _since(value: str | None, now: float) -> float | None:
    """``--since``: a duration back from now (``2h``, ``7d``) or a local date/time."""
    if value is None:
        return None
    try:
        return now - parse_duration(value)
    except ValueError:
        pass
    try:
        return datetime.fromisoformat(value).timestamp()
    except ValueError:
        raise click.BadParameter(
            f"{value!r} is neither a duration (90m, 2h, 7d) nor a date/time (2026-12-01T08:00)",
            param_hint="--since",
        ) from None


@click.group()
def jobs() -> None:
    """List, show and cancel the broker's jobs."""


@jobs.command("list")
@click.option("--site", help="Only jobs of this site.")
@click.option("--state", type=click.Choice([s.value for s in State]),
              help="Only jobs in this state.")  # fmt: skip
@click.option("--since", help="Only jobs created since: a duration back (2h, 7d) or a date/time.")
@click.option("--limit", type=click.IntRange(1, 100_000), default=50, show_default=True,
              help="At most this many jobs, newest first.")  # fmt: skip
@_JSON
@_CONFIG
def jobs_list(site: str | None, state: str | None, since: str | None, limit: int,
              as_json: bool, config_path: str) -> None:  # fmt: skip
    """The newest jobs: id, site, client, command, state, created, duration, exit code."""
    now = time.time()
    cutoff = _since(since, now)

    def show() -> None:
        store = _open_store(load_config(config_path))
        try:
            found = list_jobs(store, site=site, state=State(state) if state else None,
                              since=cutoff, limit=limit)  # fmt: skip
        finally:
            store.close()
        rows = [job_row(job, now) for job in found]
        if as_json:
            _echo_json({"jobs": rows})
            return
        table = [
            [r["job_id"], r["site"], r["client"], r["command"], r["state"],
             local_time(r["created_at"]), seconds_text(r["duration"]),
             "-" if r["exit_code"] is None else str(r["exit_code"]), r["reason"] or "-"]
            for r in rows
        ]  # fmt: skip
        click.echo(render_table(["JOB", "SITE", "CLIENT", "COMMAND", "STATE", "CREATED",
                                 "DURATION", "EXIT", "REASON"], table))  # fmt: skip

    _run(show)


def _job_id(value: str) -> str:
    try:
        return check_job_id(value)
    except BridgeError as exc:
        raise click.BadParameter(f"{value!r} is not a job id (a UUID4)", param_hint="JOB") from exc


@jobs.command("show")
@click.argument("job")
@_JSON
@_CONFIG
def jobs_show(job: str, as_json: bool, config_path: str) -> None:
    """One job: its times, state, lease and agent, inputs and results with SHA-256, exit."""
    job_id = _job_id(job)

    def show() -> None:
        store = _open_store(load_config(config_path))
        try:
            record = store.get_job(job_id)
            events = store.job_events(job_id)
        finally:
            store.close()
        if record is None:
            click.echo(f"broker: error: no job {job_id} (never created, or deleted after its "
                       "retention)", err=True)  # fmt: skip
            sys.exit(1)
        detail = job_detail(record, events)
        if as_json:
            _echo_json(detail)
        else:
            click.echo(_detail_text(detail))

    _run(show)


def _detail_text(d: dict[str, Any]) -> str:
    lines = [
        f"job       {d['job_id']}",
        f"site      {d['site']}",
        f"client    {d['client']}",
        f"command   {d['command']}",
        f"state     {d['state']}" + ("  (cancel requested)" if d["cancel_requested"] else "")
        + ("  (agent lost)" if d["agent_lost"] else ""),
        f"agent     {d['agent_id'] or '-'}" + (f"  native id {d['native_id']}"
                                                if d["native_id"] else ""),
        f"lease     epoch {d['lease']['epoch']}, expires {local_time(d['lease']['expires'])}",
        f"exit      {'-' if d['exit_code'] is None else d['exit_code']}  {d['reason'] or ''}"
        .rstrip(),
        "",
        render_table(["EVENT", "AT", "AGENT", "NOTE"],
                     [[e["event"], local_time(e["at"]), e["agent_id"] or "-", e["note"] or ""]
                      for e in d["timeline"]]),
        "",
    ]  # fmt: skip
    files = [["input", i["name"], str(i["size"]), str(i["received"]), i["sha256"]]
             for i in d["inputs"]]  # fmt: skip
    files += [["result", r["name"], str(r["size"]), str(r["received"]), r["sha256"]]
              for r in d["results"]]  # fmt: skip
    lines.append(render_table(["FILE", "NAME", "SIZE", "RECEIVED", "SHA256"], files)
                 if files else "no input or result files")  # fmt: skip
    return "\n".join(lines)


@jobs.command("cancel")
@click.argument("job")
@_CONFIG
def jobs_cancel(job: str, config_path: str) -> None:
    """Cancel a job: an unclaimed one ends now, a held one is stopped by its agent."""
    job_id = _job_id(job)

    def cancel() -> None:
        store = _open_store(load_config(config_path))
        try:
            if store.get_job(job_id) is None:
                click.echo(f"broker: error: no job {job_id}", err=True)
                sys.exit(1)
            record = store.cancel(job_id, time.time())
        finally:
            store.close()
        if record.state.is_final:
            click.echo(f"job {job_id}: {record.state}")
        else:
            click.echo(f"job {job_id}: cancel requested; its agent stops it at its next lease "
                       "renewal")  # fmt: skip

    _run(cancel)


@click.command("sites")
@_JSON
@_CONFIG
def sites(as_json: bool, config_path: str) -> None:
    """Sites: agents online and last seen, queue depth, oldest waiting job, jobs held."""

    def show() -> None:
        config = load_config(config_path)
        store = _open_store(config)
        now = time.time()
        try:
            statuses = site_statuses(store, now=now, absent_after=config.agent_absent_after)
        finally:
            store.close()
        if as_json:
            _echo_json({"sites": [site_document(s, now) for s in statuses]})
            return
        rows = [
            [s.site, str(s.agents_online), local_time(s.last_seen), str(s.queued),
             seconds_text(s.oldest_wait(now)), str(s.claimed + s.running),
             "yes" if s.registered else "no (no active token)"]
            for s in statuses
        ]  # fmt: skip
        click.echo(render_table(["SITE", "AGENTS", "LAST SEEN", "QUEUED", "OLDEST WAIT",
                                 "HELD", "REGISTERED"], rows))  # fmt: skip

    _run(show)
