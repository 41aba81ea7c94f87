"""Reaching a site over SSH with paramiko: ``~/.ssh/config`` honoured, host keys pinned.

Host keys come only from the configured known_hosts file and unknown or changed keys are
refused (``RejectPolicy``): the bridge never trusts a first connection. HostName, Port, User,
IdentityFile, UserKnownHostsFile, ProxyCommand and ProxyJump from ``~/.ssh/config`` apply as
OpenSSH would apply them; values in the bridge config take precedence.

paramiko exceptions are converted here, at the boundary, into our TransportError subclasses.
What is wrong on this side (a key file that is missing, unreadable or encrypted, an SSH config
or known_hosts file that cannot be read) is found before any connection and raised as
``SshSetupInvalid``: permanent, never retried, and naming the setting and the fix.
"""

from __future__ import annotations

import base64
import getpass
import hashlib
import importlib.util
import logging
import os
import sys
import types
from dataclasses import dataclass
from typing import Any, cast

from bridge.client.node_config import SshSite
from bridge.client.transports.base import (
    PROTOCOL_COMMAND,
    Channel,
    Connection,
    check_key_file,
    refused_message,
)
from bridge.core.errors import (
    AuthenticationFailed,
    HostKeyRejected,
    SiteUnreachable,
    SshSetupInvalid,
    TransportError,
)


class _Deferred(types.ModuleType):
    """Stands in for a module until one of its attributes is used, then imports it."""

    def __getattr__(self, attr: str) -> Any:
        if sys.modules.get(self.__name__) is self:
            del sys.modules[self.__name__]
        return getattr(importlib.import_module(self.__name__), attr)


def _defer_invoke_import() -> None:
    """Import ``invoke`` only when an SSH config's ``Match exec`` line needs it.

    paramiko imports it up front for that one use, and with it asyncio, unittest.mock and a
    YAML parser: about a third of paramiko's import time, and more tear-down at exit.
    """
    if "invoke" not in sys.modules and importlib.util.find_spec("invoke") is not None:
        sys.modules["invoke"] = _Deferred("invoke")


_defer_invoke_import()

import paramiko  # noqa: E402 - after the deferral, which must come first to have an effect

log = logging.getLogger(__name__)

# AES-GCM first: authenticated encryption in one pass, the fastest paramiko offers with
# cryptography's AES-NI code; the rest of paramiko's defaults stay as fallbacks.
_CIPHERS = (
    "aes128-gcm@openssh.com",
    "aes256-gcm@openssh.com",
    "aes128-ctr",
    "aes256-ctr",
    "aes192-ctr",
)


# How far the site may send ahead of what the bridge has consumed. paramiko buffers all of it
# when hashing and writing fall behind, so it bounds the bridge's memory; an unbounded window
# also made each read shift the whole backlog (loopback, 1 GiB: 12 MB/s and 570 MiB RSS).
WINDOW_SIZE = 4 * 1024 * 1024


class _FastTransport(paramiko.Transport):
    _preferred_ciphers = _CIPHERS

    def __init__(self, sock: Any, **kwargs: Any) -> None:
        kwargs.setdefault("default_window_size", WINDOW_SIZE)
        super().__init__(sock, **kwargs)


@dataclass(frozen=True)
class Endpoint:
    """A host as OpenSSH would resolve it from the bridge config and ``~/.ssh/config``."""

    alias: str
    hostname: str
    port: int
    user: str
    identity_files: tuple[str, ...]
    known_hosts: str
    proxy_command: str | None
    proxy_jump: str | None
    # Which setting named identity_files, for a message about a key that cannot be used.
    identity_source: str = ""


def resolve(site: SshSite, alias: str | None = None) -> Endpoint:
    """Resolve ``alias`` (default: the site's host) through the SSH config file."""
    alias = alias or site.host
    options = _ssh_config(site).lookup(alias)
    is_target = alias == site.host
    identity = site.identity_file if is_target else None
    identities = (identity,) if identity else tuple(options.get("identityfile", []))
    source = (
        site.setting("identity_file")
        if identity
        else f"IdentityFile of Host {alias} in {site.ssh_config}"
    )
    known_hosts = site.known_hosts
    if "userknownhostsfile" in options and site.known_hosts == "~/.ssh/known_hosts":
        known_hosts = options["userknownhostsfile"].split()[0]
    proxy_command = options.get("proxycommand")
    proxy_jump = options.get("proxyjump")
    return Endpoint(
        alias=alias,
        hostname=options.get("hostname", alias),
        port=(site.port if is_target and site.port else int(options.get("port", 22))),
        user=(site.user if is_target and site.user else options.get("user", getpass.getuser())),
        identity_files=tuple(os.path.expanduser(p) for p in identities),
        known_hosts=os.path.expanduser(known_hosts),
        proxy_command=None if (proxy_command or "").lower() in ("", "none") else proxy_command,
        proxy_jump=None if (proxy_jump or "").lower() in ("", "none") else proxy_jump,
        identity_source=source,
    )


