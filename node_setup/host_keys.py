"""Pinning a site's SSH host key, only when it matches the fingerprint the site admin gave.

The key is fetched with a bare paramiko ``Transport``: key exchange only, no authentication,
so nothing is trusted and nothing is sent but the handshake. A server may hold several host
keys; each key type is asked for in turn (one short connection each) until one matches the
given fingerprint, so an admin who read the fingerprint of their RSA key is not refused
because the ed25519 key was offered first. The pin goes into a known_hosts file that the
bridge then uses with ``RejectPolicy``; a first connection is never trusted.
"""

from __future__ import annotations

import base64
import contextlib
import re
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import paramiko

from bridge.client.transports.paramiko_ssh import fingerprint
from bridge.core.errors import HostKeyRejected, SiteUnreachable

FINGERPRINT = re.compile(r"SHA256:[A-Za-z0-9+/]{43}")
# The host key algorithms paramiko negotiates, in its own order of preference.
KEY_TYPES = (
    "ssh-ed25519",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "rsa-sha2-512",
)

SockFactory = Callable[[], Any]  # a connected socket, or a channel through a jump host


@dataclass(frozen=True)
class HostKey:
    key: paramiko.PKey

    @property
    def type(self) -> str:
        return str(self.key.get_name())

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.key)

    @property
    def base64(self) -> str:
        return base64.b64encode(self.key.asbytes()).decode()


def check_fingerprint(value: str) -> str:
    value = value.strip()
    if not FINGERPRINT.fullmatch(value):
        raise HostKeyRejected(
            f"{value!r:.80} is not a SHA256 fingerprint; it looks like SHA256:followed by 43 "
            "characters (the site admin gets it with: ssh-keygen -lf "
            "/etc/ssh/ssh_host_ed25519_key.pub)"
        )
    return value


def tcp_socket(host: str, port: int, timeout: float) -> SockFactory:
    def connect() -> socket.socket:
        try:
            return socket.create_connection((host, port), timeout=timeout)
        except OSError as exc:
            raise SiteUnreachable(
                f"cannot reach {host}:{port}: {exc}; check the host, the port and the firewall"
            ) from exc

    return connect


def fetch_key(connect: SockFactory, key_type: str | None, timeout: float) -> HostKey | None:
    """The server's host key of ``key_type`` (None: its preferred one); None if it has none."""
    sock = connect()
    transport = paramiko.Transport(sock)
    try:
        if key_type is not None:
            transport.get_security_options().key_types = (key_type,)
        transport.banner_timeout = timeout
        transport.start_client(timeout=timeout)
        return HostKey(transport.get_remote_server_key())
    except paramiko.SSHException as exc:
        if key_type is not None and "no acceptable host key" in str(exc):
            return None  # the server has no key of this type
        raise SiteUnreachable(f"SSH handshake failed: {exc}") from exc
    except (OSError, EOFError) as exc:
        raise SiteUnreachable(f"SSH handshake failed: {exc}") from exc
    finally:
        transport.close()
        with contextlib.suppress(OSError):
            sock.close()


def find_matching_key(connect: SockFactory, wanted: str, where: str, timeout: float) -> HostKey:
    """The server's host key whose fingerprint is ``wanted``; HostKeyRejected otherwise."""
    wanted = check_fingerprint(wanted)
    seen: dict[str, str] = {}
    for key_type in KEY_TYPES:
        key = fetch_key(connect, key_type, timeout)
        if key is None:
            continue
        if key.fingerprint == wanted:
            return key
        seen.setdefault(key.fingerprint, key.type)
    offered = ", ".join(f"{kind} {fp}" for fp, kind in seen.items()) or "none"
    raise HostKeyRejected(
        f"no host key of {where} matches {wanted} (the server offers: {offered}); nothing was "
        "pinned. Ask the site admin to read the fingerprint again on the site itself "
        "(ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub); a mismatch can mean someone is "
        "in between"
    )


# --- known_hosts ---------------------------------------------------------------------------


def host_pattern(host: str, port: int) -> str:
    return host if port == 22 else f"[{host}]:{port}"


def pin(existing: str, host: str, port: int, key: HostKey) -> str:
    """known_hosts content with ``key`` as the only key pinned for ``host:port``.

    Other hosts' lines are kept as they are. Earlier keys of this host go: the admin has just
    confirmed the fingerprint of the current one (a re-installed server).
    """
    pattern = host_pattern(host, port)
    line = f"{pattern} {key.type} {key.base64}"
    kept = [ln for ln in existing.splitlines() if not _names_host(ln, pattern)]
    if line in existing.splitlines() and len(kept) == len(existing.splitlines()) - 1:
        return existing
    return "\n".join([*kept, line]) + "\n"


def _names_host(line: str, pattern: str) -> bool:
    fields = line.split()
    # Comments and marked lines (@revoked, @cert-authority) are the admin's: never removed.
    if len(fields) < 3 or fields[0].startswith(("#", "@")):
        return False
    for name in fields[0].split(","):
        if name.startswith("|1|"):
            salt = name.split("|")[2]
            if paramiko.HostKeys.hash_host(pattern, salt) == name:
                return True
        elif name == pattern:
            return True
    return False
