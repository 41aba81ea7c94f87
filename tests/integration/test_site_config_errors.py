"""A site's own mistakes name themselves at once, over the real sshd, with both SSH clients.

A site.toml with a typo, a TOML syntax error or no file at all is answered in the protocol:
``mint-bridge run`` exits 78 within two seconds on loopback, naming the file, the key and the
fix, and never says "reconnecting". A work base the site account cannot write is named with
``work_base``, the account and the site config.
"""

from __future__ import annotations

import getpass
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from bridge.core.errors import ExitCode
from tests.integration.conftest import run_bridge
from tests.support.site_toml import write_site_toml
from tests.support.sshd import Sshd, start_sshd_for_test

CLIENTS = ("paramiko", "openssh")


def bridge_toml(path: Path, sshd: Sshd) -> Path:
    """One site per SSH client, each with the default reconnect attempts (8): a permanent
    error that were retried would show in the time and in "reconnecting" lines."""
    text = "".join(
        f"""
[sites.{client}]
method = "ssh"
client = "{client}"
host = "site"
ssh_config = "{sshd.ssh_config}"
known_hosts = "{sshd.known_hosts}"
"""
        + ("share_connection = false\n" if client == "openssh" else "")
        for client in CLIENTS
    )
    path.write_text(text)
    return path


def open_dir() -> Path:
    """A directory another account can read (pytest's own are private to us)."""
    path = Path(tempfile.mkdtemp(prefix="mb-site-"))
    path.chmod(0o755)
    return path


def start(root: Path, site_config: Path, python: str | None = None) -> Sshd:
    return start_sshd_for_test(root, site_config, python=python)


@pytest.fixture(scope="module")
def site_dir() -> Iterator[Path]:
    path = open_dir()
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def server(site_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sshd]:
    # The forced command names this file; each test writes (or removes) it.
    sshd = start(tmp_path_factory.mktemp("sshd"), site_dir / "site.toml")
    yield sshd
    sshd.stop()


