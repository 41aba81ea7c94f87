"""Slurm commands on a "login node": the real sshd fixture in front of the real Slurm.

The site process is this test (the gateway); its adapter reaches Slurm only through ssh. The
login node's account gets SLURM_CONF from its authorized_keys line, as a login shell would."""

from __future__ import annotations

import hashlib
import os
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from bridge.core.errors import SchedulerError
from bridge.core.job import JobState
from schedulers.base import JobHandle, JobSpec, SchedulerOptions
from schedulers.login_host import LoginHost, exit_argv
from schedulers.slurm import SlurmScheduler
from tests.support.net import free_port
from tests.support.slurm import SlurmCluster
from tests.support.sshd import Sshd, keygen, start_sshd_for_test

pytest_plugins = ["tests.integration.slurm_fixtures"]


@pytest.fixture(scope="module")
def login_node(slurm: SlurmCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sshd]:
    root = tmp_path_factory.mktemp("login")
    sshd = start_sshd_for_test(root / "sshd", root / "unused-site.toml")
    keygen(root / "sshd" / "login_key")
    pub = (root / "sshd" / "login_key.pub").read_text().strip()
    wrapper = f'SLURM_CONF={slurm.env["SLURM_CONF"]} exec /bin/sh -c \\"$SSH_ORIGINAL_COMMAND\\"'
    sshd.authorize(f'command="{wrapper}",restrict,from="127.0.0.1" {pub}')
    yield sshd
    sshd.stop()


def adapter(sshd: Sshd, tmp_path: Path, **kw: object) -> tuple[SlurmScheduler, LoginHost]:
    host = LoginHost(
        target="127.0.0.1", port=sshd.port, known_hosts=str(sshd.known_hosts),
        identity_file=str(sshd.root / "login_key"), ssh_config=os.devnull,
        control_dir=tempfile.mkdtemp(prefix="mb-cm-"), **kw,  # type: ignore[arg-type]
    )  # fmt: skip
    slurm = SlurmScheduler()
    slurm.configure(SchedulerOptions(retries=3, retry_wait=0.1, login=host))
    return slurm, host


def spec(root: Path, argv: list[str]) -> JobSpec:
    job_id = str(uuid.uuid4())
    control = root / job_id / ".mint-bridge"
    control.mkdir(parents=True)
    return JobSpec(
        job_id=job_id, workdir=str(root / job_id), control_dir=str(control), argv=argv, env={},
        stdout_path=str(control / "stdout"), stderr_path=str(control / "stderr"),
    )  # fmt: skip


def wait_final(slurm: SlurmScheduler, handle: JobHandle) -> JobState:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        state = slurm.status([handle])[handle.native_id].state
        if state.is_final:
            return state
        time.sleep(0.3)
    raise AssertionError("the job did not end")


@pytest.mark.parametrize("shared", [True, False])
def test_a_job_runs_through_the_login_node_and_its_results_come_back(
    login_node: Sshd, tmp_path: Path, shared: bool
) -> None:
    extra = {} if shared else {"shared_workdir": False, "remote_root": str(tmp_path / "remote")}
    slurm, host = adapter(login_node, tmp_path, **extra)
    job = spec(tmp_path / "work", ["sh", "-c", "sha256sum in.bin > sum.txt; exit 3"])
    data = os.urandom(50_000)
    Path(job.workdir, "in.bin").write_bytes(data)
    try:
        native = slurm.submit(job)
        state = wait_final(slurm, JobHandle(job.job_id, native, job.control_dir))
    finally:
        subprocess.run(exit_argv(host), capture_output=True, check=False)
    assert native.isdigit()
    assert state is JobState.FAILED
    outcome = slurm.status([JobHandle(job.job_id, native, job.control_dir)])[native]
    assert outcome.exit_code == 3
    digest = hashlib.sha256(data).hexdigest()
    assert Path(job.workdir, "sum.txt").read_text() == f"{digest}  in.bin\n"
    if not shared:
        assert not (tmp_path / "remote" / job.job_id).exists()


def test_a_host_key_mismatch_is_named_and_not_retried(login_node: Sshd, tmp_path: Path) -> None:
    keygen(tmp_path / "other")
    other = (tmp_path / "other.pub").read_text().split()
    known = tmp_path / "known_hosts"
    known.write_text(f"[127.0.0.1]:{login_node.port} {other[0]} {other[1]}\n")
    slurm, _ = adapter(login_node, tmp_path)
    slurm.login = LoginHost(**{**slurm.login.__dict__, "known_hosts": str(known)})  # type: ignore[union-attr]
    before = login_node.ssh_connections()
    with pytest.raises(SchedulerError) as caught:
        slurm.status([JobHandle("j", "1", str(tmp_path))])
    assert "ssh-keyscan -p" in caught.value.message and not caught.value.transient
    assert login_node.ssh_connections() - before == 1, "not retried"


def test_a_login_host_that_is_down_is_retried_then_named(
    login_node: Sshd, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    slurm, host = adapter(login_node, tmp_path)
    slurm.login = LoginHost(**{**host.__dict__, "port": free_port()})
    with pytest.raises(SchedulerError) as caught:
        slurm._call(lambda: slurm.run(["squeue", "-h"], "status"))
    assert caught.value.transient
    assert f"cannot reach login host 127.0.0.1 port {slurm.login.port}" in caught.value.message
    assert "Connection refused" in caught.value.message
    assert caplog.text.count("retrying") == 2  # three attempts in all
