"""What the staging benchmarks share: payload files, and OpenSSH ``scp`` as the baseline.

Both ``ssh_staging.py`` and ``http_staging.py`` compare ``mint-bridge`` with ``scp`` against
the tests' private sshd (``tests.support.sshd``), using a second, unrestricted key.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import time
from pathlib import Path

from tests.support.sshd import Sshd

MIB = 1 << 20
SFTP_SERVER = "/usr/lib/openssh/sftp-server"


def staging_commands(payload: Path) -> str:
    """Site commands that move bytes and do nothing else: ``sink`` takes the inputs and returns
    nothing; ``source`` hard-links a pre-made payload file into the work dir (~0 cost), so the
    same bytes come back."""
    true, ln = shutil.which("true"), shutil.which("ln")
    return f"""
[commands.sink]
description = "Receive the inputs, run nothing, return nothing"
program = "{true}"
returns = ["nothing-comes-back"]

[commands.source]
description = "Hard-link a pre-made site file into the work dir so it comes back"
program = "{ln}"
args = ["{payload}/{{which}}.bin", "result.bin"]
[commands.source.params.which]
type = "choice"
choices = ["big", "tiny"]
default = "tiny"
"""


def make_file(path: Path, size: int) -> None:
    block = os.urandom(MIB)
    with open(path, "wb") as out:
        for offset in range(0, size, MIB):
            out.write(block[: min(MIB, size - offset)])


def enable_sftp(sshd: Sshd) -> None:
    """Give the server an sftp subsystem, which today's ``scp`` speaks by default.

    The fixture's config has none; sshd re-reads its config on SIGHUP (re-executing itself
    under the same pid), then listens again.
    """
    with open(sshd.root / "sshd_config", "a", encoding="utf-8") as config:
        config.write(f"Subsystem sftp {SFTP_SERVER}\n")
    sshd.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 10
    time.sleep(0.2)
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", sshd.port), 1):
            return
        time.sleep(0.05)
    raise RuntimeError("sshd did not come back after SIGHUP")


def ssh_options(sshd: Sshd, key: Path) -> list[str]:
    """OpenSSH client options for the unrestricted key: no user config, pinned host key."""
    return [
        "-F", "/dev/null", "-o", f"UserKnownHostsFile={sshd.known_hosts}",
        "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes",
        "-i", str(key),
    ]  # fmt: skip


def scp_argv(sshd: Sshd, key: Path, source: str, dest: str, cipher: str | None) -> list[str]:
    cipher_opt = ["-c", cipher] if cipher else []
    port = ["-P", str(sshd.port)]
    return ["scp", "-q", *ssh_options(sshd, key), *cipher_opt, *port, source, dest]


def clean_dir(path: Path) -> None:
    """Empty ``path`` between runs (links removed, never followed)."""
    for entry in path.iterdir():
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()