@pytest.fixture(scope="module")
def config(server: Sshd, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return bridge_toml(tmp_path_factory.mktemp("bridge") / "bridge.toml", server)


def counted_run(
    config: Path, site: str, cwd: Path, server: Sshd
) -> tuple[subprocess.CompletedProcess[bytes], int]:
    """The run and how many SSH connections it made (a retry would make more than one)."""
    before = server.ssh_connections()
    proc = run_bridge(config, "--site", site, "--command", "fatigue", "-o", "out", cwd=cwd)
    return proc, server.ssh_connections() - before


def assert_named_at_once(
    proc: subprocess.CompletedProcess[bytes], connections: int, text: str
) -> None:
    stderr = proc.stderr.decode(errors="replace")
    assert proc.returncode == ExitCode.CONFIG_INVALID, stderr
    assert text in stderr
    assert "reconnecting" not in stderr
    assert "closed in the middle of a message" not in stderr
    assert connections == 1, f"{connections} connections: {stderr}"


@pytest.mark.parametrize("client", CLIENTS)
def test_a_typo_in_the_site_config_is_named_with_its_fix(
    client: str, site_dir: Path, config: Path, tmp_path: Path, server: Sshd
) -> None:
    site_config = site_dir / "site.toml"
    site_config.write_text('[site]\nname = "s"\n\n[commands.fatigue]\nprogam = "/bin/true"\n')
    proc, connections = counted_run(config, client, tmp_path, server)
    assert_named_at_once(
        proc,
        connections,
        f"site config {site_config}: commands.fatigue: unknown key 'progam'; "
        "did you mean 'program'? allowed keys are ",
    )
    assert b"; fix it in that file" in proc.stderr


@pytest.mark.parametrize("client", CLIENTS)
def test_a_toml_syntax_error_is_named_with_its_line(
    client: str, site_dir: Path, config: Path, tmp_path: Path, server: Sshd
) -> None:
    site_config = site_dir / "site.toml"
    site_config.write_text('[site]\nname = "s"\n[commands.fatigue\nprogram = "/bin/true"\n')
    proc, connections = counted_run(config, client, tmp_path, server)
    assert_named_at_once(proc, connections, f"site config {site_config} is not valid TOML: ")
    assert b"(at line 3, column " in proc.stderr
    assert b"; fix it in that file" in proc.stderr


@pytest.mark.parametrize("client", CLIENTS)
def test_a_missing_site_config_is_named(
    client: str, site_dir: Path, config: Path, tmp_path: Path, server: Sshd
) -> None:
    site_config = site_dir / "site.toml"
    site_config.unlink(missing_ok=True)
    proc, connections = counted_run(config, client, tmp_path, server)
    assert_named_at_once(
        proc,
        connections,
        f"site config {site_config} does not exist; create it, or correct --config in the "
        "forced command of MInt's key",
    )


@pytest.mark.parametrize("client", CLIENTS)
def test_health_names_the_site_config_error(client: str, site_dir: Path, config: Path) -> None:
    site_config = site_dir / "site.toml"
    site_config.write_text('[site]\nnmae = "s"\n')
    proc = subprocess.run(
        [sys.executable, "-m", "bridge.cli", "health", "--config", str(config), "--site", client],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stdout
    assert f"site config {site_config}: site: unknown key 'nmae'; did you mean 'name'?" in (
        proc.stdout
    )


# --- a work base the site account cannot write ---------------------------------------------------


def unwritable_site(tmp_path_factory: pytest.TempPathFactory) -> tuple[Sshd, Path, Path, str]:
    """A site whose work base its account cannot write: as root, the site entry runs as
    nobody (root writes anywhere); otherwise the work base is made read-only."""
    root = open_dir()
    work_base = root / "work"
    work_base.mkdir(mode=0o755)
    # The audit dir must work, so that the work base is the first thing found unwritable.
    audit_dir = root / "audit"
    audit_dir.mkdir(mode=0o700)
    if os.getuid() == 0:
        os.chown(audit_dir, 65534, 65534)
    site_config = root / "site.toml"
    write_site_toml(
        site_config,
        site={"name": "ro", "work_base": work_base, "audit_dir": audit_dir},
        commands={"fatigue": {"program": "/bin/true"}},
    )
    site_config.chmod(0o644)
    if os.getuid() == 0:
        if shutil.which("setpriv") is None:
            pytest.skip("needs setpriv to run the site as another account")
        python = f"setpriv --reuid=65534 --regid=65534 --clear-groups {sys.executable}"
        user = "nobody"
    else:
        work_base.chmod(0o555)
        python, user = None, getpass.getuser()
    sshd = start(tmp_path_factory.mktemp("sshd-ro"), site_config, python=python)
    return sshd, work_base, site_config, user


@pytest.fixture(scope="module")
def readonly(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[Sshd, Path, Path, str]]:
    found = unwritable_site(tmp_path_factory)
    yield found
    found[0].stop()
    shutil.rmtree(found[1].parent, ignore_errors=True)


@pytest.mark.parametrize("client", CLIENTS)
def test_an_unwritable_work_base_is_named_with_its_fix(
    client: str, readonly: tuple[Sshd, Path, Path, str], tmp_path: Path
) -> None:
    sshd, work_base, site_config, user = readonly
    config = bridge_toml(tmp_path / "bridge.toml", sshd)
    before = sshd.ssh_connections()
    proc = run_bridge(config, "--site", client, "--command", "fatigue", cwd=tmp_path)
    connections = sshd.ssh_connections() - before
    stderr = proc.stderr.decode(errors="replace")
    assert proc.returncode == ExitCode.SITE_ERROR, stderr
    assert f"cannot create work dir {work_base}/" in stderr
    assert (
        f": Permission denied (work_base = {work_base}); make {work_base} writable by {user} "
        f"or set work_base in {site_config}"
    ) in stderr
    assert "reconnecting" not in stderr and connections == 1, (connections, stderr)
