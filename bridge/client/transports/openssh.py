"""Reaching a site with the system's OpenSSH client: C-speed transfers and shared connections.

Each channel is one ``ssh [options] -- HOST mint-bridge-protocol N`` child over pipes, speaking
the same protocol as the paramiko and local transports. The argv holds only values from the
bridge config and our fixed protocol marker, never job data, and no local shell runs it.

Options given on the command line take precedence over any ``ssh_config``, so these always hold:
``BatchMode=yes`` (never a prompt), ``StrictHostKeyChecking=yes`` with the configured
``UserKnownHostsFile`` (unknown or changed host keys are refused, as with paramiko's
``RejectPolicy``), ``UpdateHostKeys=no`` (a server cannot add keys to the pinned file), no agent,
X11 or port forwarding, no tty, no escape character. ``~/.ssh/config`` (or the configured file)
supplies the rest: HostName, Port, User, IdentityFile, ProxyJump, ProxyCommand, ...

With ``share_connection`` (the default), jobs to one site share one authenticated connection
through a control socket in a private directory (``ControlMaster=auto``, ``ControlPersist``): a
job after the first pays no key exchange, only a new session on the open connection. A stale
socket (its connection died) is replaced by the next job's ``ssh``.

``ssh`` exits with 255 for its own failures; its exit status and the message on its stderr are
the boundary where they become our errors (host key, authentication, SSH config, unreachable).
"""

from __future__ import annotations

import collections
import hashlib
import logging
import math
import os
import re
import select
import shutil
import stat
import subprocess
import threading

from bridge.client.node_config import SshSite
from bridge.client.transports.base import (
    CHILD_EXIT_WAIT,
    PROTOCOL_COMMAND,
    Channel,
    Connection,
    ProcessChannel,
    check_key_file,
    refused_message,
    spawn_piped,
)
from bridge.core.errors import (
    AccountUnusable,
    AuthenticationFailed,
    BridgeError,
    ConfigError,
    HostKeyRejected,
    SiteError,
    SiteUnreachable,
    SshSetupInvalid,
    TransportError,
)
from bridge.core.openssh_messages import AUTH, CONFIG, HOST_KEY, SSH_FAILURE

log = logging.getLogger(__name__)

_STDERR_KEEP = 64  # lines of the child's stderr kept for error messages

# More of OpenSSH's client messages (host key, refused login and config ones are shared in
# bridge.core.openssh_messages). The first pattern found in the child's stderr decides;
# anything else with status 255 is "unreachable".
# A key ssh could not use: it goes on without it, and the site then refuses the login.
_KEY_FILE = ("not accessible:", "Load key ")
# What sshd (through PAM) or the account's shell says about an account that cannot log in;
# banners like these reach our stderr only at LogLevel INFO.
_ACCOUNT = ("Your account has expired", "account has expired", "Your password has expired",
            "This account is currently not available")  # fmt: skip
_UNREACHABLE = ("Could not resolve hostname", "Connection refused", "Connection timed out",
                "No route to host", "Network is unreachable", "Connection closed",
                "Connection reset", "kex_exchange_identification", "banner exchange",
                "Broken pipe", "Timeout, server")  # fmt: skip


def openssh_argv(site: SshSite, control_dir: str | None) -> list[str]:
    """The ``ssh`` command line for one channel to ``site``."""
    config = site.ssh_config if os.path.exists(site.ssh_config) else os.devnull
    argv = [
        "ssh", "-F", config, "-T", "-e", "none",
        "-o", "BatchMode=yes",
        "-o", "StrictHostKeyChecking=yes",
        "-o", f"UserKnownHostsFile={site.known_hosts}",
        "-o", "GlobalKnownHostsFile=none",
        "-o", "UpdateHostKeys=no",
        "-o", "CheckHostIP=no",
        "-o", "IdentityAgent=none",
        "-o", "ForwardAgent=no",
        "-o", "ForwardX11=no",
        "-o", "ClearAllForwardings=yes",
        "-o", "PermitLocalCommand=no",
        "-o", "RequestTTY=no",
        # INFO, not ERROR: sshd's and PAM's banners ("Your account has expired") only show at
        # INFO, and they are all that tells an expired account from a network failure.
        "-o", "LogLevel=INFO",
        # AES-GCM first, as with paramiko: one pass with the CPU's AES instructions, faster than
        # OpenSSH's default chacha20-poly1305 wherever AES-NI exists; the server still decides.
        "-o", "Ciphers=^aes128-gcm@openssh.com,aes256-gcm@openssh.com",
        "-o", f"ConnectTimeout={max(1, math.ceil(site.connect_timeout))}",
        "-o", f"ServerAliveInterval={site.keepalive}",
        "-o", "ServerAliveCountMax=3",
    ]  # fmt: skip
    if site.identity_file:
        argv += ["-i", site.identity_file, "-o", "IdentitiesOnly=yes"]
    if site.user:
        argv += ["-l", site.user]
    if site.port:
        argv += ["-p", str(site.port)]
    argv += _sharing_options(site, control_dir)
    return [*argv, "--", site.host, PROTOCOL_COMMAND]


