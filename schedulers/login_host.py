"""Running a batch scheduler's commands on a cluster's login node over SSH.

A common site layout: the machine MInt reaches (the gateway, running the site entry or agent)
is not the cluster's login node. With ``[scheduler] login_host`` every scheduler command
(``sbatch``, ``squeue``, ``qsub`` ...) runs there through the system's OpenSSH client:

    ssh [fixed options] -- user@login  'sbatch --parsable /work/abc/.mint-bridge/job.sh'

The remote side is a shell, so this is the one place where a scheduler argv becomes a string:
every word goes through ``shlex.quote`` (``remote_command``), and ``shlex.split`` of that
string gives the argv back. No local shell ever runs anything.

Options given on the command line win over ``~/.ssh/config`` (which is honoured for the rest:
HostName, ProxyJump ...): ``BatchMode=yes`` (never a prompt), ``StrictHostKeyChecking=yes``
with the pinned ``known_hosts`` (an unknown or changed key is refused, never learnt). One
connection per login host is shared by all commands through a control master started on its
own (``ssh -M -N -f``) with ``ControlPersist``: the commands never become the master, so a
command holding the submit lock (see ``schedulers.batch``) never passes it on to a long-lived
background process.

``ssh`` exits with 255 for its own failures; its message decides what our error says and
whether it is worth retrying (the network: yes; a host key or a refused login: no, with the
fix printed).
"""

from __future__ import annotations

import hashlib
import logging
import os
import shlex
import stat
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass

from bridge.core.errors import SchedulerError
from bridge.core.openssh_messages import AUTH, CONFIG, HOST_KEY, SSH_FAILURE, found

log = logging.getLogger(__name__)

COMMAND_NOT_FOUND = 127  # a POSIX shell's status for a command it cannot find


@dataclass(frozen=True)
class LoginHost:
    """The ``login_host`` keys of a site's ``[scheduler]`` table, validated by the site config."""

    target: str  # "user@host" or a Host alias of the account's ~/.ssh/config
    known_hosts: str  # the pinned host key(s); StrictHostKeyChecking=yes against this file
    port: int | None = None
    identity_file: str | None = None
    ssh_config: str | None = None  # None: the account's ~/.ssh/config, as ssh reads it
    control_dir: str = "~/.local/state/mint-bridge/login"
    persist: int = 600  # ControlPersist seconds: the connection outlives a burst of commands
    connect_timeout: int = 15
    shared_workdir: bool = True  # the work dir is at the same path on the login node
    remote_root: str | None = None  # shared_workdir = false: per-job dirs are made under it

    @property
    def where(self) -> str:
        return self.target + (f" port {self.port}" if self.port else "")

    def control_path(self) -> str:
        """One control socket per login host: 24 hex digits of what picks the connection, in
        a private directory (OpenSSH appends a random suffix while it creates it, and a unix
        socket path has at most 107 bytes)."""
        identity = (self.target, self.port, self.identity_file, self.known_hosts, self.ssh_config)
        digest = hashlib.sha256(repr(identity).encode("utf-8", "surrogateescape")).hexdigest()
        return os.path.join(os.path.expanduser(self.control_dir), "lh-" + digest[:24])


def remote_command(argv: Sequence[str]) -> str:
    """The string the login node's shell runs: every word quoted, nothing pasted raw."""
    if not argv:
        raise SchedulerError("no scheduler command to run on the login host")
    return shlex.join(argv)


def base_options(login: LoginHost) -> list[str]:
    """Options that always hold, whatever ~/.ssh/config says for the host."""
    argv = [
        "-T", "-e", "none",
        "-o", "BatchMode=yes",
        "-o", "StrictHostKeyChecking=yes",
        "-o", f"UserKnownHostsFile={login.known_hosts}",
        "-o", "GlobalKnownHostsFile=none",
        "-o", "UpdateHostKeys=no",
        "-o", "CheckHostIP=no",
        "-o", "ForwardAgent=no",
        "-o", "ForwardX11=no",
        "-o", "ClearAllForwardings=yes",
        "-o", "PermitLocalCommand=no",
        "-o", "RequestTTY=no",
        "-o", "LogLevel=ERROR",
        "-o", f"ConnectTimeout={login.connect_timeout}",
        "-o", "ServerAliveInterval=15",
        "-o", "ServerAliveCountMax=3",
        "-o", f"ControlPath={login.control_path()}",
    ]  # fmt: skip
    if login.ssh_config:
        argv = ["-F", login.ssh_config, *argv]
    if login.identity_file:
        argv += ["-i", login.identity_file, "-o", "IdentitiesOnly=yes"]
    if login.port:
        argv += ["-p", str(login.port)]
    return argv


def command_argv(login: LoginHost, argv: Sequence[str]) -> list[str]:
    """``ssh`` running one scheduler command on the login node, over the master if it is up
    (``ControlMaster=no``: without one it connects on its own and never becomes one)."""
    return [
        "ssh", *base_options(login), "-o", "ControlMaster=no",
        "--", login.target, remote_command(argv),
    ]  # fmt: skip


