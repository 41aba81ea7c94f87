"""Fixtures that start real services: an OpenSSH server with our forced command, and brokers.

With CI=true a service that cannot start fails the test; elsewhere it skips it
(``tests.support.services``). Every service is stopped when its scope ends.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import pytest

from tests.support.broker import BrokerFactory, BrokerProcess, BrokerUnavailable, start_broker
from tests.support.services import unavailable
from tests.support.sites import write_site_config
from tests.support.sshd import Sshd, start_sshd_for_test


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
    server = start_sshd_for_test(tmp_path_factory.mktemp("sshd"), site_env.site_config)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def broker_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerFactory]:
    """Starts brokers for one module: ``name`` names the temp dir, ``settings`` go to
    ``start_broker`` as they are. Every broker it started is stopped after the module."""
    started: list[BrokerProcess] = []

    def start(name: str = "broker", **settings: Any) -> BrokerProcess:
        try:
            process = start_broker(tmp_path_factory.mktemp(name), **settings)
        except (BrokerUnavailable, OSError, subprocess.SubprocessError) as exc:
            unavailable(f"cannot start the broker: {exc}")
        started.append(process)
        return process

    yield start
    for process in started:
        process.stop()


@pytest.fixture(scope="module")
def broker(broker_factory: BrokerFactory) -> BrokerProcess:
    """One broker per module, whose leases lapse after 10 s so a killed agent's job is soon
    offered again. A module that needs other settings defines its own ``broker`` with
    ``broker_factory``."""
    return broker_factory(jobs='lease_ttl = "10s"')


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
