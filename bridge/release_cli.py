"""``mint-bridge site release|reject|held``: a site operator's decision on held results.

Click commands only; what they do is ``bridge.site.release``'s.
"""

from __future__ import annotations

import sys
from typing import NoReturn

import click

from bridge.core.errors import BridgeError
from bridge.core.text_table import render_table

_CONFIG = click.option("--config", "config_path", required=True, help="Site config (TOML).")


def _fail(exc: BridgeError) -> NoReturn:
    click.echo(f"mint-bridge: error: {exc.message}", err=True)
    sys.exit(int(exc.exit_code))


@click.command("release")
@_CONFIG
@click.argument("job_id", required=False)
@click.option("--list", "listing", is_flag=True, help="List held jobs (as `site held`).")
def release_command(config_path: str, job_id: str | None, listing: bool) -> None:
    """Let a held job's results leave the site (they go when the bridge is connected)."""
    if listing or job_id is None:
        if not listing:
            raise click.UsageError("give the JOB to release, or --list to see held jobs")
        _list(config_path)
        return
    _decide(config_path, job_id, "released", "")


@click.command("reject")
@_CONFIG
@click.argument("job_id")
@click.option("--reason", required=True, help="Why; the bridge side is told this text.")
def reject_command(config_path: str, job_id: str, reason: str) -> None:
    """Keep a held job's results at the site for good; the job ends with exit 91."""
    if not reason.strip():
        raise click.UsageError("--reason must say why the results may not leave")
    _decide(config_path, job_id, "rejected", reason.strip())


@click.command("held")
@_CONFIG
def held_command(config_path: str) -> None:
    """List the jobs whose results wait for release, with what would leave."""
    _list(config_path)


def _decide(config_path: str, job_id: str, verdict: str, reason: str) -> None:
    from bridge.core.job import check_job_id
    from bridge.site import release
    from bridge.site.config import load_site_config

    try:
        by = release.decide(load_site_config(config_path), check_job_id(job_id), verdict, reason)
    except BridgeError as exc:
        _fail(exc)
    click.echo(f"{job_id}: {verdict} by {by} (recorded in the audit log)")


def _list(config_path: str) -> None:
    from bridge.site import release
    from bridge.site.config import load_site_config

    try:
        held = release.held_jobs(load_site_config(config_path))
    except BridgeError as exc:
        _fail(exc)
    rows = []
    for job in held:
        for entry in job.record.get("files", []):
            rows.append([job.job_id, job.record.get("command", ""), "leaves", entry["name"],
                         str(entry["size"]), entry["sha256"]])  # fmt: skip
        for entry in job.record.get("withheld", []):
            rows.append([job.job_id, job.record.get("command", ""), "withheld", entry["name"],
                         str(entry.get("size")), f"rule {entry.get('rule')}"])  # fmt: skip
    if rows:
        click.echo(render_table(["JOB", "COMMAND", "WHAT", "FILE", "SIZE", "SHA-256 / RULE"],
                                rows))  # fmt: skip
    click.echo(f"{len(held)} job(s) awaiting release")