def _ssh_config(site: SshSite) -> paramiko.SSHConfig:
    path = os.path.expanduser(site.ssh_config)
    if not os.path.exists(path):
        return paramiko.SSHConfig()
    try:
        return paramiko.SSHConfig.from_path(path)
    except (OSError, paramiko.SSHException) as exc:
        raise SshSetupInvalid(
            f"cannot read the SSH config {path} ({site.setting('ssh_config')}): {exc}; fix the "
            "file (`ssh -G -F FILE HOST` shows what OpenSSH makes of it) or point ssh_config "
            "at another one",
            field="ssh_config",
        ) from exc


def check_identities(site: SshSite, endpoint: Endpoint) -> None:
    """Raise SshSetupInvalid for a key file of ``endpoint`` that cannot be used, before any
    connection: paramiko would report it as an I/O error in the middle of authentication."""
    for path in endpoint.identity_files:
        _check_key_file(path, endpoint.identity_source)


def _check_key_file(path: str, source: str) -> None:
    check_key_file(path, source)  # exists and can be read: the same words for both clients
    fix = f"or fix {source}"
    try:
        paramiko.PKey.from_path(path)
    except paramiko.PasswordRequiredException as exc:
        raise SshSetupInvalid(
            f"the SSH key {path} named by {source} needs a passphrase, and the bridge runs "
            f"unattended; remove it with `ssh-keygen -p -N '' -f {path}` {fix}",
            field="identity_file",
        ) from exc
    except OSError as exc:
        raise SshSetupInvalid(
            f"the SSH key {path} named by {source} cannot be read ({exc.strerror}) {fix}",
            field="identity_file",
        ) from exc
    except (paramiko.SSHException, ValueError, TypeError) as exc:
        raise SshSetupInvalid(
            f"the SSH key {path} named by {source} is not a private key paramiko can use "
            f"({exc}); point it at the private key (not the .pub file) {fix}",
            field="identity_file",
        ) from exc


def fingerprint(key: paramiko.PKey) -> str:
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


def connect_endpoint(site: SshSite, endpoint: Endpoint, sock: Any = None) -> paramiko.SSHClient:
    """An authenticated SSHClient for ``endpoint``; raises our TransportError subclasses."""
    check_identities(site, endpoint)
    client = paramiko.SSHClient()
    _load_known_hosts(client, site, endpoint)
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    if sock is None and endpoint.proxy_command:
        sock = paramiko.ProxyCommand(endpoint.proxy_command)
    try:
        client.connect(
            endpoint.hostname,
            port=endpoint.port,
            username=endpoint.user,
            key_filename=list(endpoint.identity_files) or None,  # type: ignore[arg-type]
            look_for_keys=not endpoint.identity_files,
            allow_agent=False,
            timeout=site.connect_timeout,
            banner_timeout=site.connect_timeout,
            auth_timeout=site.connect_timeout,
            sock=sock,
            transport_factory=_FastTransport,
        )
    except paramiko.BadHostKeyException as exc:
        client.close()
        raise HostKeyRejected(
            f"host key of {_where(endpoint)} ({fingerprint(exc.key)}) does not match the key "
            f"pinned in {endpoint.known_hosts}; if the site re-installed its server, confirm the "
            f"new fingerprint with the site admin and run `{pin_command(site, endpoint)}`"
        ) from exc
    except paramiko.AuthenticationException as exc:
        client.close()
        keys = ", ".join(endpoint.identity_files) or "(default keys)"
        raise AuthenticationFailed(
            refused_message(_where(endpoint), keys, endpoint.user, str(exc))
        ) from exc
    except paramiko.SSHException as exc:
        client.close()
        if "No authentication methods available" in str(exc):  # no key given, none found
            raise SshSetupInvalid(
                f"no SSH key for {_where(endpoint)}: neither {site.setting('identity_file')} "
                f"nor an IdentityFile in {site.ssh_config} names one, and there is no "
                "~/.ssh/id_ed25519; run `mint-bridge setup bridge-node` (it makes a key) or set "
                "identity_file",
                field="identity_file",
            ) from exc
        if "not found in known_hosts" in str(exc):
            raise HostKeyRejected(
                f"{_where(endpoint)} is not in {endpoint.known_hosts}, so its host key cannot be "
                "verified; get the key's fingerprint from the site admin and pin it with "
                f"`{pin_command(site, endpoint)}`"
            ) from exc
        raise SiteUnreachable(f"SSH handshake with {_where(endpoint)} failed: {exc}") from exc
    except (OSError, EOFError) as exc:
        client.close()
        raise SiteUnreachable(
            f"cannot reach {_where(endpoint)}: {exc}; check the host, the port and the network"
        ) from exc
    transport = client.get_transport()
    assert transport is not None
    transport.set_keepalive(site.keepalive)
    return client


def pin_command(site: SshSite, endpoint: Endpoint) -> str:
    """The command that pins the current host key of ``endpoint`` for ``site``, as printed."""
    jump = " --jump" if endpoint.alias != site.host else ""
    return f"mint-bridge setup pin-host-key {site.name}{jump} --fingerprint SHA256:..."


