"""The OpenSSH client backend (``client = "openssh"``) against the real sshd: same protocol,
same guarantees, and jobs that share one connection."""

from __future__ import annotations

import os
import shutil
import signal
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from bridge.core.errors import ExitCode
from tests.integration.conftest import SiteEnv, run_bridge, ssh_masters, stop_ssh_masters
from tests.integration.test_ssh_resilience import counter_lines, start_bridge
from tests.support.site_toml import write_site_toml
from tests.support.sshd import Sshd, forced_command, keygen
from tests.support.waiting import wait_for


def site_block(
    name: str,
    sshd: Sshd,
    control_dir: Path,
    *,
    known_hosts: Path | None = None,
    key: Path | None = None,
    share: bool = True,
    port: int | None = None,
) -> str:
    lines = [
        f"[sites.{name}]",
        'method = "ssh"',
        'client = "openssh"',
        'host = "site"' if port is None else f'host = "127.0.0.1"\nport = {port}',
        f'ssh_config = "{sshd.ssh_config if port is None else os.devnull}"',
        f'known_hosts = "{known_hosts or sshd.known_hosts}"',
        f'identity_file = "{key or sshd.client_key}"',
        f"share_connection = {'true' if share else 'false'}",
        "reconnect_attempts = 5",
    ]
    if share:
        lines.append(f'control_dir = "{control_dir}"')
    return "\n".join(lines) + "\n"


@pytest.fixture
def control_dir() -> Iterator[Path]:
    # Short on purpose: unix socket paths are limited, pytest's tmp paths can be long.
    path = Path(tempfile.mkdtemp(prefix="mb-cm-"))
    path.rmdir()  # the client must create it itself, private
    yield path
    stop_ssh_masters(path)
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def config(sshd: Sshd, control_dir: Path, tmp_path: Path) -> Path:
    path = tmp_path / "bridge.toml"
    text = site_block("shared", sshd, control_dir)
    text += site_block("unshared", sshd, control_dir, share=False)
    path.write_text(text)
    return path


