"""The ``broker`` command group: ``serve``, ``migrate``, ``copy-store``,
``token create|list|revoke``, ``import-ini``, and ``jobs`` and ``sites`` (``broker.operator_cli``).

Attached to ``mint-bridge`` as ``mint-bridge broker ...``; also runs as ``python -m
broker.cli``. A new token is printed once on stdout and only its SHA-256 is stored; this
module never prints or logs a stored token hash or a token other than the one just made.
"""

from __future__ import annotations

import logging
import os
import sys
import time

import click

from bridge.core.log_format import LOG_FORMATS, TEXT, formatter
from broker import token_expiry
from broker.auth import check_subject, new_token
from broker.cli_common import CONFIG_OPTION as _CONFIG
from broker.cli_common import open_store as _open_store
from broker.cli_common import run_reporting as _run
from broker.config import load_config
from broker.errors import InvalidField
from broker.operator_cli import jobs, sites
from broker.store import Scope
from broker.store.locations import migrate as migrate_store


def _setup_logging(verbose: int, log_format: str = TEXT) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter(log_format, "%(asctime)s [%(levelname)s] %(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if verbose else logging.INFO)


@click.group(name="broker")
def cli() -> None:
    """The HTTPS broker between MInt and sites that open no inbound port."""


@cli.command()
@_CONFIG
@click.option("-v", "--verbose", count=True, help="Debug logging.")
@click.option("--log-format", type=click.Choice(LOG_FORMATS), default=None,
              help="Log lines as text or as one JSON object each (default: [logging] format "
              "of the config, else text).")  # fmt: skip
def serve(config_path: str, verbose: int, log_format: str | None) -> None:
    """Run the broker (gunicorn, one worker, many threads) until SIGTERM."""
    from dataclasses import replace

    from broker.serve import serve as run_server

    def start() -> None:
        config = load_config(config_path)
        if log_format is not None:
            config = replace(config, log_format=log_format)
        _setup_logging(verbose, config.log_format)
        run_server(config)

    _run(start)


@cli.command()
@_CONFIG
def migrate(config_path: str) -> None:
    """Bring the store's schema to this broker's version (safe to repeat).

    A PostgreSQL store needs it before the first serve and after each upgrade; SQLite migrates
    as it opens. A schema newer than this broker is refused.
    """

    def run() -> None:
        config = load_config(config_path)
        if config.store_location is None:
            os.makedirs(config.data_dir, mode=0o700, exist_ok=True)
        before, after = migrate_store(config.store)
        shown = config.store.shown
        if before == after:
            click.echo(f"{shown}: schema version {after}, nothing to migrate", err=True)
        else:
            click.echo(f"{shown}: schema version {before} -> {after}", err=True)

    _run(run)


@cli.command("copy-store")
@click.option("--from", "source_url", required=True, metavar="URL",
              help="The store to copy: sqlite:///PATH or postgresql://USER@HOST:PORT/DB.")
@click.option("--to", "target_url", required=True, metavar="URL",
              help="The store to fill: empty, and migrated (PostgreSQL) to this broker's schema.")
@click.option("--replace", is_flag=True,
              help="Delete every row the target holds first (else a non-empty target is "
              "refused).")  # fmt: skip
def copy_store_command(source_url: str, target_url: str, replace: bool) -> None:
    """Copy every job, token, legacy job and timeline from one store to another.

    Stop the brokers of both stores first. The jobs' bytes stay in [storage] data_dir: point
    the new broker.toml's store at the target and keep its data_dir.
    """
    from broker.store.copy import copy_store
    from broker.store.locations import open_store, parse_store_url

    def run() -> None:
        locations = []
        for option, url in (("--from", source_url), ("--to", target_url)):
            try:
                locations.append(parse_store_url(url))
            except ValueError as exc:
                raise InvalidField(f"{option}: {exc}", field=option) from exc
        if locations[0].shown == locations[1].shown:
            raise InvalidField("--from and --to name the same store", field="--to")
        source = open_store(locations[0], pool_size=1)
        try:
            target = open_store(locations[1], pool_size=1)
            try:
                report = copy_store(source, target, replace=replace)
            finally:
                target.close()
        finally:
            source.close()
        click.echo(f"{locations[0].shown} -> {locations[1].shown}: copied {report.line()}",
                   err=True)  # fmt: skip

    _run(run)


@cli.group()
def token() -> None:
    """Create, list and revoke API tokens."""


@token.command("create")
@click.option("--site", help="A site's agent token for this site name.")
@click.option("--client", help="A client token for this client name (e.g. ssh-node01).")
@click.option("--admin", is_flag=True, help="An admin token.")
@click.option("--operator", help="A read-only operator token (/metrics) for this name, e.g. "
              "prometheus.")  # fmt: skip
@click.option("--expires", help="When the token stops working: a duration from now (30d, 12h) "
              "or a UTC date (2027-01-31 or 2027-01-31T12:00:00). Default: never.")  # fmt: skip
@_CONFIG
def token_create(
    site: str | None,
    client: str | None,
    admin: bool,
    operator: str | None,
    expires: str | None,
    config_path: str,
) -> None:
    """Make a token; it is printed once, on stdout, and only its hash is kept."""
    chosen = [(Scope.SITE, site), (Scope.CLIENT, client), (Scope.ADMIN, "admin" if admin else None),
              (Scope.OPERATOR, operator)]  # fmt: skip
    picked = [(scope, name) for scope, name in chosen if name is not None]
    if len(picked) != 1:
        raise click.UsageError(
            "give exactly one of --site NAME, --client NAME, --operator NAME or --admin"
        )
    scope, subject = picked[0]
    try:
        check_subject(scope, subject)
    except InvalidField as exc:
        raise click.BadParameter(exc.message, param_hint=f"--{scope}") from exc
    now = time.time()
    try:
        expires_at = token_expiry.parse_expires(expires, now) if expires is not None else None
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--expires") from exc

    def create() -> None:
        store = _open_store(load_config(config_path))
        text, record = new_token(scope, subject, now, expires_at)
        store.create_token(record)
        store.close()
        click.echo(text)
        click.echo(
            f"token {record.token_id} for {scope} {record.subject} created; it is shown only "
            "once: store it now (e.g. in a file readable only by its user)",
            err=True,
        )

    _run(create)


@token.command("list")
@_CONFIG
def token_list(config_path: str) -> None:
    """Token ids, scopes, subjects and last use (never the tokens or their hashes)."""

    def show() -> None:
        store = _open_store(load_config(config_path))
        for record in store.list_tokens():
            created = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(record.created_at))
            state, expiry = token_expiry.describe(record, time.time())
            used = (
                "never used" if record.last_used is None
                else "used " + time.strftime("%Y-%m-%dT%H:%M", time.localtime(record.last_used))
            )  # fmt: skip
            click.echo(f"{record.token_id}  {record.scope:<8}  {record.subject:<24}  "
                       f"{created}  {state:<8}  {expiry}  {used}")  # fmt: skip
        store.close()

    _run(show)


