"""Command line of setup and health: the ``setup`` group, ``health`` and ``sites test``.

``mint-bridge`` attaches both; ``python -m node_setup.cli`` runs them on their own. Kept thin:
each command builds options and calls the library. Tokens are read from stdin or a file,
never taken as an argument (argv is visible to every user of the machine in ``ps``).
"""

from __future__ import annotations

import os
import sys
from typing import Any

import click

from bridge import __version__
from bridge.core.errors import BridgeError
from node_setup import bridge_setup, site_setup
from node_setup.console import configure_logging, fail, prompter_for
from node_setup.health.command import health, sites
from node_setup.site_layout import SiteOptions


@click.group()
@click.version_option(__version__, prog_name="mint-bridge")
def cli() -> None:
    """Set up sites and the bridge node; check their health."""


# --- setup ------------------------------------------------------------------------------------


@cli.group()
def setup() -> None:
    """Set up a site (site admin) or the bridge node (MInt's admin)."""


@setup.command("site")
@click.option("--site-id", required=True, help="The site's name, e.g. rme-u-tokyo.")
@click.option("--method", type=click.Choice(["ssh", "broker"]), default="ssh", show_default=True)
@click.option(
    "--scheduler",
    type=click.Choice(["local", "slurm", "torque", "pbspro"]),
    default=None,
    help="Default: the one found on PATH, else local.",
)
@click.option("--mint-ip", default=None, help="IP (or CIDR) of MInt's bridge node (SSH).")
@click.option("--mint-key", default=None, help="MInt's public key file, *.pub (SSH).")
@click.option(
    "--ssh-port",
    type=click.IntRange(1, 65535),
    default=22,
    show_default=True,
    help="Port of this host's sshd that MInt reaches; its host keys are the ones printed (SSH).",
)
@click.option("--broker-url", default=None, help="The broker's https:// URL (broker).")
@click.option("--token-stdin", is_flag=True, help="Read the agent token from stdin (broker).")
@click.option("--token-file", default=None, help="Read the agent token from this file (broker).")
@click.option("--ca-bundle", default=None, help="CA bundle for the broker's certificate.")
@click.option("--allow-http", is_flag=True, help="Allow http:// to a broker on this machine.")
@click.option("--work-base", default="/tmp", show_default=True, help="Where job dirs go.")
@click.option("--config-dir", default="~/.config/mint-bridge", show_default=True)
@click.option(
    "--site-dir",
    default="~/mint-site",
    show_default=True,
    help="Holds programs/ and private/ (the site's private data).",
)
@click.option("--state-dir", default="~/.local/state/mint-bridge", show_default=True)
@click.option("--authorized-keys", default="~/.ssh/authorized_keys", show_default=True)
@click.option(
    "--unit-dir",
    default=None,
    help="Where the systemd unit goes (default: /etc/systemd/system as root, else the config dir).",
)
@click.option(
    "--mint-bridge",
    "mint_bridge",
    default=None,
    help="Absolute path of mint-bridge at this site (default: this installation's).",
)
@click.option("--agent-user", default=None, help="Account the agent runs as (default: you).")
@click.option(
    "--login-host",
    default=None,
    help="The cluster's login node (host or user@host): the scheduler's commands run there.",
)
@click.option("--login-user", default=None, help="Account on the login node (with --login-host).")
@click.option("--login-port", type=click.IntRange(1, 65535), default=None,
              help="The login node's SSH port (default 22).")  # fmt: skip
@click.option(
    "--login-identity-file", default=None, help="Key for the login node (default: ~/.ssh/config's)."
)
@click.option(
    "--login-fingerprint",
    default=None,
    help="SHA256:... of the login node's host key, as the cluster publishes it; pinned only then.",
)
@click.option("--yes", "-y", is_flag=True, help="Never ask; take every value from flags.")
@click.option("--force", is_flag=True, help="Replace existing files that differ.")
@click.option("--dry-run", is_flag=True, help="Show every change; change nothing.")
@click.option("-v", "--verbose", count=True)
def setup_site_command(**kw: Any) -> None:
    """Prepare this computer as a site: layout, site config, MInt's access."""
    configure_logging(kw.pop("verbose"))
    yes = kw.pop("yes")
    token = _read_token(kw.pop("token_stdin"), kw.pop("token_file"))
    options = SiteOptions(token=token, **kw)
    try:
        site_setup.setup_site(options, prompter_for(yes))
    except BridgeError as exc:
        fail(exc)


