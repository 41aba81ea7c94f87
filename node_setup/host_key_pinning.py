"""Pinning a site's host key (or a jump host's) in the bridge's known_hosts, only on a match.

``pin_step`` is the one rule ``setup add-site`` and ``setup pin-host-key`` share: a key is
pinned only when its fingerprint matches the one the site admin gave, or, interactively, when
the admin confirms the fingerprint shown. Keys behind jump hosts are fetched over
``direct-tcpip`` channels of connections that are themselves checked against their pins.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from typing import Any

from bridge.client.node_config import SshSite
from bridge.client.transports.paramiko_ssh import (
    Endpoint,
    SshConnector,
    connect_endpoint,
    direct_tcpip,
    resolve,
)
from bridge.core.errors import HostKeyRejected, SiteUnreachable
from node_setup import host_keys
from node_setup.errors import MissingValue
from node_setup.prompt import Prompter


@dataclass(frozen=True)
class HostPort:
    user: str | None
    host: str
    port: int


def pin_step(
    known: str,
    where: HostPort,
    wanted: str | None,
    flag: str,
    connect: host_keys.SockFactory,
    timeout: float,
    prompter: Prompter,
) -> str:
    label = f"{where.host}:{where.port}"
    if wanted:
        key = host_keys.find_matching_key(connect, wanted, label, timeout)
        prompter.echo(f"host key of {label} matches {key.fingerprint} ({key.type})")
    else:
        if not prompter.interactive:
            raise MissingValue(
                f"{flag} is required: the host key of {label} is pinned only when it matches the "
                "fingerprint the site admin gave you; pass " + flag + " SHA256:..."
            )
        key = fetched_key(connect, label, timeout)
        prompter.echo(f"host key of {label}: {key.type} {key.fingerprint}")
        if not prompter.confirm(
            "Is this exactly the fingerprint the site admin gave you by another channel?",
            default=False,
        ):
            raise HostKeyRejected(f"host key of {label} not confirmed; nothing was pinned")
    return host_keys.pin(known, where.host, where.port, key)


def fetched_key(connect: host_keys.SockFactory, label: str, timeout: float) -> host_keys.HostKey:
    key = host_keys.fetch_key(connect, None, timeout)
    if key is None:
        raise SiteUnreachable(f"{label} offered no host key")
    return key


class JumpChannels:
    """Opens one authenticated connection to the jump host, then a direct-tcpip channel to
    the target per call (each key exchange needs its own stream)."""

    def __init__(
        self, jump: HostPort, target: HostPort, identity: str, known_hosts: str, timeout: float
    ) -> None:
        self.client = connect_jump(jump, identity, known_hosts, timeout)
        self.dest = (target.host, target.port)

    def __call__(self) -> Any:
        return direct_tcpip(self.client, self.dest)

    def close(self) -> None:
        self.client.close()


def connect_jump(jump: HostPort, identity: str, known_hosts: str, timeout: float) -> Any:
    """An authenticated client to the jump host, checked against the (new) pins."""
    with tempfile.TemporaryDirectory(prefix="mint-bridge-jump-") as tmp:
        # The pins are not written yet (dry run, or a refusal later): use them from a copy.
        pins = os.path.join(tmp, "known_hosts")
        with open(pins, "w", encoding="utf-8") as handle:
            handle.write(known_hosts)
        site = SshSite(
            name="jump",
            host=jump.host,
            user=jump.user,
            port=jump.port,
            identity_file=identity,
            known_hosts=pins,
            ssh_config=os.path.join(tmp, "none"),
            connect_timeout=timeout,
        )
        return connect_endpoint(site, resolve(site))


def first_jump(site: SshSite, target: Endpoint) -> HostPort:
    assert target.proxy_jump is not None
    spec = target.proxy_jump.split(",")[0].strip().rpartition("@")[2]
    alias, sep, port = spec.partition(":")
    hop = resolve(site, alias)
    return HostPort(None, hop.hostname, int(port) if sep else hop.port)


class ChainChannels:
    """Channels to a site through its jump hosts, as ``mint-bridge run`` connects: every hop
    authenticated and checked against its pin; one channel per key exchange."""

    def __init__(self, site: SshSite, target: Endpoint) -> None:
        self.clients: list[Any] = []
        SshConnector(site).jump_chain(target, self.clients).close()
        self.dest = (target.hostname, target.port)

    def __call__(self) -> Any:
        return direct_tcpip(self.clients[-1], self.dest)

    def close(self) -> None:
        for client in reversed(self.clients):
            client.close()
