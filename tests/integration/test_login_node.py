"""Slurm commands on a "login node": the real sshd fixture in front of the real Slurm.

The site process is this test (the gateway); its adapter reaches Slurm only through ssh. The
login node's account gets SLURM_CONF from its authorized_keys line, as a login shell would."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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


# --- a whole site behind the login node: setup, health, jobs through `mint-bridge run` --------

TESTPROG = Path(__file__).parent / "programs" / "testprog.py"


@dataclass
class LoginSite:
    home: Path
    config: Path
    bridge_config: Path
    setup_args: list[str]
    env: dict[str, str]  # the gateway's: no SLURM_CONF, so Slurm answers only on the login node


def node_cli(site: LoginSite, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "node_setup.cli", *args], env=site.env, capture_output=True,
        text=True, timeout=120, check=False,
    )  # fmt: skip


def fingerprint_of(public_key: Path) -> str:
    out = subprocess.run(["ssh-keygen", "-lf", str(public_key)], capture_output=True, text=True)
    return out.stdout.split()[1]


def site_health(site: LoginSite, config: Path) -> dict[str, dict[str, Any]]:
    done = node_cli(site, "health", "--json", "--site-side", "--config", str(config))
    doc = json.loads(done.stdout)
    return {c["check"]: c for c in doc["checks"] if c["target"] == "site"}


@pytest.fixture(scope="module")
def login_site(login_node: Sshd, tmp_path_factory: pytest.TempPathFactory) -> LoginSite:
    root = tmp_path_factory.mktemp("login-site")
    home = root / "home"
    home.mkdir()
    keygen(root / "mint_key")
    env = {k: v for k, v in os.environ.items() if k not in ("SLURM_CONF", "MINT_BRIDGE_CONFIG")}
    env["HOME"] = str(home)
    args = [
        "setup", "site", "--site-id", "behind-login", "--scheduler", "slurm",
        "--mint-ip", "127.0.0.1", "--mint-key", str(root / "mint_key.pub"),
        "--work-base", str(root / "work"), "--unit-dir", str(home / "units"), "--yes",
        "--login-host", "127.0.0.1", "--login-port", str(login_node.port),
        "--login-identity-file", str(login_node.root / "login_key"),
    ]  # fmt: skip
    bridge_config = root / "bridge.toml"
    config = home / ".config/mint-bridge/site.toml"
    bridge_config.write_text(f'[sites.login]\nmethod = "local"\nsite_config = "{config}"\n')
    return LoginSite(home, config, bridge_config, args, env)


def test_setup_pins_the_login_nodes_key_only_once_confirmed(
    login_site: LoginSite, login_node: Sshd
) -> None:
    host_fp = fingerprint_of(login_node.host_key.with_suffix(".pub"))
    refused = node_cli(login_site, *login_site.setup_args)
    assert refused.returncode == 64, refused.stderr
    assert f"it offers ssh-ed25519 {host_fp}" in refused.stderr
    assert f"again with --login-fingerprint {host_fp}" in refused.stderr
    assert not login_site.config.exists()
    done = node_cli(login_site, *login_site.setup_args, "--login-fingerprint", host_fp)
    assert done.returncode == 0, done.stderr
    known = login_site.config.parent / "known_hosts_login"
    host_key = login_node.host_key.with_suffix(".pub").read_text().split()
    assert known.read_text() == f"[127.0.0.1]:{login_node.port} {host_key[0]} {host_key[1]}\n"
    text = login_site.config.read_text()
    assert f'login_host = "127.0.0.1"\nlogin_port = {login_node.port}\n' in text
    assert f'login_known_hosts = "{known}"' in text
    # The admin's own keys and commands (a short control dir, a fast poll, a real solver) ...
    control = tempfile.mkdtemp(prefix="mb-lc-")
    admin = text.replace(
        "[scheduler]\n",
        f'[scheduler]\npoll_interval = 0.5   # ours\nlogin_control_dir = "{control}"\n',
    ) + (
        f'\n[commands.checksum]\nprogram = "{TESTPROG}"\nargs = ["checksum"]\n'
        'scheduler = "slurm"\n'
        f'[commands.fail]\nprogram = "{TESTPROG}"\nargs = ["exit", "{{code}}"]\n'
        'scheduler = "slurm"\n[commands.fail.params.code]\ntype = "int"\ndefault = 3\n'
    )
    login_site.config.write_text(admin)
    # ... are kept by a second run, which has nothing of its own to change.
    again = node_cli(login_site, *login_site.setup_args, "--login-fingerprint", host_fp)
    assert again.returncode == 0, again.stderr
    assert login_site.config.read_text() == admin
    wrong = "SHA256:" + "A" * 43
    bad = node_cli(login_site, *login_site.setup_args, "--login-fingerprint", wrong)
    assert (
        bad.returncode != 0 and f"no host key of 127.0.0.1:{login_node.port} matches" in bad.stderr
    )


def test_a_whole_job_runs_on_slurm_behind_the_login_node(
    login_site: LoginSite, tmp_path: Path
) -> None:
    data = os.urandom(200_000)
    (tmp_path / "input.bin").write_bytes(data)
    run = [sys.executable, "-m", "bridge.cli", "run", "--config", str(login_site.bridge_config)]
    done = subprocess.run(
        [*run, "--site", "login", "--command", "checksum", "-i", "input.bin"], cwd=tmp_path,
        env=login_site.env, capture_output=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr.decode()
    assert done.stdout == b"checked 1 files\n"
    digest = hashlib.sha256(data).hexdigest()
    assert (tmp_path / "sums.txt").read_text() == f"{digest}  input.bin\n"
    failed = subprocess.run(
        [*run, "--site", "login", "--command", "fail", "-p", "code=7"], cwd=tmp_path,
        env=login_site.env, capture_output=True, timeout=120, check=False,
    )  # fmt: skip
    assert failed.returncode == 7, failed.stderr.decode()
    # Slurm is not reachable from the gateway itself: every command went through the login node.
    direct = subprocess.run(["sinfo", "-h"], env=login_site.env, capture_output=True, check=False)
    assert direct.returncode != 0


def test_health_checks_the_login_node_and_names_each_failure(
    login_site: LoginSite, login_node: Sshd, slurm: SlurmCluster, tmp_path: Path
) -> None:
    found = site_health(login_site, login_site.config)
    assert found["site.login_node"]["status"] == "ok", found["site.login_node"]
    assert found["site.login_node"]["unit"] == "ms"
    assert found["site.login_node.workdir"]["status"] == "ok", found["site.login_node.workdir"]
    assert found["site.scheduler.slurm"]["status"] == "ok", found["site.scheduler.slurm"]
    text = login_site.config.read_text()
    # A host key that is not the login node's: refused, with how to fetch and check the right one.
    keygen(tmp_path / "other")
    other = (tmp_path / "other.pub").read_text().split()
    (tmp_path / "known").write_text(f"[127.0.0.1]:{login_node.port} {other[0]} {other[1]}\n")
    known = login_site.config.parent / "known_hosts_login"
    unpinned = tmp_path / "unpinned.toml"
    unpinned.write_text(text.replace(f'"{known}"', f'"{tmp_path / "known"}"'))
    found = site_health(login_site, unpinned)
    check = found["site.login_node"]
    assert (
        check["status"] == "fail" and f"ssh-keyscan -p {login_node.port} 127.0.0.1" in check["fix"]
    )
    assert "site.scheduler.slurm" not in found  # not asked through a login that failed
    # A login node whose Slurm does not answer: the scheduler check fails, saying where.
    keygen(tmp_path / "broken_key")
    pub = (tmp_path / "broken_key.pub").read_text().strip()
    wrapper = 'SLURM_CONF=/nonexistent/slurm.conf exec /bin/sh -c \\"$SSH_ORIGINAL_COMMAND\\"'
    login_node.authorize(f'command="{wrapper}",restrict,from="127.0.0.1" {pub}')
    broken = tmp_path / "broken.toml"
    broken_text = text.replace(str(login_node.root / "login_key"), str(tmp_path / "broken_key"))
    broken.write_text(broken_text.replace("[scheduler]\n", "[scheduler]\ncommand_timeout = 2\n"))
    found = site_health(login_site, broken)
    assert found["site.login_node"]["status"] == "ok"
    check = found["site.scheduler.slurm"]
    assert check["status"] == "fail", check
    where = f"`sinfo -h -o %T` on login host 127.0.0.1 port {login_node.port}"
    assert check["message"] == f"{where} gave no answer within 2 s", check