@token.command("revoke")
@click.argument("token_id")
@_CONFIG
def token_revoke(token_id: str, config_path: str) -> None:
    """Revoke a token by its id; requests with it get 401 from now on."""

    def revoke() -> None:
        store = _open_store(load_config(config_path))
        done = store.revoke_token(token_id, time.time())
        store.close()
        if not done:
            click.echo(f"broker: error: no active token {token_id}", err=True)
            sys.exit(1)
        click.echo(f"token {token_id} revoked", err=True)

    _run(revoke)


@cli.command("import-ini")
@click.argument("ini_path", type=click.Path(dir_okay=False))
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False),
    help="Write the broker config here (default: stdout).",
)
@click.option(
    "--data-dir",
    default="data",
    show_default=True,
    help="[storage] data_dir of the new config (relative to the config file).",
)
@click.option("--cert", default="broker.crt", show_default=True, help="TLS certificate (PEM).")
@click.option(
    "--key", "key_path", default="broker.key", show_default=True, help="TLS private key (PEM)."
)
@click.option("--force", is_flag=True, help="Overwrite --output if it exists.")
def import_ini(ini_path: str, output: str | None, data_dir: str, cert: str, key_path: str,
               force: bool) -> None:  # fmt: skip
    """Turn the original broker's mi_distributed_computing_assist.ini into a broker config.

    [Server] ipaddress/portnumber become [server] host/port; [RemoteSites] and each site's
    commands become the [legacy.sites] whitelist (exact commands), with the original API on.
    """
    from broker.legacy.ini import read_ini, render_toml

    def convert() -> None:
        imported = read_ini(ini_path)
        text = render_toml(imported, data_dir=data_dir, cert=cert, key=key_path,
                           source=os.path.basename(ini_path))  # fmt: skip
        _check_rendered(text)
        for warning in imported.warnings:
            click.echo(f"broker: warning: {warning}", err=True)
        if output is None:
            click.echo(text, nl=False)
            return
        if os.path.exists(output) and not force:
            raise click.UsageError(f"{output} exists; pass --force to overwrite it")
        with open(output, "w", encoding="utf-8") as handle:
            handle.write(text)
        click.echo(f"wrote {output}: {len(imported.sites)} sites for the original API", err=True)

    _run(convert)


def _check_rendered(text: str) -> None:
    """The config we write must load; checked in a scratch dir, before anything is written."""
    import tempfile

    with tempfile.TemporaryDirectory() as scratch:
        path = os.path.join(scratch, "broker.toml")
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(text)
        load_config(path)


cli.add_command(jobs)  # the operator's view, from broker.operator_cli
cli.add_command(sites)


if __name__ == "__main__":
    cli()
