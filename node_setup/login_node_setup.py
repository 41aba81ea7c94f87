"""``setup site --login-host``: a site whose scheduler runs on a cluster's login node.

Setup asks the login node's sshd for its host keys (a bare key exchange, nothing trusted),
prints their fingerprints, and pins one in ``<config dir>/known_hosts_login`` only when
``--login-fingerprint`` matches it (or, interactively, the admin confirms it): the same rule
as ``setup add-site`` on the bridge node. The ``[scheduler]`` keys it owns are
``login_host``, ``login_port``, ``login_identity_file`` and ``login_known_hosts``; every
other key of that table is the admin's and stays as it is.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import tomlkit
from tomlkit.items import Table

from bridge.core.errors import BridgeError
from bridge.site.config.login_table import TARGET
from node_setup import host_keys
from node_setup.config_files import read_text
from node_setup.errors import MissingValue, SetupError
from node_setup.host_key_pinning import HostPort, pin_step
from node_setup.prompt import Prompter
from node_setup.site_layout import SiteOptions
from node_setup.site_templates import toml_str

KEY_TIMEOUT = 10.0  # seconds for the login node's sshd to answer a key exchange
KNOWN_HOSTS_NAME = "known_hosts_login"
OWNED_KEYS = ("login_host", "login_port", "login_identity_file", "login_known_hosts")


@dataclass(frozen=True)
class LoginSetup:
    target: str  # user@host or host, as [scheduler] login_host
    port: int | None
    identity_file: str | None
    known_hosts: str  # the pin file's path
    known_hosts_text: str  # its content with the confirmed key pinned

    def keys(self) -> dict[str, str | int]:
        """The ``[scheduler]`` keys setup writes, in the order a reader expects them."""
        found: dict[str, str | int] = {"login_host": self.target}
        if self.port is not None:
            found["login_port"] = self.port
        if self.identity_file:
            found["login_identity_file"] = self.identity_file
        found["login_known_hosts"] = self.known_hosts
        return found


def login_setup(options: SiteOptions, config_dir: str, prompter: Prompter) -> LoginSetup | None:
    """The login node's settings with its key confirmed; None without ``--login-host``."""
    if not options.login_host:
        given = [flag for flag, value in _login_flags(options) if value]
        if given:
            raise SetupError(f"{given[0]} needs --login-host, e.g. --login-host login.example.org")
        return None
    if options.scheduler in (None, "local"):
        raise MissingValue(
            "--login-host needs --scheduler slurm, torque or pbspro: the scheduler whose "
            "commands run on the login node"
        )
    target = _target(options.login_host, options.login_user)
    host = target.rpartition("@")[2]
    port = options.login_port or 22
    identity = _identity(options.login_identity_file)
    known_hosts = os.path.join(config_dir, KNOWN_HOSTS_NAME)
    connect = host_keys.tcp_socket(host, port, KEY_TIMEOUT)
    wanted = options.login_fingerprint
    try:
        if not wanted and not prompter.interactive:
            raise _fingerprint_needed(host, port, connect)
        text = pin_step(
            read_text(known_hosts) or "", HostPort(None, host, port), wanted,
            "--login-fingerprint", connect, KEY_TIMEOUT, prompter,
        )  # fmt: skip
    except MissingValue:
        raise
    except BridgeError as exc:
        raise SetupError(f"login node {host} port {port}: {exc}") from exc
    return LoginSetup(target, options.login_port, identity, known_hosts, text)


def _login_flags(options: SiteOptions) -> list[tuple[str, object]]:
    return [
        ("--login-user", options.login_user),
        ("--login-port", options.login_port),
        ("--login-identity-file", options.login_identity_file),
        ("--login-fingerprint", options.login_fingerprint),
    ]


def _target(host: str, user: str | None) -> str:
    target = f"{user}@{host}" if user and "@" not in host else host
    if user and "@" in host:
        raise SetupError(f"--login-host {host!r:.80} names a user already; drop --login-user")
    if not TARGET.fullmatch(target):
        raise SetupError(
            f"--login-host {target!r:.80} is not a host name or user@host, e.g. "
            "--login-host login.cluster.example --login-user mint"
        )
    return target


def _identity(path: str | None) -> str | None:
    if not path:
        return None
    full = os.path.abspath(os.path.expanduser(path))
    if not os.path.isfile(full):
        raise SetupError(
            f"--login-identity-file {path}: no such file; create the key with "
            f"ssh-keygen -t ed25519 -f {full} and add {full}.pub to the login node's "
            "~/.ssh/authorized_keys"
        )
    return full


def _fingerprint_needed(host: str, port: int, connect: host_keys.SockFactory) -> MissingValue:
    """The refusal to pin an unconfirmed key, with what the login node offers and the flag
    that confirms it: the admin compares it with what the cluster publishes, then reruns."""
    offered: dict[str, str] = {}
    for key_type in host_keys.KEY_TYPES:
        key = host_keys.fetch_key(connect, key_type, KEY_TIMEOUT)
        if key is not None:
            offered.setdefault(key.fingerprint, key.type)
    if not offered:
        return MissingValue(f"the login node {host} port {port} offered no host key")
    shown = ", ".join(f"{kind} {fp}" for fp, kind in offered.items())
    first = next(iter(offered))
    return MissingValue(
        f"the host key of login node {host} port {port} is pinned only once you confirm it; "
        f"it offers {shown}. Compare with the fingerprint the cluster's admins publish, then "
        f"run the same setup command again with --login-fingerprint {first}"
    )


def render_scheduler_table(login: LoginSetup) -> str:
    """The ``[scheduler]`` table of a new site config."""
    lines = [
        "",
        "# --- the cluster's login node: sbatch/qsub and friends run there over SSH ----------",
        "[scheduler]",
    ]
    lines += [f"{key} = {_toml(value)}" for key, value in login.keys().items()]
    lines.append("shared_workdir = true   # work_base has the same path on the login node")
    return "\n".join(lines) + "\n"


def update_scheduler_table(path: str, text: str, login: LoginSetup) -> str:
    """``text`` (the admin's config) with the login keys setup owns set, nothing else."""
    doc = tomlkit.parse(text)
    table = doc.get("scheduler")
    if table is None:
        return text.rstrip("\n") + "\n" + render_scheduler_table(login)
    if not isinstance(table, Table):
        raise SetupError(f"{path}: scheduler is not a table; make it [scheduler] or remove it")
    keys = login.keys()
    for key in OWNED_KEYS:
        if key in keys:
            table[key] = keys[key]
        elif key in table and key != "login_known_hosts":
            del table[key]  # given before, not now: the default applies again
    return tomlkit.dumps(doc)


def _toml(value: str | int) -> str:
    return str(value) if isinstance(value, int) else toml_str(value)
