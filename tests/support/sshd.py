"""A real OpenSSH server on loopback, for tests and benchmarks.

Everything lives in one private directory: the server's config and host key, a client key,
an ``authorized_keys`` whose line forces ``mint-bridge site serve-ssh`` (``restrict`` and
``from="127.0.0.1"``), a ``known_hosts`` built from the generated host key (tests never trust a
first connection), and an ``ssh_config`` with a ``site`` alias for the server.

By default the ``site`` alias logs in as the current user and the forced command runs this
interpreter (``sys.executable``); a caller that runs the site under another account passes that
account (``user``) and an interpreter that account can reach (``python``).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from tests.support.net import free_port
from tests.support.services import unavailable

SSHD = "/usr/sbin/sshd"


class SshdUnavailable(RuntimeError):
    pass


def keygen(path: Path, comment: str = "mint-bridge-test") -> None:
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
        check=True,
    )


def forced_command(site_config: Path, python: str | None = None) -> str:
    """``python``: the shell words that start the interpreter (default: this one)."""
    return f"{python or sys.executable} -m bridge.cli site serve-ssh --config {site_config}"


@dataclass
class Sshd:
    root: Path
    port: int
    proc: subprocess.Popen[bytes]
    client_key: Path
    known_hosts: Path
    ssh_config: Path
    authorized_keys: Path
    host_key: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def ssh_connections(self) -> int:
        """SSH connections the server has logged so far (LogLevel VERBOSE): how many times a
        client tried, counted rather than guessed from how long it took. The readiness check's
        bare TCP connect, closed before any SSH, is left out."""
        log = (self.root / "sshd.log").read_text(errors="replace")
        return log.count("Connection from ") - log.count("kex_exchange_identification")

    def connection_processes(self) -> list[psutil.Process]:
        """The per-connection sshd children (killing one drops that connection)."""
        try:
            return psutil.Process(self.pid).children(recursive=False)
        except psutil.Error:
            return []

    def stop(self) -> None:
        for child in self.connection_processes():
            with contextlib.suppress(psutil.Error):
                child.kill()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def authorize(self, line: str) -> None:
        with open(self.authorized_keys, "a", encoding="utf-8") as handle:
            handle.write(line.rstrip("\n") + "\n")

    def ssh_argv(self, *command: str, options: tuple[str, ...] = ()) -> list[str]:
        """OpenSSH client argv with the test key and pinned host key (for hostile tests)."""
        return [
            "ssh", "-F", "/dev/null", "-i", str(self.client_key), "-p", str(self.port),
            "-o", f"UserKnownHostsFile={self.known_hosts}", "-o", "StrictHostKeyChecking=yes",
            "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes", *options, "127.0.0.1", *command,
        ]  # fmt: skip


def start_sshd_for_test(root: Path, site_config: Path, **options: Any) -> Sshd:
    """``start_sshd`` for a fixture: an sshd that cannot start fails the test under CI=true
    and skips it elsewhere (``unavailable``), naming why."""
    try:
        return start_sshd(root, site_config, **options)
    except (SshdUnavailable, OSError, subprocess.CalledProcessError) as exc:
        unavailable(f"cannot start sshd: {exc}")


def start_sshd(
    root: Path, site_config: Path, timeout: float = 10.0, user: str | None = None,
    python: str | None = None,
) -> Sshd:  # fmt: skip
    """``user``: the account the ``site`` alias logs in as (default: the current user);
    ``python``: see ``forced_command``."""
    if not os.path.exists(SSHD) or shutil.which("ssh-keygen") is None:
        raise SshdUnavailable(
            f"{SSHD} or ssh-keygen is not installed (apt-get install openssh-server)"
        )
    root.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
    host_key, client_key = root / "host_ed25519", root / "client_ed25519"
    keygen(host_key, "host")
    keygen(client_key)
    authorized = root / "authorized_keys"
    pub = client_key.with_suffix(".pub").read_text().strip()
    authorized.write_text(
        f'command="{forced_command(site_config, python)}",restrict,from="127.0.0.1" {pub}\n'
    )
    # sshd reads the file as the user logging in, so another account must be able to (it holds
    # public keys and the forced command only); that it can reach this directory is up to the
    # caller.
    authorized.chmod(0o600 if user in (None, _user()) else 0o644)
    port = free_port()
    config = root / "sshd_config"
    config.write_text(
        "\n".join(
            [
                f"Port {port}",
                "ListenAddress 127.0.0.1",
                f"HostKey {host_key}",
                f"PidFile {root / 'sshd.pid'}",
                f"AuthorizedKeysFile {authorized}",
                "PasswordAuthentication no",
                "KbdInteractiveAuthentication no",
                "PubkeyAuthentication yes",
                "PermitRootLogin prohibit-password",
                "UsePAM no",
                "StrictModes no",
                # The forced command learns the client's key (the audit log's ``key``).
                "ExposeAuthInfo yes",
                "AllowTcpForwarding yes",
                "LogLevel VERBOSE",
                "MaxStartups 50",
                "",
            ]
        )
    )
    log = open(root / "sshd.log", "wb")  # noqa: SIM115 - lives as long as the server
    proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(config)], stdout=log, stderr=log)
    _wait_listening(proc, port, timeout, root / "sshd.log")
    host_pub = host_key.with_suffix(".pub").read_text().split()
    known_hosts = root / "known_hosts"
    known_hosts.write_text(f"[127.0.0.1]:{port} {host_pub[0]} {host_pub[1]}\n")
    ssh_config = root / "ssh_config"
    ssh_config.write_text(
        f"Host site\n  HostName 127.0.0.1\n  Port {port}\n  User {user or _user()}\n"
        f"  IdentityFile {client_key}\n"
    )
    return Sshd(root, port, proc, client_key, known_hosts, ssh_config, authorized, host_key)


def _user() -> str:
    import getpass

    return getpass.getuser()


def _wait_listening(proc: subprocess.Popen[bytes], port: int, timeout: float, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SshdUnavailable(f"sshd exited with {proc.returncode}: {log.read_text()[-2000:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise SshdUnavailable(f"sshd did not listen on port {port} within {timeout} s")
