"""The original SSH entry point's exact argument forms, on mint-bridge's SSH path."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from bridge.client.node_config import EXAMPLES_DIR
from tests.support.sshd import Sshd

DROP_IN = EXAMPLES_DIR / "compat" / "execute_remote_command.sample.py"
ORIGINAL_CMD = "client_cmd:~/misrc_remote_workflow/scripts/execute_remote-side_program_ssh.sh"


def write_inputs(tmp_path: Path) -> None:
    (tmp_path / "a.dat").write_text("A\n")
    (tmp_path / "b.dat").write_text("B\n")


def test_drop_in_with_a_configured_site(bridge_config: Path, tmp_path: Path) -> None:
    write_inputs(tmp_path)
    env = dict(os.environ, MINT_BRIDGE_CONFIG=str(bridge_config))
    proc = subprocess.run(
        [sys.executable, str(DROP_IN), "client_name:site", ORIGINAL_CMD,
         "client_files:a.dat,b.dat"],
        cwd=tmp_path, env=env, capture_output=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr.decode()
    assert (tmp_path / "listing.txt").read_text() == "a.dat\nb.dat\n"
    assert "legacy script done" in (tmp_path / "remote_program_exec.log").read_text()


def test_drop_in_with_an_ssh_config_alias(sshd: Sshd, tmp_path: Path) -> None:
    """As the original: client_name is a host alias from ~/.ssh/config, no bridge config."""
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True, mode=0o700)
    shutil.copy(sshd.ssh_config, home / ".ssh" / "config")
    shutil.copy(sshd.known_hosts, home / ".ssh" / "known_hosts")
    work = tmp_path / "module"
    work.mkdir()
    write_inputs(work)
    env = dict(os.environ, HOME=str(home))
    env.pop("MINT_BRIDGE_CONFIG", None)
    proc = subprocess.run(
        [sys.executable, "-m", "bridge.cli", "compat", "execute-remote-command",
         "client_name:site", ORIGINAL_CMD, "client_files:a.dat,b.dat"],
        cwd=work, env=env, capture_output=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr.decode()
    assert (work / "listing.txt").read_text() == "a.dat\nb.dat\n"


def test_drop_in_rejects_unknown_arguments(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, str(DROP_IN), "client_name:site", ORIGINAL_CMD, "client_flies:a.dat"],
        cwd=tmp_path, capture_output=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 65
    assert b"'client_flies:a.dat' is not one of client_name:HOST" in proc.stderr
