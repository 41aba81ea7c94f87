"""``mint-bridge setup bridge-node`` and ``setup add-site``, run by MInt's admin on the bridge node.

``bridge-node`` creates the bridge config if it is missing and a dedicated ed25519 key for
reaching sites (never the admin's personal key), and prints the public key to give to site
admins. ``add-site`` records a site in the bridge config:

- ``--ssh HOST[:PORT] --fingerprint SHA256:...``: the site's host key is fetched without
  authenticating and pinned in mint-bridge's own known_hosts only when its fingerprint is the
  one the site admin gave out of band (interactively, the fingerprint is shown and the admin
  confirms). ``--jump`` reaches the site through a jump host, whose key is pinned the same way.
  ``--client openssh`` has jobs use the system's ``ssh`` instead of paramiko.
- ``--broker URL --token-file F``: a pull site reached through the broker.

An existing site entry that differs is replaced only with ``--force``; the new config is
loaded with the bridge's own loader before it is written.

``pin-host-key NAME --fingerprint SHA256:...`` re-pins the host key of a site already in the
bridge config (a re-installed server), checked the same way; it reads where the site is and
which known_hosts it uses from the site's entry and changes nothing else. ``--jump`` pins the
site's first jump host instead.
"""

from __future__ import annotations

import os
import re
import socket
from dataclasses import dataclass, field
from typing import Any

import psutil
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from bridge.client.node_config import (
    SshSite,
    default_ssh_client,
    find_config,
    load_bridge_config,
)
from bridge.client.transports.paramiko_ssh import (
    resolve,
)
from bridge.core.broker_endpoint import check_broker_url, read_token
from node_setup import changes, config_files, host_keys
from node_setup.errors import MissingValue, SetupError
from node_setup.host_key_pinning import ChainChannels, HostPort, JumpChannels, first_jump, pin_step
from node_setup.prompt import Prompter

SITE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
SSH_CLIENTS = ("paramiko", "openssh")
_OPENSSH_COMMENT = (
    "the system's ssh; jobs share one connection (optional keys: share_connection, "
    "connection_persist, control_dir)"
)
FETCH_TIMEOUT = 15.0  # seconds for one key exchange: as long as the bridge's connect timeout


@dataclass
class BridgePaths:
    config: str = "~/.config/mint-bridge/bridge.toml"
    key: str = "~/.ssh/mint_bridge_ed25519"
    known_hosts: str = "~/.config/mint-bridge/known_hosts"
    ssh_config: str = "~/.config/mint-bridge/ssh_config"

    def expanded(self) -> BridgePaths:
        def full(path: str) -> str:
            return os.path.abspath(os.path.expanduser(path))

        return BridgePaths(
            full(self.config), full(self.key), full(self.known_hosts), full(self.ssh_config)
        )


# --- setup bridge-node ------------------------------------------------------------------------


def setup_bridge_node(
    paths: BridgePaths, prompter: Prompter, *, dry_run: bool = False
) -> list[changes.Step]:
    paths = paths.expanded()
    plan = changes.Plan()
    plan.mkdir(os.path.dirname(paths.config), 0o700)
    plan.mkdir(os.path.dirname(paths.key), 0o700)
    if not os.path.exists(paths.config):
        plan.write(paths.config, config_files.CONFIG_HEADER, 0o600)
    else:
        load_bridge_config(paths.config)  # an existing config is kept, but must be valid
    if not os.path.exists(paths.known_hosts):
        plan.write(paths.known_hosts, "", 0o600)
    public = _plan_key(plan, paths.key)
    plan.note(f"MInt's public key (give it to each site admin): {public}")
    addresses = ", ".join(node_addresses()) or "unknown"
    plan.note(f"this node's addresses (the site admin's --mint-ip is one of them): {addresses}")
    plan.note(
        "add a site: mint-bridge setup add-site NAME --ssh HOST[:PORT] --fingerprint SHA256:..."
    )
    return _review_and_apply(plan, prompter, dry_run=dry_run, force=False)


def _plan_key(plan: changes.Plan, key_path: str) -> str:
    """Plan a new ed25519 key unless one exists; the public key line either way."""
    pub_path = key_path + ".pub"
    if os.path.exists(key_path):
        if not os.path.exists(pub_path):
            raise SetupError(f"{key_path} exists without {pub_path}; restore the .pub file")
        with open(pub_path, encoding="utf-8") as handle:
            return handle.read().strip()
    private = Ed25519PrivateKey.generate()
    comment = f"mint-bridge@{socket.gethostname()}"
    pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),  # the bridge runs unattended (PBS jobs): no passphrase
    ).decode()
    public = (
        private.public_key()
        .public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
        .decode()
        + f" {comment}"
    )
    plan.write(key_path, pem, 0o600, secret=True)
    plan.write(pub_path, public + "\n", 0o644)
    return public


