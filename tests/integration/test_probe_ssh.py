"""The end-to-end probe over the real sshd: ``health --probe`` and ``sites test`` send the
built-in job through the site's forced command, with both SSH clients, and report each step.

A healthy site passes with a SHA-256-verified round trip; a missing program warns naming the
command and its path; an unwritable work base fails naming it; a site that turned probes off
says so. The probe's work dir never stays behind.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bridge import __version__
from tests.integration.test_site_config_errors import bridge_toml, open_dir, start
from tests.support.site_toml import write_site_toml
from tests.support.sshd import Sshd

CLIENTS = ("paramiko", "openssh")
STEPS = ("probe.connect", "probe.stage_in", "probe.run", "probe.stage_out", "probe.verify")


@pytest.fixture(scope="module")
def site_dir() -> Iterator[Path]:
    path = open_dir()
    (path / "work").mkdir()
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def server(site_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sshd]:
    sshd = start(tmp_path_factory.mktemp("sshd"), site_dir / "site.toml")
    yield sshd
    sshd.stop()


@pytest.fixture(scope="module")
def config(server: Sshd, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return bridge_toml(tmp_path_factory.mktemp("bridge") / "bridge.toml", server)


def write_site(site_dir: Path, program: str = "/bin/true", **site: Any) -> Path:
    return write_site_toml(
        site_dir / "site.toml",
        site={"name": "probed", "work_base": site_dir / "work", **site},
        commands={"fatigue": {"program": program}, "echo": {"program": "/bin/echo"}},
    )


def health(*args: str) -> tuple[int, dict[str, Any]]:
    proc = subprocess.run(
        [sys.executable, "-m", "bridge.cli", *args, "--json"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    doc = json.loads(proc.stdout)
    assert doc["exit_code"] == proc.returncode
    return proc.returncode, {c["check"]: c for c in doc["checks"] if c["target"] != "bridge"}


@pytest.mark.parametrize("client", CLIENTS)
def test_a_healthy_site_passes_with_a_verified_round_trip(
    client: str, site_dir: Path, config: Path
) -> None:
    write_site(site_dir)
    code, checks = health("health", "--config", str(config), "--site", client, "--probe")
    assert code == 0, checks
    for step in STEPS:
        assert checks[step]["status"] == "ok", checks[step]
        assert checks[step]["unit"] == "ms" and checks[step]["value"] >= 0
    assert "came back unchanged (SHA-256 " in checks["probe.verify"]["message"]
    assert checks["probe.work_base"]["value"] == str(site_dir / "work")
    assert not any(name.startswith("probe.program.") for name in checks)
    assert os.listdir(site_dir / "work") == [], "the probe's work dir must be removed"


@pytest.mark.parametrize("client", CLIENTS)
def test_a_missing_program_warns_naming_the_command_and_path(
    client: str, site_dir: Path, config: Path
) -> None:
    site_config = write_site(site_dir, program="/opt/no-such/solver")
    code, checks = health("sites", "test", client, "--config", str(config))
    assert code == 1, checks  # warn
    found = checks["probe.program.fatigue"]
    assert found["status"] == "warn"
    assert found["message"] == "command fatigue: program /opt/no-such/solver does not exist"
    assert found["fix"] == (
        f"install it, or fix commands.fatigue.program in {site_config} (at the site)"
    )
    assert "probe.program.echo" not in checks
    assert all(checks[step]["status"] == "ok" for step in STEPS)


def test_an_unwritable_work_base_fails_naming_it(tmp_path_factory: pytest.TempPathFactory) -> None:
    from tests.integration.test_site_config_errors import unwritable_site

    sshd, work_base, site_config, user = unwritable_site(tmp_path_factory)
    try:
        config = bridge_toml(tmp_path_factory.mktemp("bridge-ro") / "bridge.toml", sshd)
        code, checks = health("health", "--config", str(config), "--site", "paramiko", "--probe")
    finally:
        sshd.stop()
        shutil.rmtree(work_base.parent, ignore_errors=True)
    assert code == 2, checks  # fail
    failed = checks["probe.stage_in"]
    assert failed["status"] == "fail"
    assert f"cannot create work dir {work_base}/" in failed["message"]
    assert (
        f"make {work_base} writable by {user} or set work_base in {site_config}"
        in failed["message"]
    )
    assert checks["probe.connect"]["status"] == "ok"
    for later in STEPS[2:]:
        assert checks[later]["status"] == "unknown"


def test_a_site_that_turned_probes_off_says_so(site_dir: Path, config: Path) -> None:
    write_site(site_dir, allow_probe=False)
    code, checks = health("health", "--config", str(config), "--site", "paramiko", "--probe")
    assert code == 1, checks
    assert checks["probe"]["status"] == "warn"
    assert "does not answer probes ([site] allow_probe = false" in checks["probe"]["message"]
    assert not any(name in checks for name in STEPS)


def test_without_probe_health_sends_no_job(site_dir: Path, config: Path) -> None:
    write_site(site_dir, program="/opt/no-such/solver")
    code, checks = health("health", "--config", str(config), "--site", "paramiko")
    assert code == 0, checks  # the missing program goes unnoticed without --probe
    assert not any(name.startswith("probe") for name in checks)
    assert checks["ssh.hello"]["value"] == f"mint-bridge {__version__}, commands (2): echo, fatigue"