def _sharing_options(site: SshSite, control_dir: str | None) -> list[str]:
    if control_dir is None:
        # Also overrides a ControlMaster/ControlPath the user's ssh_config may set for the host.
        return ["-o", "ControlMaster=no", "-o", "ControlPath=none"]
    persist = max(0, math.ceil(site.connection_persist))
    return [
        "-o", "ControlMaster=auto",
        "-o", f"ControlPath={os.path.join(control_dir, control_socket_name(site))}",
        "-o", f"ControlPersist={persist if persist else 'no'}",
    ]  # fmt: skip


def control_socket_name(site: SshSite) -> str:
    """The control socket of one site's shared connection: 24 hex digits.

    Not OpenSSH's ``%C`` (host, port, user, jump): two sites on one account with different keys
    (say, two forced commands with different site configs) must never ride each other's
    connection. Everything that picks the key, the config or the pinned host key goes in, with
    the SSH config's modification time, so an edited config opens a new connection.
    """
    try:
        config_mtime = os.stat(site.ssh_config).st_mtime_ns
    except OSError:
        config_mtime = 0
    identity = (
        site.name, site.host, site.user, site.port, site.identity_file, site.ssh_config,
        site.known_hosts, config_mtime,
    )  # fmt: skip
    return hashlib.sha256(repr(identity).encode("utf-8", "surrogateescape")).hexdigest()[:24]


def private_control_dir(path: str) -> str:
    """Create ``path`` 0700 if missing; refuse one that others could write or that is not ours.

    Anyone who can connect to a control socket can run sessions on the authenticated
    connection, so the directory must be private to this user.
    """
    try:
        os.makedirs(path, mode=0o700, exist_ok=True)
        info = os.lstat(path)
    except OSError as exc:
        raise ConfigError(
            f"cannot create the SSH control directory {path}: {exc.strerror}", field="control_dir"
        ) from exc
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():
        raise ConfigError(
            f"SSH control directory {path} is not a directory owned by this user; "
            "point control_dir at a private directory",
            field="control_dir",
        )
    if info.st_mode & 0o077:
        os.chmod(path, 0o700)
    return path


class OpenSshChannel(ProcessChannel):
    """One ``ssh`` child as a channel; its failures become our errors at end of stream."""

    def __init__(self, proc: subprocess.Popen[bytes], site: SshSite, timeout: float | None):
        super().__init__(proc)
        self.site = site
        self.timeout = timeout
        self._stderr: collections.deque[str] = collections.deque(maxlen=_STDERR_KEEP)
        self._stderr_done = threading.Thread(
            target=self._drain_stderr, name="ssh-stderr", daemon=True
        )
        self._stderr_done.start()

    def recv(self, size: int) -> bytes:
        if self.timeout is not None and not self._readable(self.timeout):
            raise TransportError("the site sent nothing within the heartbeat timeout")
        data = super().recv(size)
        if not data:
            self._raise_failure()
        return data

    def _readable(self, timeout: float) -> bool:
        poller = select.poll()  # not select(): it fails for descriptors above 1023
        poller.register(self.read_fd, select.POLLIN)
        return bool(poller.poll(timeout * 1000))

    def send_all(self, data: bytes | memoryview) -> None:
        try:
            super().send_all(data)
        except TransportError:
            self._raise_failure()
            raise

    def close(self) -> None:
        super().close()
        self._stderr_done.join(timeout=1.0)
        if self.proc.returncode not in (0, SSH_FAILURE, None) and self._stderr:
            log.warning("site %s: %s", self.site.name, self._stderr[-1])

    def _drain_stderr(self) -> None:
        assert self.proc.stderr is not None
        for raw in self.proc.stderr:
            line = raw.decode("utf-8", "replace").strip()
            if line:
                self._stderr.append(line)

    def _raise_failure(self) -> None:
        """At end of stream: raise what ssh's exit says, or return for a plain early close."""
        try:
            code = self.proc.wait(timeout=CHILD_EXIT_WAIT)
        except subprocess.TimeoutExpired:
            return  # still running: the reader reports the cut stream as transient
        self._stderr_done.join(timeout=1.0)
        failure = classify_failure(self.site, code, list(self._stderr))
        if failure is not None:
            raise failure