def node_addresses() -> list[str]:
    """This node's non-loopback IP addresses, for the site admin's ``from=``."""
    found: list[str] = []
    for addrs in psutil.net_if_addrs().values():
        for addr in addrs:
            if addr.family in (socket.AF_INET, socket.AF_INET6) and not _is_local(addr.address):
                found.append(addr.address)
    return sorted(set(found))


def _is_local(address: str) -> bool:
    return address.startswith(("127.", "::1", "fe80:")) or "%" in address


# --- setup add-site ---------------------------------------------------------------------------


@dataclass
class AddSiteOptions:
    name: str
    ssh: str | None = None  # [user@]HOST[:PORT]
    user: str | None = None
    jump: str | None = None  # [user@]HOST[:PORT]
    fingerprint: str | None = None
    jump_fingerprint: str | None = None
    # Which SSH client jobs use: "paramiko" or "openssh"; None: openssh where ``ssh`` exists.
    client: str | None = None
    broker: str | None = None
    token_file: str | None = None
    ca_bundle: str | None = None
    allow_http: bool = False
    broker_site: str | None = None
    timeout: float = FETCH_TIMEOUT
    force: bool = False
    dry_run: bool = False
    paths: BridgePaths = field(default_factory=BridgePaths)


def parse_host(value: str, flag: str) -> HostPort:
    """``[user@]host[:port]``; an IPv6 address goes in brackets: ``[2001:db8::1]:2222``."""
    user, _, rest = value.rpartition("@")
    match = re.fullmatch(r"\[([0-9A-Fa-f:.]+)\](?::(\d+))?|([A-Za-z0-9_.-]+)(?::(\d+))?", rest)
    if not match or (user and not re.fullmatch(r"[A-Za-z0-9_.][A-Za-z0-9_.-]*", user)):
        raise SetupError(f"{flag} {value!r:.80}: write [USER@]HOST[:PORT], e.g. site.example:22")
    host = match.group(1) or match.group(3)
    port = int(match.group(2) or match.group(4) or 22)
    if not 0 < port < 65536:
        raise SetupError(f"{flag} {value!r:.80}: the port must be between 1 and 65535")
    return HostPort(user or None, host, port)


def add_site(options: AddSiteOptions, prompter: Prompter) -> list[changes.Step]:
    if not SITE_NAME.fullmatch(options.name):
        raise SetupError(
            f"site name {options.name!r:.80}: use letters, digits, '_', '.', '-' (at most 64)"
        )
    if bool(options.ssh) == bool(options.broker):
        raise SetupError("give either --ssh HOST[:PORT] or --broker URL (with --token-file)")
    _check_client(options)
    paths = options.paths.expanded()
    plan = changes.Plan()
    plan.mkdir(os.path.dirname(paths.config), 0o700)
    comments: dict[str, str] = {}
    if options.ssh:
        table = _plan_ssh_site(plan, options, paths, prompter)
        client = options.client or default_ssh_client()
        if client == "openssh":
            table["client"] = "openssh"  # written: the site keeps it if ssh is later removed
            comments["client"] = _OPENSSH_COMMENT
        elif options.client:
            table["client"] = "paramiko"  # asked for: stays paramiko once ssh is installed
    else:
        table = _broker_table(options)
    config_files.plan_site_entry(plan, paths.config, options.name, table, options.force, comments)
    plan.note(f"check it: mint-bridge health --site {options.name}")
    return _review_and_apply(plan, prompter, dry_run=options.dry_run, force=options.force)


def _check_client(options: AddSiteOptions) -> None:
    if options.client is not None and options.client not in SSH_CLIENTS:
        raise SetupError(f"--client {options.client!r:.40}: use 'paramiko' or 'openssh'")
    if options.broker and options.client is not None:
        raise SetupError("--client applies only with --ssh: a broker site has no SSH client")