@setup.command("broker-unit")
@click.option("--config", "config_path", required=True, help="The broker's broker.toml.")
@click.option("--user", default=None, help="Account the broker runs as (default: you).")
@click.option("--unit-dir", default="/etc/systemd/system", show_default=True)
@click.option("--mint-bridge", "mint_bridge", default=None,
              help="Absolute path of mint-bridge (default: this installation's).")  # fmt: skip
@click.option("--dry-run", is_flag=True, help="Show the unit; change nothing.")
def setup_broker_unit_command(
    config_path: str, user: str | None, unit_dir: str, mint_bridge: str | None, dry_run: bool
) -> None:
    """Write the broker's systemd unit (KillMode=control-group), checked with systemd."""
    import pwd

    from node_setup import broker_unit, changes, systemd
    from node_setup.detect import find_mint_bridge
    from node_setup.errors import SetupError

    try:
        program = mint_bridge or find_mint_bridge()
        if not program:
            raise SetupError("mint-bridge is not found; pass --mint-bridge /path/to/mint-bridge")
        plan, path = broker_unit.plan_broker_unit(
            config_path, user or pwd.getpwuid(os.getuid()).pw_name, unit_dir, program
        )
        steps = plan.review(force=False)
        for line in changes.describe(steps, dry_run):
            click.echo(line)
        unit = next(c for c in plan.changes if isinstance(c, changes.WriteFile))
        outcome = systemd.verify_texts({broker_unit.UNIT_NAME: unit.content})
        if outcome is not None and not outcome.ok:
            raise SetupError(
                "systemd-analyze verify rejects the unit: " + "; ".join(outcome.problems)
            )
        if dry_run:
            click.echo("dry run: nothing was changed")
            return
        changes.apply(steps)
        click.echo(
            f"next: systemctl daemon-reload && systemctl enable --now {broker_unit.UNIT_NAME}"
            + (
                ""
                if unit_dir == "/etc/systemd/system"
                else f" (after copying {path} to /etc/systemd/system/)"
            )
        )
    except BridgeError as exc:
        fail(exc)


def _read_token(from_stdin: bool, path: str | None) -> str | None:
    if from_stdin and path:
        raise click.UsageError("give the token with --token-stdin or --token-file, not both")
    try:
        if from_stdin and sys.stdin.isatty():  # typed by a person: never echo it
            return str(click.prompt("Agent token", hide_input=True, err=True)).strip() or None
        if from_stdin:
            return sys.stdin.readline(4096).strip() or None
        if path:
            with open(os.path.expanduser(path), encoding="utf-8") as handle:
                return handle.readline(4096).strip() or None
    except (OSError, UnicodeDecodeError) as exc:
        raise click.UsageError(f"cannot read the token: {exc}") from exc
    return None


def _bridge_paths(kw: dict[str, Any]) -> bridge_setup.BridgePaths:
    return bridge_setup.BridgePaths(
        config=kw.pop("config_path"),
        key=kw.pop("key"),
        known_hosts=kw.pop("known_hosts"),
        ssh_config=kw.pop("ssh_config"),
    )


def _bridge_path_options(func: Any) -> Any:
    func = click.option(
        "--config",
        "config_path",
        default=os.environ.get("MINT_BRIDGE_CONFIG") or bridge_setup.BridgePaths.config,
        show_default=True,
    )(func)
    func = click.option(
        "--key",
        default=bridge_setup.BridgePaths.key,
        show_default=True,
        help="The bridge's SSH key (private; .pub next to it).",
    )(func)
    func = click.option(
        "--known-hosts",
        default=bridge_setup.BridgePaths.known_hosts,
        show_default=True,
        help="Where host keys are pinned.",
    )(func)
    return click.option(
        "--ssh-config",
        default=bridge_setup.BridgePaths.ssh_config,
        show_default=True,
        help="mint-bridge's own SSH config (jump hosts).",
    )(func)


