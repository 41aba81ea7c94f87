"""The ``mint-bridge`` command. Kept thin: each subcommand calls library functions."""

from __future__ import annotations

import importlib
import logging
import os
import signal
import sys
from types import FrameType
from typing import Any, ClassVar, NoReturn

import click

from bridge import __version__, launcher
from bridge.core.errors import BridgeError, Cancelled, ConfigError, ExitCode

log = logging.getLogger("bridge")
_CLICK_USAGE = 2  # click.UsageError's own exit code


def _fail(exc: BridgeError) -> NoReturn:
    click.echo(f"mint-bridge: error: {exc}", err=True)
    sys.exit(int(exc.exit_code))


def _raise_cancelled(signum: int, frame: FrameType | None) -> None:
    # Restore defaults so a second signal (PBS's SIGKILL follows anyway) is not swallowed.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    raise Cancelled(f"stopped by signal {signal.Signals(signum).name}; job cancelled at the site")


def _setup_stderr_logging(verbose: int) -> None:
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    handler = logging.StreamHandler(sys.stderr)
    # The handler's own level too: the job log lets INFO records through the "bridge" logger.
    handler.setLevel(level)
    handler.setFormatter(logging.Formatter("mint-bridge: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(level)
    logging.getLogger("paramiko").setLevel(logging.WARNING if verbose < 3 else logging.DEBUG)


class _LazyGroup(click.Group):
    """Subcommands from other packages, imported only when used.

    ``site serve-ssh`` runs once per SSH connection; importing Flask and gunicorn for it
    would add their start-up time to every job.
    """

    def main(self, *args: Any, **kwargs: Any) -> NoReturn:
        """click's main, except that a usage error exits 64 (``ExitCode.USAGE``), as the
        README documents, not click's 2; an error that set its own code (health's 3) keeps
        it. ``--help`` and ``--version`` still exit 0."""
        kwargs["standalone_mode"] = False
        try:
            result = super().main(*args, **kwargs)
        except click.UsageError as exc:
            exc.show()
            sys.exit(int(ExitCode.USAGE) if exc.exit_code == _CLICK_USAGE else exc.exit_code)
        except click.ClickException as exc:
            exc.show()
            sys.exit(exc.exit_code)
        except click.Abort:
            click.echo("Aborted!", err=True)
            sys.exit(1)
        # Without standalone mode click returns the code of a ctx.exit(), else the result.
        sys.exit(result if isinstance(result, int) else 0)

    lazy: ClassVar[dict[str, tuple[str, str]]] = {
        "broker": ("broker.cli", "cli"),
        "setup": ("node_setup.cli", "setup"),
        "health": ("node_setup.health.command", "health"),
        "sites": ("node_setup.health.command", "sites"),
        "jobs": ("bridge.client.jobs_command", "jobs"),
    }

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted([*super().list_commands(ctx), *self.lazy])

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.lazy:
            return super().get_command(ctx, cmd_name)
        module_name, attribute = self.lazy[cmd_name]
        command = getattr(importlib.import_module(module_name), attribute, None)
        return command if isinstance(command, click.Command) else None


@click.group(cls=_LazyGroup)
@click.version_option(__version__, prog_name="mint-bridge")
def main() -> None:
    """Run MInt workflow steps on external computers, over SSH or through a broker."""


@main.group()
def examples() -> None:
    """The example configs, sample site and module that ship with mint-bridge."""


@examples.command("copy")
@click.argument("directory", metavar="DIR")
def examples_copy(directory: str) -> None:
    """Copy the examples into DIR (new or empty), to edit and run from there."""
    from bridge.client.examples import copy_examples

    try:
        target = copy_examples(directory)
    except BridgeError as exc:
        _fail(exc)
    click.echo(f"copied the examples to {target}")
    click.echo(f"reference configs: {target}/site.toml, {target}/bridge.toml, {target}/broker.toml")
    click.echo(f"the sample site: {target}/kousoku/site.toml (its programs are next to it)")


@main.command()
@click.option("--site", "site_name", required=True, help="Site name from the bridge config.")
@click.option("--command", "command", required=True, help="Command name the site defines.")
@click.option("-i", "--input", "inputs", multiple=True, help="Input file to send (repeatable).")
@click.option("-p", "--param", "params", multiple=True, help="Parameter NAME=VALUE (repeatable).")
@click.option("-o", "--output-dir", default=".", show_default=True, help="Where results land.")
@click.option("--config", "config_path", default=None, help="Bridge config (TOML).")
@click.option("--job-id", default=None, help="Job id to use (UUID4); default: a new one.")
@click.option("--walltime", default=None, help="Upper bound for the job's walltime, e.g. 2h.")
@click.option(
    "--timeout",
    default=None,
    help="Give up (and cancel the job) after this long; default: the MInt job's remaining "
    "walltime under PBS, else the bridge config's timeout.",
)
@click.option(
    "--no-pbs-walltime",
    is_flag=True,
    help="Do not bound the job's walltime by the MInt PBS job's remaining walltime.",
)
@click.option("-v", "--verbose", count=True, help="More progress messages (repeatable).")
@click.option(
    "--progress",
    "progress_mode",
    type=click.Choice(["auto", "bar", "lines", "none"]),
    default="auto",
    show_default=True,
    help="Progress of big files: a bar on a terminal, lines in a log (auto picks).",
)
@click.option("-q", "--quiet", is_flag=True, help="Only warnings and errors on stderr.")
@click.option(
    "--json", "as_json", is_flag=True, help="End with a one-line JSON summary on stdout."
)
def run(
    site_name: str,
    command: str,
    inputs: tuple[str, ...],
    params: tuple[str, ...],
    output_dir: str,
    config_path: str | None,
    job_id: str | None,
    walltime: str | None,
    timeout: str | None,
    no_pbs_walltime: bool,
    verbose: int,
    progress_mode: str,
    quiet: bool,
    as_json: bool,
) -> None:
    """Run COMMAND at SITE with the given inputs; results land in the output dir.

    Exits with the solver's exit code, or with one of the documented bridge codes.
    """
    _setup_stderr_logging(verbose)
    from bridge.client.run import RunDisplay, run_command

    signal.signal(signal.SIGTERM, _raise_cancelled)
    signal.signal(signal.SIGINT, _raise_cancelled)
    try:
        code = run_command(
            config_path=config_path,
            site_name=site_name,
            command=command,
            inputs=list(inputs),
            params=list(params),
            output_dir=output_dir,
            job_id=job_id,
            walltime=walltime,
            timeout=timeout,
            use_pbs_walltime=not no_pbs_walltime,
            show=RunDisplay(progress=progress_mode, quiet=quiet, json=as_json),
        )
    except BridgeError as exc:
        _fail(exc)
    launcher.exit_now(code)


@main.command()
@click.option("-o", "--output-dir", default=None, help="Where to put the module dirs.")
@click.option(
    "--path",
    "paths",
    type=click.Choice(["local", "broker"]),
    multiple=True,
    default=("local", "broker"),
    show_default=True,
    help="Which way to run the sample (repeatable).",
)
def demo(output_dir: str | None, paths: tuple[str, ...]) -> None:
    """Run the sample fatigue job end to end on this machine: local method, then broker."""
    _setup_stderr_logging(0)
    from bridge.client.demo import run_demo

    signal.signal(signal.SIGTERM, _raise_cancelled)
    try:
        sys.exit(run_demo(output_dir, paths))
    except BridgeError as exc:
        _fail(exc)


@main.group()
def compat() -> None:
    """Drop-in entry points with the original MInt scripts' argument forms."""


@compat.command("execute-remote-command", context_settings={"ignore_unknown_options": True})
@click.argument("arguments", nargs=-1, type=click.UNPROCESSED)
def execute_remote_command(arguments: tuple[str, ...]) -> None:
    """Like execute_remote_command.sample.py: client_name:H client_cmd:P client_files:A,B."""
    _setup_stderr_logging(0)
    from bridge.client.legacy.execute_remote_command import main as compat_main

    signal.signal(signal.SIGTERM, _raise_cancelled)
    sys.exit(compat_main(list(arguments)))


@compat.command("mi-system-wf", context_settings={"ignore_unknown_options": True})
@click.argument("arguments", nargs=-1, type=click.UNPROCESSED)
def mi_system_wf(arguments: tuple[str, ...]) -> None:
    """Like mi-system-wf.py: URL SITE TOKEN COMMAND in1:in2 out1:out2 [PARAMS]."""
    _setup_stderr_logging(0)
    from bridge.client.legacy.mi_system_wf import main as compat_main

    signal.signal(signal.SIGTERM, _raise_cancelled)
    sys.exit(compat_main(list(arguments)))


@main.group()
def site() -> None:
    """Commands that run at a site."""


def _release_commands() -> None:
    from bridge.release_cli import held_command, reject_command, release_command

    for command in (release_command, reject_command, held_command):
        site.add_command(command)


_release_commands()


@site.command("serve-ssh")
@click.option("--config", "config_path", required=True, help="Site config (TOML).")
def serve_ssh(config_path: str) -> None:
    """The forced command for MInt's key in authorized_keys: serves one protocol request."""
    launcher.serve_ssh(config_path)  # the console script serves this one without click


@site.command("cleanup")
@click.option("--config", "config_path", required=True, help="Site config (TOML).")
@click.option("--dry-run", is_flag=True, help="List what would be removed; remove nothing.")
def cleanup(config_path: str, dry_run: bool) -> None:
    """Remove work dirs whose retention time has passed."""
    _setup_stderr_logging(1)
    from bridge.site.cleanup import remove_expired
    from bridge.site.config import load_site_config

    try:
        removed = remove_expired(load_site_config(config_path), dry_run=dry_run)
    except BridgeError as exc:
        _fail(exc)
    verb = "would remove" if dry_run else "removed"
    for path in removed:
        click.echo(f"{verb} {path}")
    click.echo(f"{len(removed)} work dir(s) {verb}")


@site.group("audit")
def audit() -> None:
    """The site's audit log: what left this site, for which job, to whom."""


def _audit_dir(config_path: str | None, directory: str | None) -> str:
    if directory:
        return directory
    if not config_path:
        raise click.UsageError("give --config SITE_TOML (its [site] audit_dir) or --dir DIR")
    from bridge.site.config import load_site_config

    try:
        return load_site_config(config_path).audit_dir
    except BridgeError as exc:
        _fail(exc)


_AUDIT_OPTIONS = (
    click.option("--config", "config_path", default=None, help="Site config (TOML)."),
    click.option("--dir", "directory", default=None, help="Audit dir (instead of --config)."),
)


def _audit_options(command: Any) -> Any:
    for option in reversed(_AUDIT_OPTIONS):
        command = option(command)
    return command


@audit.command("verify")
@_audit_options
def audit_verify(config_path: str | None, directory: str | None) -> None:
    """Check the hash chain across every file; exit 1 at the first broken line."""
    from bridge.site.audit_verify import verify

    audit_dir = _audit_dir(config_path, directory)
    report = verify(audit_dir)
    if report.files == 0:
        click.echo(f"no audit log in {audit_dir}: nothing recorded yet, or its files were removed")
        sys.exit(1)
    if report.broken is not None:
        click.echo(f"audit log BROKEN at {report.broken.describe()}")
        click.echo(f"{report.lines} line(s) before it are intact; nothing after it was checked")
        sys.exit(1)
    click.echo(
        f"audit log OK: {report.lines} line(s) in {report.files} file(s), seq 1..{report.last_seq}"
        f", last {report.last_hash}"
    )


@audit.command("show")
@_audit_options
@click.option("--job", default=None, help="Only this job id.")
@click.option("--since", default=None, help="From this UTC date or time (YYYY-MM-DD[THH:MM]).")
@click.option("--format", "output", type=click.Choice(["table", "json"]), default="table",
              show_default=True)  # fmt: skip
@click.option("--all", "every_event", is_flag=True, help="Every event, not only result files.")
def audit_show(
    config_path: str | None,
    directory: str | None,
    job: str | None,
    since: str | None,
    output: str,
    every_event: bool,
) -> None:
    """Which files left this site (and which were withheld): job, size, SHA-256, to whom."""
    from bridge.site import audit_show as show

    try:
        since_ts = show.parse_since(since)
    except BridgeError as exc:
        _fail(exc)
    chosen = show.select(_audit_dir(config_path, directory), job, since_ts, every_event)
    click.echo(show.as_json(chosen.entries) if output == "json" else show.as_table(chosen.entries))
    if chosen.unreadable:
        click.echo(
            f"mint-bridge: {chosen.unreadable} line(s) are not JSON and were left out; run "
            "`mint-bridge site audit verify`",
            err=True,
        )
@site.command("index-private")
@click.option("--config", "config_path", required=True, help="Site config (TOML).")
def index_private(config_path: str) -> None:
    """Build or refresh the SHA-256 index of [egress] private_dirs (only changed files are
    read); with deny_private = true a result identical to an indexed file is withheld."""
    _setup_stderr_logging(0)
    from bridge.site.config import load_site_config
    from bridge.site.private_index import refresh

    try:
        policy = load_site_config(config_path).egress
        if not policy.private_dirs:
            raise ConfigError(
                f"{config_path}: [egress] has no private_dirs; add e.g. private_dirs = "
                '["~/misrc_remote_workflow/input_data"]',
                field="egress.private_dirs",
            )
        missing = [d for d in policy.private_dirs if not os.path.isdir(d)]
        if missing:
            raise ConfigError(
                f"{config_path}: [egress] private_dirs names {missing[0]}, which is not a "
                "directory; create it or correct the path",
                field="egress.private_dirs",
            )
        done = refresh(policy.private_dirs, policy.private_index)
    except BridgeError as exc:
        _fail(exc)
    click.echo(
        f"{len(done.index.entries)} private file(s) indexed in {policy.private_index}: "
        f"{done.hashed} hashed, {done.kept} unchanged, {done.removed} removed"
    )
    for path in done.unreadable:
        click.echo(f"not readable, not indexed: {path}", err=True)
    sys.exit(1 if done.unreadable else 0)


@main.command()
@click.option("--config", "config_path", required=True, help="Site config (TOML) with [agent].")
@click.option("--log-format", type=click.Choice(["text", "json"]), default="text",
              show_default=True, help="Log lines on stderr as text or one JSON object each.")
def agent(config_path: str, log_format: str) -> None:
    """Pull jobs from the broker and run them at this site (stops on SIGTERM)."""
    from bridge.site.agent import run_agent

    sys.exit(run_agent(config_path, log_format=log_format))


if __name__ == "__main__":
    main()

__all__ = ["ExitCode", "main"]
