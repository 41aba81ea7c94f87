"""Fixtures that start real services: an OpenSSH server with our forced command.

With CI=true a service that cannot start fails the test; elsewhere it skips it.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

from bridge.client.node_config import EXAMPLES_DIR
from tests.support.sshd import Sshd, SshdUnavailable, start_sshd

PROGRAMS = Path(__file__).parent / "programs"
IN_CI = os.environ.get("CI", "").lower() == "true"


def service_unavailable(message: str) -> None:
    if IN_CI:
        pytest.fail(f"required service unavailable in CI: {message}")
    pytest.skip(message)


def write_site_config(path: Path, work_base: Path, private: Path) -> None:
    prog = PROGRAMS / "testprog.py"
    model = EXAMPLES_DIR / "kousoku" / "private" / "Modeldata.inp"
    path.write_text(
        f"""
[site]
name = "test-site"
work_base = "{work_base}"
retention = "1h"
log_file = "{path.parent / "site.log"}"

[commands.checksum]
program = "{prog}"
args = ["checksum"]

[commands.fail]
program = "{prog}"
args = ["exit", "{{code}}"]
[commands.fail.params.code]
type = "int"
default = 3
min = 0
max = 255

[commands.ticks]
program = "{prog}"
args = ["ticks", "{{count}}", "{{delay}}"]
[commands.ticks.params.count]
type = "int"
default = 3
[commands.ticks.params.delay]
type = "float"
default = 0.3

[commands.argv]
program = "{prog}"
args = ["argv", "{{label}}", "{{free}}"]
[commands.argv.params.label]
type = "string"
default = "x"
[commands.argv.params.free]
type = "string"
pattern = ".*"
default = ""

[commands.links]
program = "{prog}"
args = ["links", "{private / "secret.txt"}"]

[commands.once]
program = "{prog}"
args = ["once", "{private / "counter.txt"}", "{{seconds}}"]
[commands.once.params.seconds]
type = "float"
default = 3

[commands.big]
program = "{prog}"
args = ["big", "{{size}}"]
[commands.big.params.size]
type = "int"
default = 1048576

[commands.legacy]
program = "{PROGRAMS / "execute_remote-side_program_ssh.sh"}"
log_file = "remote_program_exec.log"

[commands."execute_remote-side_program_ssh.sh"]
program = "{PROGRAMS / "execute_remote-side_program_ssh.sh"}"
log_file = "remote_program_exec.log"

[commands.fatigue]
program = "{EXAMPLES_DIR / "kousoku" / "solver.py"}"
args = ["--model", "{model}", "--cycles", "{{cycles}}"]
inputs = ["yield_strength.dat", "tensile_strength.dat", "reduction_area.dat"]
exclude = ["*.inp"]
[commands.fatigue.params.cycles]
type = "int"
default = 100000

[commands.globbed]
program = "{prog}"
args = ["checksum"]
returns = ["sums.txt", "sub/**"]
"""
    )


@dataclass
class SiteEnv:
    root: Path
    site_config: Path
    work_base: Path
    private: Path


@pytest.fixture(scope="session")
def site_env(tmp_path_factory: pytest.TempPathFactory) -> SiteEnv:
    root = tmp_path_factory.mktemp("site")
    work_base, private = root / "work", root / "private"
    work_base.mkdir()
    private.mkdir()
    (private / "secret.txt").write_text("SITE-SECRET-DATA\n")
    site_config = root / "site.toml"
    write_site_config(site_config, work_base, private)
    return SiteEnv(root, site_config, work_base, private)


@pytest.fixture(scope="session")
def sshd(site_env: SiteEnv, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sshd]:
    try:
        server = start_sshd(tmp_path_factory.mktemp("sshd"), site_env.site_config)
    except (SshdUnavailable, OSError, subprocess.CalledProcessError) as exc:
        service_unavailable(f"cannot start sshd: {exc}")
        raise
    yield server
    server.stop()


@pytest.fixture(scope="session")
def bridge_config(sshd: Sshd, site_env: SiteEnv) -> Iterator[Path]:
    path = sshd.root / "bridge.toml"
    control_dir = sshd.root / "cm"
    path.write_text(
        f"""
[sites.site]
method = "ssh"
host = "site"
ssh_config = "{sshd.ssh_config}"
known_hosts = "{sshd.known_hosts}"
reconnect_attempts = 5

[sites.site-openssh]
method = "ssh"
client = "openssh"
host = "site"
ssh_config = "{sshd.ssh_config}"
known_hosts = "{sshd.known_hosts}"
control_dir = "{control_dir}"
reconnect_attempts = 5

[sites.local]
method = "local"
site_config = "{site_env.site_config}"
"""
    )
    yield path
    stop_ssh_masters(control_dir)


def ssh_masters(control_dir: Path) -> list[psutil.Process]:
    """Background ``ssh`` masters of shared connections whose sockets live in ``control_dir``."""
    found = []
    for proc in psutil.process_iter(["name", "cmdline"]):
        cmdline = " ".join(proc.info["cmdline"] or [])
        if proc.info["name"] == "ssh" and str(control_dir) in cmdline and "[mux]" in cmdline:
            found.append(proc)
    return found


def stop_ssh_masters(control_dir: Path) -> None:
    for proc in ssh_masters(control_dir):
        with contextlib.suppress(psutil.Error):
            proc.kill()


def run_bridge(
    bridge_config: Path, *args: str, cwd: Path, timeout: float = 60
) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "bridge.cli", "run", "--config", str(bridge_config), *args],
        cwd=cwd,
        capture_output=True,
        timeout=timeout,
    )