def classify_failure(site: SshSite, code: int, stderr: list[str]) -> BridgeError | None:
    """Our error for an ``ssh`` child that ended with ``code`` and printed ``stderr``.

    ``None`` when the stream just ended (exit 0, or killed by a signal): the protocol layer
    then reports the cut as a transient transport error, and the job is re-attached.
    """
    text = " / ".join(line for line in stderr if "disabling multiplexing" not in line)
    where = f"{site.host}" + (f":{site.port}" if site.port else "")
    if code == SSH_FAILURE:
        return _ssh_failure(site, where, text)
    if code > 0:
        detail = text or "no message"
        return SiteError(
            f"the site entry at {where} refused the connection (exit {code}): {detail}; "
            "check the forced command and site config in the site's authorized_keys"
        )
    return None


def _ssh_failure(site: SshSite, where: str, text: str) -> BridgeError:
    said = f" (ssh: {text})" if text else ""
    if any(pattern in text for pattern in HOST_KEY):
        return HostKeyRejected(
            f"host key of {where} is not the one pinned in {site.known_hosts}{said}; confirm "
            "the fingerprint with the site admin and pin it with `mint-bridge setup "
            f"pin-host-key {site.name} --fingerprint SHA256:...`"
        )
    if any(pattern in text for pattern in _KEY_FILE):
        key = site.identity_file or "named by IdentityFile in the SSH config"
        return SshSetupInvalid(
            f"ssh cannot use the SSH key {key}{said}; give it mode 0600 and make it the "
            f"private key, or fix {site.setting('identity_file')}",
            field="identity_file",
        )
    if any(pattern in text for pattern in _ACCOUNT):
        user = site.user or "the account"
        return AccountUnusable(
            f"{where} accepted the key but the site account {user} cannot log in{said}; ask "
            f"the site admin to renew or unlock it (`usermod -U -e '' {user}`, `chage -l "
            f"{user}` shows why)"
        )
    if any(pattern in text for pattern in AUTH):
        keys = site.identity_file or "(keys from the SSH config)"
        # ssh names the account it tried: "mint@host: Permission denied (publickey)."
        named = re.search(r"(\S+)@\S+: Permission denied", text)
        user = site.user or (named.group(1) if named else "the account")
        return AuthenticationFailed(refused_message(where, keys, user) + said)
    if any(pattern in text for pattern in CONFIG) and not any(
        pattern in text for pattern in _UNREACHABLE
    ):
        return ConfigError(f"ssh cannot use its configuration for site {site.name}{said}",
                           field="ssh_config")  # fmt: skip
    if not text:
        # ssh says why whenever it cannot connect or loses the link; a silent 255 is the remote
        # end going away (the site entry killed, sshd's session ended), not an unreachable host.
        return SiteUnreachable(
            f"the connection to {where} ended with no message from ssh (the site entry stopped "
            "or the link dropped); if it repeats, look in the site log for this job"
        )
    return SiteUnreachable(f"cannot reach {where}{said}; check the host, the port and the network")


class OpenSshConnection:
    """Opens channels as ``ssh`` children; with sharing, they ride one master connection."""

    def __init__(self, site: SshSite, control_dir: str | None) -> None:
        self.site = site
        self.control_dir = control_dir

    def open_channel(self, timeout: float | None = None) -> Channel:
        argv = openssh_argv(self.site, self.control_dir)
        proc = spawn_piped(argv, f"ssh for site {self.site.name}", stderr=subprocess.PIPE)
        return OpenSshChannel(proc, self.site, timeout)

    def close(self) -> None:
        # A shared connection outlives the job on purpose (ControlPersist closes it when idle).
        return None


class OpenSshConnector:
    def __init__(self, site: SshSite) -> None:
        self.site = site
        self.site_name = site.name

    def connect(self) -> Connection:
        if shutil.which("ssh") is None:
            raise ConfigError(
                f"site {self.site.name} uses client = 'openssh' but no ssh command is on PATH; "
                "install openssh-client or use client = 'paramiko'",
                field="client",
            )
        if self.site.identity_file:
            check_key_file(self.site.identity_file, self.site.setting("identity_file"))
        control_dir = (
            private_control_dir(self.site.control_dir) if self.site.share_connection else None
        )
        return OpenSshConnection(self.site, control_dir)


__all__ = ["OpenSshConnector", "classify_failure", "openssh_argv", "private_control_dir"]
