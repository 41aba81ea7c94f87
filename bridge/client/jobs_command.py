"""``mint-bridge jobs list|show``: the jobs ``mint-bridge run`` ran from this bridge node.

Reads the per-job logs (``$MINT_BRIDGE_LOG_DIR``, else ``~/.local/state/mint-bridge/jobs``)
through ``bridge.client.job_history``; needs no site and no broker. A table for people,
``--json`` for scripts. This module never writes to the log directory.
"""

from __future__ import annotations

import json
import sys
import time

import click

from bridge.client.job_history import JobEntry, read_entry, read_history, read_log
from bridge.client.job_log import log_dir
from bridge.core.errors import BridgeError
from bridge.core.job import check_job_id
from bridge.core.text_table import local_time, render_table, seconds_text
from bridge.core.units import parse_duration

_DIR = click.option("--log-dir", "log_dir_path", default=None,
                    help="Where the job logs are (default: $MINT_BRIDGE_LOG_DIR, else "
                         "~/.local/state/mint-bridge/jobs).")  # fmt: skip
_JSON = click.option("--json", "as_json", is_flag=True,
                     help="One JSON document instead of a table.")  # fmt: skip


# What ``mint-bridge run`` logs while the site holds the job's results for release.
_AWAITING = ": awaiting release: "


@click.group()
def jobs() -> None:
    """The jobs this bridge node ran (from the per-job logs of mint-bridge run)."""


def _exit_text(entry: JobEntry) -> str:
    if entry.exit_code is not None:
        return str(entry.exit_code)
    return "-" if entry.ended_at is not None else "running?"


@jobs.command("list")
@click.option("--site", help="Only jobs at this site.")
@click.option("--since", help="Only jobs started within this long (2h, 7d).")
@click.option("--limit", type=click.IntRange(1), default=50, show_default=True,
              help="At most this many jobs, newest first.")  # fmt: skip
@_DIR
@_JSON
def jobs_list(site: str | None, since: str | None, limit: int, log_dir_path: str | None,
              as_json: bool) -> None:  # fmt: skip
    """Job id, site, command, start, end, exit code and reason; newest first."""
    cutoff = None
    if since is not None:
        try:
            cutoff = time.time() - parse_duration(since)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--since") from exc
    entries = [
        e for e in read_history(log_dir_path or log_dir())
        if (site is None or e.site == site)
        and (cutoff is None or (e.started_at is not None and e.started_at >= cutoff))
    ][:limit]  # fmt: skip
    if as_json:
        click.echo(json.dumps({"jobs": [e.document() for e in entries]}, indent=2))
        return
    rows = [[e.job_id, e.site or "-", e.command or "-", local_time(e.started_at),
             local_time(e.ended_at), seconds_text(e.duration), _exit_text(e), e.reason or "-"]
            for e in entries]  # fmt: skip
    click.echo(render_table(["JOB", "SITE", "COMMAND", "STARTED", "ENDED", "DURATION", "EXIT",
                             "REASON"], rows))  # fmt: skip


@jobs.command("show")
@click.argument("job")
@_DIR
@_JSON
def jobs_show(job: str, log_dir_path: str | None, as_json: bool) -> None:
    """One job's summary and its log."""
    try:
        job_id = check_job_id(job)
    except BridgeError as exc:
        raise click.BadParameter(f"{job!r} is not a job id (a UUID4)", param_hint="JOB") from exc
    directory = log_dir_path or log_dir()
    entry = read_entry(directory, job_id)
    if entry is None:
        click.echo(f"mint-bridge: error: no log of job {job_id} in {directory}", err=True)
        sys.exit(1)
    text = read_log(entry)
    exit_text = f"{_exit_text(entry)}  {entry.reason or ''}".rstrip()
    if entry.exit_code is None and entry.ended_at is None and _AWAITING in text:
        # The run is waiting for the site's manual release (its log says so, and what to run).
        exit_text = (f"awaiting release: a site operator must run `mint-bridge site release "
                     f"{job_id}` at site {entry.site or '-'}")  # fmt: skip
    if as_json:
        click.echo(json.dumps({**entry.document(), "log_text": text}, indent=2))
        return
    click.echo("\n".join([
        f"job       {entry.job_id}",
        f"site      {entry.site or '-'}",
        f"command   {entry.command or '-'}",
        f"started   {local_time(entry.started_at)}",
        f"ended     {local_time(entry.ended_at)}",
        f"exit      {exit_text}",
        f"results   {entry.output_dir or '-'}",
        f"log       {entry.log or '-'}",
        "",
    ]))  # fmt: skip
    click.echo(text, nl=False)

