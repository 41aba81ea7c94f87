"""Transports: how the bridge opens a channel to a site's entry point.

A ``Connection`` is one link to a site (one SSH connection per job); each ``open_channel`` runs
the site entry once, with our protocol marker as the requested command. The ``local`` method
starts the same entry point as a child process over pipes.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from typing import Any, Protocol

from bridge.client.node_config import LocalSite
from bridge.core import defaults
from bridge.core.errors import (
    AccountUnusable,
    BridgeError,
    ShellNotQuiet,
    SiteUnreachable,
    SshSetupInvalid,
    TransportError,
)
from bridge.core.protocol import PROTOCOL_VERSION, ByteChannel, FdChannel, FrameReader

PROTOCOL_COMMAND = f"{defaults.PROTOCOL_REQUEST} {PROTOCOL_VERSION}"


class Channel(ByteChannel, Protocol):
    def close(self) -> None: ...


class Connection(Protocol):
    def open_channel(self, timeout: float | None = None) -> Channel: ...

    def close(self) -> None: ...


class Connector(Protocol):
    """Makes connections to one site; ``connect`` raises TransportError subclasses."""

    site_name: str

    def connect(self) -> Connection: ...


# What a no-login shell (util-linux nologin, the default of system accounts) prints for any
# command, the forced one included; sshd still accepted the key.
_NOLOGIN = "This account is currently not available"


def site_reader(channel: ByteChannel) -> FrameReader:
    """A reader of a site's replies: text before the first frame blames the site account's
    login shell, which printed it, not the protocol version."""
    return FrameReader(channel, text_first=shell_text_error)


def shell_text_error(text: str) -> BridgeError:
    """The error for ``text`` that a site's login shell printed before our first frame."""
    if _NOLOGIN in text:
        return AccountUnusable(
            f"the site account has a no-login shell (it printed {text!r}), so sshd accepted "
            "the key but cannot run the forced command; ask the site admin to give the account "
            "a shell that runs commands, e.g. `usermod -s /bin/sh ACCOUNT`"
        )
    return ShellNotQuiet(
        f"the site account's login shell printed {text!r} before the protocol started; keep "
        "the account's shell quiet for non-interactive logins (see README, \"Keep the "
        "account's shell quiet\")"
    )


def check_key_file(path: str, source: str) -> None:
    """SshSetupInvalid unless the SSH key ``path`` (named by ``source``) exists and this user
    can read it: a problem of this node, which no reconnect would solve."""
    if not os.path.lexists(path):
        raise SshSetupInvalid(
            f"the SSH key {path} named by {source} does not exist; create it with "
            f"`ssh-keygen -t ed25519 -f {path} -N ''` (and give {path}.pub to the site admin) "
            f"or fix {source}",
            field="identity_file",
        )
    try:
        with open(path, "rb"):
            pass
    except OSError as exc:
        raise SshSetupInvalid(
            f"the SSH key {path} named by {source} cannot be read by this user "
            f"({exc.strerror}); make it a file this user owns with mode 0600 "
            f"(`chmod 600 {path}`) or fix {source}",
            field="identity_file",
        ) from exc


def refused_message(where: str, keys: str, user: str, detail: str = "") -> str:
    """Why a site refuses a login, with both causes sshd does not tell apart to the client."""
    closed = " (sshd accepted the key, then closed: see its log)" if "EOF" in detail else ""
    return (
        f"{where} refused the key {keys} for user {user}{closed}; either the key is not in "
        f"{user}'s authorized_keys (for this node's address), or the account {user} is locked, "
        "expired or has no valid shell. Ask the site admin to look at sshd's log there, which "
        "says which, and to rerun `mint-bridge setup site` with this node's public key and "
        f"address, or to unlock the account (`usermod -U -e '' {user}`)"
    )


CHILD_EXIT_WAIT = 5.0  # seconds a closed channel's child gets to exit before it is killed


def spawn_piped(argv: list[str], what: str, **options: Any) -> subprocess.Popen[bytes]:
    """Start a channel's child with stdin and stdout as pipes; SiteUnreachable if it cannot."""
    try:
        return subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, close_fds=True, **options
        )
    except OSError as exc:
        raise SiteUnreachable(f"cannot start {what}: {exc}") from exc


class ProcessChannel(FdChannel):
    """A channel that is a child process's stdin and stdout (the local site entry, ``ssh``)."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdin is not None and proc.stdout is not None
        super().__init__(proc.stdout.fileno(), proc.stdin.fileno())
        self.proc = proc

    def close(self) -> None:
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()
        try:
            self.proc.wait(timeout=CHILD_EXIT_WAIT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class LocalConnection:
    def __init__(self, site: LocalSite) -> None:
        self.site = site

    def open_channel(self, timeout: float | None = None) -> Channel:
        env = dict(os.environ, SSH_ORIGINAL_COMMAND=PROTOCOL_COMMAND)
        # The console script's fast path to the site entry: no click, no CLI module.
        argv = [sys.executable, "-m", "bridge.launcher", "site", "serve-ssh"]
        argv += ["--config", self.site.site_config]
        return ProcessChannel(spawn_piped(argv, "the local site entry", env=env))

    def close(self) -> None:
        return None


class LocalConnector:
    def __init__(self, site: LocalSite) -> None:
        self.site = site
        self.site_name = site.name

    def connect(self) -> Connection:
        if not os.path.isfile(self.site.site_config):
            raise TransportError(f"site config {self.site.site_config} of local site is missing")
        return LocalConnection(self.site)