def master_argv(login: LoginHost) -> list[str]:
    return [
        "ssh", *base_options(login), "-o", "ControlMaster=yes",
        "-o", f"ControlPersist={login.persist}", "-N", "-f", "--", login.target,
    ]  # fmt: skip


def check_argv(login: LoginHost) -> list[str]:
    return ["ssh", *base_options(login), "-O", "check", "--", login.target]


def exit_argv(login: LoginHost) -> list[str]:
    return ["ssh", *base_options(login), "-O", "exit", "--", login.target]


def ensure_master(login: LoginHost, timeout: float) -> None:
    """Start the shared connection unless it is up; SchedulerError naming why it cannot be."""
    _private_dir(os.path.dirname(login.control_path()))
    try:
        if subprocess.run(check_argv(login), capture_output=True, timeout=timeout).returncode == 0:
            return
        # ``-f`` backgrounds the master with our stderr still open: a file, not a pipe, so
        # this call returns once it has logged in instead of when the master exits.
        with tempfile.TemporaryFile() as errors:
            proc = subprocess.run(
                master_argv(login), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                stderr=errors, timeout=timeout, check=False,
            )  # fmt: skip
            errors.seek(0)
            stderr = errors.read().decode("utf-8", "replace")
    except subprocess.TimeoutExpired as exc:
        raise SchedulerError(
            f"login host {login.where} did not answer within {timeout:g} s; check that it is "
            "up and reachable from this machine",
            transient=True,
        ) from exc
    except OSError as exc:
        raise SchedulerError(
            f"cannot run ssh for login host {login.where}: {exc.strerror}; install the "
            "OpenSSH client (apt-get install openssh-client)"
        ) from exc
    if proc.returncode != 0:
        failure = classify(login, proc.returncode, stderr, "ssh")
        raise failure or SchedulerError(f"login host {login.where}: ssh exit {proc.returncode}")
    log.info("connected to login host %s", login.where)


def classify(login: LoginHost, code: int, stderr: str, program: str) -> SchedulerError | None:
    """Our error for an ``ssh`` that ran ``program`` on the login node and exited ``code``;
    None when it is the scheduler command's own failure (its message speaks for itself)."""
    text = " / ".join(line.strip() for line in stderr.splitlines() if line.strip())[:500]
    said = f" (ssh: {text})" if text else ""
    if code == COMMAND_NOT_FOUND and ("not found" in text or "No such file" in text):
        return SchedulerError(
            f"{program} is not on the PATH of {login.target} on the login host{said}; "
            f"install the scheduler's client there, or add its directory to PATH in the "
            "account's ~/.bashrc on the login node (a non-interactive ssh command reads it)"
        )
    if code != SSH_FAILURE:
        return None
    if found(HOST_KEY, text):
        return SchedulerError(
            f"host key of login host {login.where} is not pinned in {login.known_hosts}{said}; "
            f"fetch it with `ssh-keyscan {_keyscan_args(login)}`, compare `ssh-keygen -lf` of "
            "that output with the fingerprint the cluster's admins publish, then add the line "
            f"to {login.known_hosts}"
        )
    if found(AUTH, text):
        key = login.identity_file or "the keys of ~/.ssh/config"
        return SchedulerError(
            f"login host {login.where} refused the login with {key}{said}; add the public key "
            f"to ~/.ssh/authorized_keys of {login.target} on the login node"
        )
    if "too long for Unix domain socket" in text:
        return SchedulerError(
            f"the control socket path for login host {login.where} is too long{said}; set "
            "[scheduler] login_control_dir to a shorter private directory"
        )
    if found(CONFIG, text):
        return SchedulerError(f"ssh cannot use its configuration for login host {login.where}"
                              f"{said}; fix the SSH config it names")  # fmt: skip
    return SchedulerError(
        f"cannot reach login host {login.where}{said}; check the host, the port and the network",
        transient=True,
    )


def _keyscan_args(login: LoginHost) -> str:
    host = login.target.rsplit("@", 1)[-1]
    return shlex.join([*(["-p", str(login.port)] if login.port else []), host])


def _private_dir(path: str) -> None:
    """Anyone who can reach a control socket can run commands as us on the login node."""
    try:
        os.makedirs(path, mode=0o700, exist_ok=True)
        info = os.lstat(path)
    except OSError as exc:
        raise SchedulerError(
            f"cannot create the SSH control directory {path}: {exc.strerror}; set "
            "[scheduler] login_control_dir to a private directory"
        ) from exc
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():
        raise SchedulerError(
            f"SSH control directory {path} is not a directory owned by this account; set "
            "[scheduler] login_control_dir to a private directory"
        )
    if info.st_mode & 0o077:
        os.chmod(path, 0o700)