def test_big_result_comes_back_intact(config: Path, tmp_path: Path) -> None:
    mib = 1024 * 1024
    proc = run_bridge(
        config, "--site", "shared", "--command", "big", "-p", f"size={12 * mib}", "-o", "out",
        cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr.decode()
    data = (tmp_path / "out" / "big.out").read_bytes()
    assert len(data) == 12 * mib
    # testprog's "big" repeats one random MiB: any lost, doubled or shifted chunk shows.
    assert data == data[:mib] * 12


def test_jobs_share_one_connection(
    config: Path, sshd: Sshd, control_dir: Path, tmp_path: Path
) -> None:
    before = {p.pid for p in sshd.connection_processes()}
    for run in range(3):
        proc = run_bridge(config, "--site", "shared", "--command", "fail", "-p", f"code={run}",
                          cwd=tmp_path)  # fmt: skip
        assert proc.returncode == run, proc.stderr.decode()
    new = [p for p in sshd.connection_processes() if p.pid not in before]
    assert len(new) == 1, "three jobs must ride one SSH connection"
    assert len(ssh_masters(control_dir)) == 1
    assert stat.S_IMODE(control_dir.stat().st_mode) == 0o700
    sockets = list(control_dir.iterdir())
    assert len(sockets) == 1 and stat.S_ISSOCK(sockets[0].stat().st_mode)


def test_unshared_jobs_leave_no_connection(
    config: Path, sshd: Sshd, control_dir: Path, tmp_path: Path
) -> None:
    before = {p.pid for p in sshd.connection_processes()}
    proc = run_bridge(config, "--site", "unshared", "--command", "fail", "-p", "code=0",
                      cwd=tmp_path)  # fmt: skip
    assert proc.returncode == 0, proc.stderr.decode()
    wait_for(lambda: not [p for p in sshd.connection_processes() if p.pid not in before],
             timeout=10, what="the connection to close")  # fmt: skip
    assert not control_dir.exists() or not list(control_dir.iterdir())


def test_stale_control_socket_is_replaced(
    config: Path, sshd: Sshd, control_dir: Path, tmp_path: Path
) -> None:
    assert run_bridge(config, "--site", "shared", "--command", "fail", "-p", "code=0",
                      cwd=tmp_path).returncode == 0  # fmt: skip
    for master in ssh_masters(control_dir):
        master.kill()  # leaves its socket behind
    wait_for(lambda: not ssh_masters(control_dir), timeout=10, what="the master to die")
    proc = run_bridge(config, "--site", "shared", "--command", "fail", "-p", "code=5", cwd=tmp_path)
    assert proc.returncode == 5, proc.stderr.decode()
    assert len(ssh_masters(control_dir)) == 1


def test_dropped_connection_reattaches_and_job_runs_once(
    config: Path, sshd: Sshd, site_env: SiteEnv, tmp_path: Path
) -> None:
    before = len(counter_lines(site_env))
    proc = start_bridge(
        config, tmp_path, "--site", "shared", "--command", "once", "-p", "seconds=3",
        "--job-id", "7f3d5b9c-b5e4-4a0d-8213-4d5e6f7a8b92", "-v",
    )  # fmt: skip
    wait_for(lambda: len(counter_lines(site_env)) > before, what="the job to start")
    for child in sshd.connection_processes():
        child.kill()
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err.decode()
    assert b"reconnecting" in err and b"re-attached" in err
    assert len(counter_lines(site_env)) == before + 1, "the job must run exactly once"
    assert out == b"working 0\nworking 1\nworking 2\n"


def test_sigterm_cancels_the_job_at_the_site(
    config: Path, site_env: SiteEnv, tmp_path: Path
) -> None:
    before = len(counter_lines(site_env))
    proc = start_bridge(
        config, tmp_path, "--site", "shared", "--command", "once", "-p", "seconds=60",
        "--job-id", "8a4e6c0d-c6f5-4b1e-9324-5e6f7a8b9ca3",
    )  # fmt: skip
    wait_for(lambda: len(counter_lines(site_env)) > before, what="the job to start")
    solver_pid = int(counter_lines(site_env)[-1])
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == ExitCode.CANCELLED, err.decode()
    assert b"cancelled at the site" in err
    wait_for(lambda: not psutil.pid_exists(solver_pid)
             or psutil.Process(solver_pid).status() == psutil.STATUS_ZOMBIE,
             timeout=10, what="the solver to be gone")  # fmt: skip


# --- refusals: the same exit codes as with paramiko -------------------------------------------


def refused(tmp_path: Path, text: str) -> subprocess.CompletedProcess[bytes]:
    config = tmp_path / "refused.toml"
    config.write_text(text)
    return run_bridge(config, "--site", "s", "--command", "checksum", cwd=tmp_path)


def test_changed_host_key_is_refused(sshd: Sshd, control_dir: Path, tmp_path: Path) -> None:
    other = tmp_path / "other_host"
    keygen(other, "impostor")
    kind, key = other.with_suffix(".pub").read_text().split()[:2]
    known = tmp_path / "known_hosts"
    known.write_text(f"[127.0.0.1]:{sshd.port} {kind} {key}\n")
    proc = refused(tmp_path, site_block("s", sshd, control_dir, known_hosts=known))
    assert proc.returncode == ExitCode.HOST_KEY_REJECTED, proc.stderr.decode()
    message = proc.stderr.decode()
    assert f"not the one pinned in {known}" in message
    assert "mint-bridge setup pin-host-key s --fingerprint SHA256:..." in message
    assert message.count("\n") == 2  # the job id line, then one line naming the fix
    assert message.startswith("mint-bridge: job ")
    assert known.read_text() == f"[127.0.0.1]:{sshd.port} {kind} {key}\n"  # left as it was


def test_unknown_host_key_is_refused(sshd: Sshd, control_dir: Path, tmp_path: Path) -> None:
    known = tmp_path / "empty_known_hosts"
    known.write_text("")
    proc = refused(tmp_path, site_block("s", sshd, control_dir, known_hosts=known, share=False))
    assert proc.returncode == ExitCode.HOST_KEY_REJECTED, proc.stderr.decode()
    assert b"Host key verification failed" in proc.stderr
    assert known.read_text() == "", "a first connection must never be trusted"


def test_unauthorized_key_is_refused(sshd: Sshd, control_dir: Path, tmp_path: Path) -> None:
    stranger = tmp_path / "stranger"
    keygen(stranger)
    # By port, not through the alias: ssh would also offer the alias's IdentityFile.
    proc = refused(tmp_path, site_block("s", sshd, control_dir, key=stranger, port=sshd.port))
    assert proc.returncode == ExitCode.AUTH_FAILED, proc.stderr.decode()
    assert f"refused the key {stranger}".encode() in proc.stderr


def test_unreachable_site(sshd: Sshd, control_dir: Path, tmp_path: Path) -> None:
    text = site_block("s", sshd, control_dir, port=1).replace(
        "reconnect_attempts = 5", "reconnect_attempts = 1"
    )
    proc = refused(tmp_path, text)
    assert proc.returncode == ExitCode.SITE_UNREACHABLE, proc.stderr.decode()
    assert b"cannot reach 127.0.0.1:1" in proc.stderr and b"Connection refused" in proc.stderr


def test_control_dir_of_another_user_is_refused(
    sshd: Sshd, control_dir: Path, tmp_path: Path
) -> None:
    if os.getuid() != 0:
        pytest.skip("needs root to give a directory to another user")
    control_dir.mkdir(mode=0o700)
    os.chown(control_dir, 65534, 65534)
    proc = refused(tmp_path, site_block("s", sshd, control_dir))
    assert proc.returncode == ExitCode.CONFIG_INVALID
    assert b"not a directory owned by this user" in proc.stderr


def test_two_sites_on_one_account_never_share_a_connection(
    config: Path, sshd: Sshd, control_dir: Path, tmp_path: Path
) -> None:
    # A second key on the same account, forced to another site config: a job for site "b"
    # must reach that config even while site "shared" keeps a connection open.
    other_config = tmp_path / "other-site.toml"
    echo = shutil.which("echo")
    write_site_toml(
        other_config,
        site={
            "name": "other",
            "work_base": tmp_path / "work-b",
            "log_file": tmp_path / "site-b.log",
        },
        commands={"whoami": {"program": echo, "args": ["this is site b"]}},
    )
    (tmp_path / "work-b").mkdir()
    key_b = tmp_path / "key_b"
    keygen(key_b)
    sshd.authorize(
        f'command="{forced_command(other_config)}",restrict,from="127.0.0.1" '
        + key_b.with_suffix(".pub").read_text().strip()
    )
    path = tmp_path / "two.toml"
    path.write_text(
        site_block("shared", sshd, control_dir)
        + site_block("b", sshd, control_dir, key=key_b, port=sshd.port)
    )
    first = run_bridge(path, "--site", "shared", "--command", "fail", "-p", "code=0", cwd=tmp_path)
    assert first.returncode == 0, first.stderr.decode()
    proc = run_bridge(path, "--site", "b", "--command", "whoami", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr.decode()
    assert proc.stdout == b"this is site b\n"
    wrong = run_bridge(path, "--site", "b", "--command", "fail", cwd=tmp_path)
    assert wrong.returncode == ExitCode.COMMAND_NOT_ALLOWED
    assert len(ssh_masters(control_dir)) == 2