@setup.command("bridge-node")
@_bridge_path_options
@click.option("--yes", "-y", is_flag=True, help="Never ask.")
@click.option("--dry-run", is_flag=True, help="Show every change; change nothing.")
@click.option("-v", "--verbose", count=True)
def setup_bridge_node_command(**kw: Any) -> None:
    """Create the bridge config (if missing) and a dedicated ed25519 key."""
    configure_logging(kw.pop("verbose"))
    paths = _bridge_paths(kw)
    try:
        bridge_setup.setup_bridge_node(paths, prompter_for(kw["yes"]), dry_run=kw["dry_run"])
    except BridgeError as exc:
        fail(exc)


@setup.command("add-site")
@click.argument("name")
@click.option("--ssh", default=None, help="[USER@]HOST[:PORT] of the site's sshd.")
@click.option("--user", default=None, help="Account at the site (default: SSH's).")
@click.option("--jump", default=None, help="[USER@]HOST[:PORT] of a jump host.")
@click.option("--fingerprint", default=None, help="SHA256:... the site admin gave you.")
@click.option("--jump-fingerprint", default=None, help="SHA256:... of the jump host.")
@click.option(
    "--client",
    type=click.Choice(bridge_setup.SSH_CLIENTS),
    default=None,
    help="SSH client for jobs: the system's ssh (openssh; the default where ssh is on PATH) "
    "or in-process paramiko.",
)
@click.option("--broker", default=None, help="https:// URL of the broker (a pull site).")
@click.option("--token-file", default=None, help="File (0600) with this bridge's client token.")
@click.option("--ca-bundle", default=None, help="CA bundle for the broker's certificate.")
@click.option("--allow-http", is_flag=True, help="Allow http:// to a broker on this machine.")
@click.option("--broker-site", default=None, help="The site's name at the broker.")
@click.option("--timeout", default=bridge_setup.FETCH_TIMEOUT, type=float, show_default=True)
@_bridge_path_options
@click.option("--yes", "-y", is_flag=True, help="Never ask.")
@click.option("--force", is_flag=True, help="Replace a different entry for this site.")
@click.option("--dry-run", is_flag=True, help="Show every change; change nothing.")
@click.option("-v", "--verbose", count=True)
def add_site_command(**kw: Any) -> None:
    """Record site NAME: pin its host key (checked against --fingerprint) or its broker."""
    configure_logging(kw.pop("verbose"))
    paths = _bridge_paths(kw)
    yes = kw.pop("yes")
    options = bridge_setup.AddSiteOptions(paths=paths, **kw)
    try:
        bridge_setup.add_site(options, prompter_for(yes))
    except BridgeError as exc:
        fail(exc)


@setup.command("pin-host-key")
@click.argument("name")
@click.option("--fingerprint", default=None, help="SHA256:... the site admin gave you.")
@click.option("--jump", is_flag=True, help="Pin the site's first jump host instead.")
@click.option("--config", "config_path", default=None, help="Bridge config (TOML).")
@click.option("--timeout", default=bridge_setup.FETCH_TIMEOUT, type=float, show_default=True)
@click.option("--yes", "-y", is_flag=True, help="Never ask.")
@click.option("--dry-run", is_flag=True, help="Show every change; change nothing.")
@click.option("-v", "--verbose", count=True)
def pin_host_key_command(**kw: Any) -> None:
    """Re-pin the host key of site NAME (checked against --fingerprint); nothing else changes."""
    configure_logging(kw.pop("verbose"))
    try:
        bridge_setup.pin_host_key(
            kw["name"],
            kw["fingerprint"],
            prompter_for(kw["yes"]),
            config_path=kw["config_path"],
            jump=kw["jump"],
            timeout=kw["timeout"],
            dry_run=kw["dry_run"],
        )
    except BridgeError as exc:
        fail(exc)


cli.add_command(health)
cli.add_command(sites)


if __name__ == "__main__":
    cli()