def _plan_ssh_site(
    plan: changes.Plan, options: AddSiteOptions, paths: BridgePaths, prompter: Prompter
) -> dict[str, Any]:
    assert options.ssh is not None
    target = parse_host(options.ssh, "--ssh")
    user = options.user or target.user
    identity = paths.key
    known = config_files.read_text(paths.known_hosts)
    jump = parse_host(options.jump, "--jump") if options.jump else None
    if jump is not None:
        known = pin_step(
            known,
            jump,
            options.jump_fingerprint,
            "--jump-fingerprint",
            host_keys.tcp_socket(jump.host, jump.port, options.timeout),
            options.timeout,
            prompter,
        )
        channels = JumpChannels(jump, target, identity, known, options.timeout)
        try:
            known = pin_step(
                known,
                target,
                options.fingerprint,
                "--fingerprint",
                channels,
                options.timeout,
                prompter,
            )
        finally:
            channels.close()
    else:
        connect = host_keys.tcp_socket(target.host, target.port, options.timeout)
        known = pin_step(
            known, target, options.fingerprint, "--fingerprint", connect, options.timeout, prompter
        )
    plan.write(paths.known_hosts, known, 0o600, edit=True)
    table: dict[str, Any] = {"method": "ssh", "host": target.host}
    if target.port != 22:
        table["port"] = target.port
    if user:
        table["user"] = user
    table["identity_file"] = identity
    table["known_hosts"] = paths.known_hosts
    if jump is not None:
        # The jump is a ProxyJump in mint-bridge's own SSH config, under the site's name.
        table["host"] = options.name
        table["ssh_config"] = paths.ssh_config
        text = config_files.read_text(paths.ssh_config)
        jump_alias = f"{options.name}-jump"
        hop = config_files.host_block(
            jump_alias, jump, jump.user, identity, None, known_hosts=paths.known_hosts
        )
        site_block = config_files.host_block(options.name, target, user, identity, jump_alias)
        text = config_files.merge_host_block(text, jump_alias, hop)
        text = config_files.merge_host_block(text, options.name, site_block)
        plan.write(paths.ssh_config, text, 0o600, edit=True)
    return table


# --- setup pin-host-key -----------------------------------------------------------------------


def pin_host_key(
    name: str,
    wanted: str | None,
    prompter: Prompter,
    *,
    config_path: str | None = None,
    jump: bool = False,
    timeout: float = FETCH_TIMEOUT,
    dry_run: bool = False,
) -> list[changes.Step]:
    """Pin the current host key of site ``name`` (or its first jump host) in its known_hosts."""
    site = find_config(config_path).site(name)
    if not isinstance(site, SshSite):
        raise SetupError(f"site {name} is not reached over SSH, so it has no host key to pin")
    target = resolve(site)
    if jump and not target.proxy_jump:
        raise SetupError(f"site {name} has no jump host (no ProxyJump for {site.host})")
    if target.proxy_command and not jump:
        raise SetupError(
            f"site {name} is reached through a ProxyCommand, which setup cannot follow; pin "
            f"the key in {target.known_hosts} by hand (ssh-keyscan through the proxy)"
        )
    plan = changes.Plan()
    known = config_files.read_text(target.known_hosts)
    if jump:
        hop = first_jump(site, target)
        connect = host_keys.tcp_socket(hop.host, hop.port, timeout)
        known = pin_step(known, hop, wanted, "--fingerprint", connect, timeout, prompter)
    elif target.proxy_jump:
        channels = ChainChannels(site, target)
        try:
            where = HostPort(None, target.hostname, target.port)
            known = pin_step(known, where, wanted, "--fingerprint", channels, timeout, prompter)
        finally:
            channels.close()
    else:
        where = HostPort(None, target.hostname, target.port)
        connect = host_keys.tcp_socket(where.host, where.port, timeout)
        known = pin_step(known, where, wanted, "--fingerprint", connect, timeout, prompter)
    plan.write(target.known_hosts, known, 0o600, edit=True)
    plan.note(f"check it: mint-bridge health --site {name}")
    return _review_and_apply(plan, prompter, dry_run=dry_run, force=False)


def _broker_table(options: AddSiteOptions) -> dict[str, Any]:
    assert options.broker is not None
    url = check_broker_url(options.broker, options.allow_http, "--broker")
    if not options.token_file:
        raise MissingValue("--token-file is required with --broker (the bridge's client token)")
    token_file = os.path.abspath(os.path.expanduser(options.token_file))
    read_token(token_file, "--token-file")  # exists, private, and looks like a token
    table: dict[str, Any] = {"method": "broker", "url": url, "token_file": token_file}
    if options.ca_bundle:
        table["ca_bundle"] = os.path.abspath(os.path.expanduser(options.ca_bundle))
    if options.allow_http:
        table["allow_http"] = True
    if options.broker_site:
        table["broker_site"] = options.broker_site
    return table


# --- review and apply -------------------------------------------------------------------------


def _review_and_apply(
    plan: changes.Plan, prompter: Prompter, *, dry_run: bool, force: bool
) -> list[changes.Step]:
    steps = plan.review(force)
    for line in changes.describe(steps, dry_run):
        prompter.echo(line)
    if dry_run:
        prompter.echo("dry run: nothing was changed")
        return steps
    changes.check_conflicts(steps)
    changes.apply(steps)
    for note in plan.notes:
        prompter.echo(f"next: {note}")
    return steps
