"""Real jobs through a real sshd with our forced command: bytes, checksums, exit codes, logs."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bridge.core.errors import ExitCode
from tests.integration.conftest import SiteEnv, run_bridge
from tests.support.sshd import Sshd


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize("site", ["site", "site-openssh", "local"])
def test_job_end_to_end(bridge_config: Path, tmp_path: Path, site: str) -> None:
    payloads = {
        "a.dat": b"alpha\n",
        "empty.dat": b"",
        "big.bin": os.urandom(3 * 1024 * 1024 + 17),
    }
    for name, data in payloads.items():
        (tmp_path / name).write_bytes(data)
    args = ["--site", site, "--command", "checksum"]
    for name in payloads:
        args += ["-i", name]
    proc = run_bridge(bridge_config, *args, "-o", "out", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr.decode()
    assert b"checked 3 files" in proc.stdout
    assert b"a line on stderr" in proc.stderr
    sums = (tmp_path / "out" / "sums.txt").read_text().splitlines()
    assert sorted(sums) == sorted(f"{sha(d)}  {n}" for n, d in payloads.items())
    assert (tmp_path / "out" / "sub" / "dir" / "nested.txt").read_text() == "nested result\n"
    # Unchanged inputs are not sent back; the control dir never is.
    assert sorted(os.listdir(tmp_path / "out")) == ["sub", "sums.txt"]


@pytest.mark.parametrize("site", ["site", "site-openssh"])
def test_solver_exit_code_passes_through(bridge_config: Path, tmp_path: Path, site: str) -> None:
    proc = run_bridge(
        bridge_config, "--site", site, "--command", "fail", "-p", "code=7", cwd=tmp_path
    )
    assert proc.returncode == 7
    assert b"about to fail" in proc.stdout
    assert b"failure detail" in proc.stderr


def test_log_streams_live(bridge_config: Path, tmp_path: Path) -> None:
    argv = [sys.executable, "-m", "bridge.cli", "run", "--config", str(bridge_config)]
    argv += ["--site", "site", "--command", "ticks", "-p", "count=4", "-p", "delay=0.5"]
    proc = subprocess.Popen(argv, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None
    first = proc.stdout.readline()
    still_running = proc.poll() is None
    rest, _ = proc.communicate(timeout=60)
    assert first == b"tick 0\n"
    assert still_running, "the first log line must arrive while the job is still running"
    assert rest == b"tick 1\ntick 2\ntick 3\n"
    assert proc.returncode == 0
    assert (tmp_path / "ticks.txt").read_text() == "4\n"


def test_unknown_command_is_refused(bridge_config: Path, tmp_path: Path) -> None:
    proc = run_bridge(bridge_config, "--site", "site", "--command", "rm", cwd=tmp_path)
    assert proc.returncode == ExitCode.COMMAND_NOT_ALLOWED
    assert b"has no command 'rm'" in proc.stderr
    assert b"checksum" in proc.stderr  # says what is offered


@pytest.mark.parametrize(
    ("param", "expected"),
    [
        ("code=; rm -rf ~", b"must be an integer"),
        ("code=999", b"must be at most 255"),
        ("nope=1", b"has no parameter 'nope'"),
    ],
)
def test_invalid_parameters_are_refused(
    bridge_config: Path, tmp_path: Path, site_env: SiteEnv, param: str, expected: bytes
) -> None:
    before = set(os.listdir(site_env.work_base))
    proc = run_bridge(
        bridge_config, "--site", "site", "--command", "fail", "-p", param, cwd=tmp_path
    )
    assert proc.returncode == ExitCode.PARAMETER_INVALID
    assert expected in proc.stderr
    assert set(os.listdir(site_env.work_base)) == before  # nothing was created at the site


def test_shell_text_in_a_string_parameter_stays_one_argument(
    bridge_config: Path, tmp_path: Path
) -> None:
    strict = run_bridge(
        bridge_config, "--site", "site", "--command", "argv", "-p", "label=; rm -rf ~", cwd=tmp_path
    )
    assert strict.returncode == ExitCode.PARAMETER_INVALID
    assert b"must match the pattern" in strict.stderr
    free = run_bridge(
        bridge_config, "--site", "site", "--command", "argv", "-p", "free=; rm -rf ~ $(id)",
        cwd=tmp_path,
    )  # fmt: skip
    assert free.returncode == 0, free.stderr.decode()
    import json

    assert json.loads((tmp_path / "argv.json").read_text()) == ["x", "; rm -rf ~ $(id)"]


def test_symlinks_never_lead_out_of_the_work_dir(
    bridge_config: Path, tmp_path: Path, site_env: SiteEnv
) -> None:
    proc = run_bridge(bridge_config, "--site", "site", "--command", "links", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr.decode()
    returned = sorted(os.listdir(tmp_path))
    assert returned == ["inside", "result.txt"]
    assert (tmp_path / "inside").read_text() == "real result\n"
    assert not (tmp_path / "inside").is_symlink()
    stderr = proc.stderr.decode()
    assert "leak not returned: symlink to a path outside the work dir" in stderr
    assert "loop not returned" in stderr
    assert "fifo not returned" in stderr
    for path in tmp_path.rglob("*"):
        assert b"SITE-SECRET-DATA" not in path.read_bytes()


def test_globbed_returns(bridge_config: Path, tmp_path: Path) -> None:
    (tmp_path / "x.dat").write_bytes(b"x")
    proc = run_bridge(
        bridge_config, "--site", "site", "--command", "globbed", "-i", "x.dat", cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr.decode()
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file()) == [
        "sub/dir/nested.txt",
        "sums.txt",
        "x.dat",
    ]


def test_legacy_site_script_convention(bridge_config: Path, tmp_path: Path) -> None:
    for name in ("b.dat", "a.dat"):
        (tmp_path / name).write_text(name)
    proc = run_bridge(
        bridge_config, "--site", "site", "--command", "legacy", "-i", "a.dat", "-i", "b.dat",
        cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr.decode()
    log = (tmp_path / "remote_program_exec.log").read_text()
    assert "legacy script running in " in log and "legacy script done" in log
    assert b"legacy script done" in proc.stdout  # and it streamed live
    assert (tmp_path / "listing.txt").read_text() == "a.dat\nb.dat\n"


def test_work_dir_is_private_and_kept(
    bridge_config: Path, tmp_path: Path, site_env: SiteEnv
) -> None:
    job_id = "0b7c4c2e-3a43-4d8e-9a8b-6c2d7e1f0a11"
    proc = run_bridge(
        bridge_config, "--site", "site", "--command", "fail", "-p", "code=0", "--job-id", job_id,
        cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr.decode()
    workdir = site_env.work_base / job_id
    assert workdir.is_dir()
    assert (workdir.stat().st_mode & 0o777) == 0o700
    # The bridge exits once it has sent its acknowledgement; the site records it just after.
    delivered = workdir / ".mint-bridge" / "delivered"
    deadline = time.monotonic() + 10
    while not delivered.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert delivered.exists()


def test_missing_input_is_reported_before_connecting(bridge_config: Path, tmp_path: Path) -> None:
    proc = run_bridge(
        bridge_config, "--site", "site", "--command", "checksum", "-i", "nope.dat", cwd=tmp_path
    )
    assert proc.returncode == ExitCode.INPUT_MISSING
    assert b"nope.dat cannot be read" in proc.stderr


def test_inputs_may_be_symlinks_on_the_bridge(bridge_config: Path, tmp_path: Path) -> None:
    real = tmp_path / "store" / "real.dat"
    real.parent.mkdir()
    real.write_bytes(b"linked content")
    (tmp_path / "mod").mkdir()
    (tmp_path / "mod" / "port.dat").symlink_to(real)
    proc = run_bridge(
        bridge_config,
        "--site",
        "site",
        "--command",
        "checksum",
        "-i",
        "port.dat",
        cwd=tmp_path / "mod",
    )
    assert proc.returncode == 0, proc.stderr.decode()
    assert (tmp_path / "mod" / "sums.txt").read_text() == f"{sha(b'linked content')}  port.dat\n"
    assert (tmp_path / "mod" / "port.dat").is_symlink()  # the module's link is left alone


def test_sshd_fixture_is_real(sshd: Sshd) -> None:
    assert sshd.proc.poll() is None
    assert time.time() > 0 and sshd.port > 0