def _load_known_hosts(client: paramiko.SSHClient, site: SshSite, endpoint: Endpoint) -> None:
    if not os.path.exists(endpoint.known_hosts):
        return  # nothing pinned: RejectPolicy refuses the host with a message on how to pin
    try:
        client.load_host_keys(endpoint.known_hosts)
    except (OSError, paramiko.SSHException, ValueError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise SshSetupInvalid(
            f"cannot read known_hosts {endpoint.known_hosts} ({site.setting('known_hosts')}): "
            f"{reason}; make it a file this user can read, or point known_hosts at one",
            field="known_hosts",
        ) from exc


def _where(endpoint: Endpoint) -> str:
    if endpoint.alias != endpoint.hostname:
        return f"{endpoint.alias} ({endpoint.hostname}:{endpoint.port})"
    return f"{endpoint.hostname}:{endpoint.port}"


class SshChannel:
    """A session channel running the site's forced command, as a ByteChannel."""

    # Asking for a whole window takes everything paramiko has buffered in one piece; a smaller
    # read would make it shift the rest of its buffer down.
    recv_size = WINDOW_SIZE

    def __init__(self, channel: paramiko.Channel, timeout: float | None) -> None:
        self.channel = channel
        channel.settimeout(timeout)

    def recv(self, size: int) -> bytes:
        try:
            return bytes(self.channel.recv(size))
        except TimeoutError as exc:
            raise TransportError("the site sent nothing within the heartbeat timeout") from exc
        except (OSError, EOFError, paramiko.SSHException) as exc:
            raise TransportError(f"the SSH connection failed: {exc}") from exc

    def send_all(self, data: bytes | memoryview) -> None:
        # A view, not bytes: paramiko's sendall re-slices what is left after every 32 KiB
        # packet, which for bytes copies the rest of a 1 MiB chunk each time. paramiko takes
        # any buffer here (its type hints say bytes): it only slices it and copies it into the
        # packet; the receiver's SHA-256 check would catch any mishandling.
        try:
            self.channel.sendall(cast(bytes, memoryview(data)))
        except (OSError, EOFError, paramiko.SSHException) as exc:
            raise TransportError(f"the SSH connection failed: {exc}") from exc

    def close(self) -> None:
        self.channel.close()


class SshConnection:
    def __init__(self, clients: list[paramiko.SSHClient]) -> None:
        self.clients = clients  # jump hosts first, the site last

    def open_channel(self, timeout: float | None = None) -> Channel:
        transport = self.clients[-1].get_transport()
        if transport is None or not transport.is_active():
            raise TransportError("the SSH connection is closed")
        try:
            channel = transport.open_session(window_size=WINDOW_SIZE, timeout=timeout)
            channel.exec_command(PROTOCOL_COMMAND)
        except (OSError, EOFError, paramiko.SSHException) as exc:
            raise TransportError(f"cannot open an SSH channel: {exc}") from exc
        return SshChannel(channel, timeout)

    def close(self) -> None:
        for client in reversed(self.clients):
            client.close()


class SshConnector:
    def __init__(self, site: SshSite) -> None:
        self.site = site
        self.site_name = site.name

    def connect(self) -> Connection:
        target = resolve(self.site)
        clients: list[paramiko.SSHClient] = []
        try:
            sock = self.jump_chain(target, clients) if target.proxy_jump else None
            clients.append(connect_endpoint(self.site, target, sock))
        except BaseException:
            for client in clients:
                client.close()
            raise
        return SshConnection(clients)

    def jump_chain(self, target: Endpoint, clients: list[paramiko.SSHClient]) -> Any:
        """Connect through each ProxyJump hop in turn; return a channel to ``target``."""
        assert target.proxy_jump is not None
        sock = None
        hops = [_parse_jump(spec) for spec in target.proxy_jump.split(",")]
        for index, (user, alias, port) in enumerate(hops):
            hop = resolve(self.site, alias)
            hop = Endpoint(
                alias, hop.hostname, port or hop.port, user or hop.user, hop.identity_files,
                target.known_hosts, None, None,
            )  # fmt: skip
            clients.append(connect_endpoint(self.site, hop, sock))
            nxt = hops[index + 1] if index + 1 < len(hops) else None
            dest = (
                (resolve(self.site, nxt[1]).hostname, nxt[2] or resolve(self.site, nxt[1]).port)
                if nxt
                else (target.hostname, target.port)
            )
            sock = direct_tcpip(clients[-1], dest)
        return sock


def _parse_jump(spec: str) -> tuple[str | None, str, int | None]:
    spec = spec.strip()
    user, _, hostport = spec.rpartition("@")
    host, sep, port = hostport.partition(":")
    return (user or None, host, int(port) if sep else None)


def direct_tcpip(client: paramiko.SSHClient, dest: tuple[str, int]) -> paramiko.Channel:
    transport = client.get_transport()
    assert transport is not None
    try:
        return transport.open_channel("direct-tcpip", dest, ("127.0.0.1", 0))
    except (paramiko.SSHException, OSError) as exc:
        raise SiteUnreachable(f"jump host cannot reach {dest[0]}:{dest[1]}: {exc}") from exc
