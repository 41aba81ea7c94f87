"""The Torque adapter end to end against slurm-wlm-torque's qsub / qstat / qdel over a real Slurm.

Torque itself cannot be installed here; Debian's ``slurm-wlm-torque`` provides Torque-style
``qsub``/``qstat``/``qdel`` (Perl wrappers around sbatch and the Slurm API) talking to the
session's single-node Slurm. Where the wrappers behave like Torque, real jobs run through
``TorqueScheduler`` directly and through ``mint-bridge run`` (``local`` method, every command
under ``scheduler = "torque"``). Where they differ from real Torque, and what that means here:

- Job ids are plain numbers (``42``), not ``42.server``.
- ``qstat -f`` indents attributes with a tab and prints no ``exit_status``, ``resources_used``
  or ``comment``; every ended Slurm state is ``C``, and a held job shows as ``Q``. So outcomes
  come from the exit code the job script records and from slurmstepd's kill notices in the
  ``-o`` file (time limit, memory, cancel), which the adapter reads for Torque's own notices too.
- ``#PBS -o`` is ignored (qsub passes its own ``-o``/``-e`` to sbatch): the adapter gives ``-o``
  and ``-j oe`` on the qsub command line, which both honour. ``#PBS -d`` breaks sbatch's PBS
  parser, so the adapter never writes it (the script cds into the work dir itself).
- qsub builds a shell command line from its arguments, so a work dir with spaces or shell
  characters cannot be submitted through the wrapper (real Torque takes any path); the work
  base here is plain, and hostile values travel as parameters instead.
- No ``qselect``: the duplicate-submit lookup reads ``Job_Name`` from ``qstat -f -1``.
- ``qdel`` sends SIGKILL at once (Torque: SIGTERM, then SIGKILL after kill_delay) and exits 1
  without a word for a job that already ended; Slurm time limits have minute granularity.
- ``PBS_JOBID`` and the other ``PBS_*`` variables are not set in the job (the adapter uses none).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from bridge.core.errors import ExitCode
from bridge.core.job import JobOutcome, JobState
from bridge.core.workdir_files import SCHEDULER_OUTPUT_FILE
from schedulers import get_scheduler
from schedulers.base import JobHandle, JobSpec, Resources, SchedulerOptions
from schedulers.batch_script import job_name
from schedulers.torque import TorqueScheduler, parse_qstat_full
from tests.support.services import unavailable
from tests.support.site_toml import site_toml, toml_string
from tests.support.slurm import SlurmCluster
from tests.support.waiting import native_id, wait_until

pytest_plugins = ["tests.integration.slurm_fixtures"]

TESTPROG = Path(__file__).parent / "programs" / "testprog.py"
# Shell and PBS meaning in a parameter value: it must reach the program as one plain argument.
HOSTILE = "a b 'q' \"d\" $(touch pwned) `touch pwned2` #PBS -l mem=1mb ; 50% %j"
MEMHOG = """#!/usr/bin/env python3
import time
blocks = []
for _ in range(40):  # 800 MB in 20 MB steps, each written so it counts as resident
    blocks.append(b"\\1" * (20 << 20))
    time.sleep(0.05)
time.sleep(30)
"""


@dataclass
class TorqueSite:
    root: Path
    bridge_config: Path
    work_base: Path
    env: dict[str, str]


def site_config(work_base: Path, log_file: Path, memhog: Path) -> str:
    def torque(command: dict[str, Any]) -> dict[str, Any]:
        return {**command, "scheduler": "torque"}

    return site_toml(
        site={
            "name": "torque-test",
            "work_base": work_base,
            "retention": "1h",
            "log_file": log_file,
        },
        scheduler={"poll_interval": 0.5, "retries": 5, "retry_wait": "0.1s", "command_timeout": 20},
        commands={
            "checksum": torque({"program": TESTPROG, "args": ["checksum"]}),
            "fail": torque({
                "program": TESTPROG,
                "args": ["exit", "{code}"],
                "params": {"code": {"type": "int", "default": 3}},
            }),
            "ticks": torque({
                "program": TESTPROG,
                "args": ["ticks", "{count}", "{delay}"],
                "params": {
                    "count": {"type": "int", "default": 3},
                    "delay": {"type": "float", "default": 0.2},
                },
            }),
            "argv": torque({
                "program": TESTPROG,
                "args": ["argv", "{free}"],
                "params": {"free": {"type": "string", "pattern": ".*", "default": ""}},
            }),
            "memhog": torque({
                "program": memhog,
                "resources": {"memory": "100MiB", "cpus": 1},
            }),
        },
    )


@pytest.fixture(scope="module", autouse=True)
def only_the_slurm_wrappers() -> Iterator[None]:
    """Slurm's PBS wrappers alone on PATH: an OpenPBS install (the pbspro tests build one into
    /opt/pbs, whose profile script adds it to PATH) has a qselect the wrappers lack, which the
    torque adapter would then use against a PBS server that is not there."""
    kept = [d for d in os.environ.get("PATH", "").split(os.pathsep)
            if not d.startswith("/opt/pbs")]  # fmt: skip
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PATH", os.pathsep.join(kept))
        yield


def require_wrappers() -> None:
    """slurm-wlm-torque's qsub/qstat/qdel must be the ones on PATH (scripts/test.sh installs)."""
    for command in ("qsub", "qstat", "qdel"):
        path = shutil.which(command)
        with open(path or "/dev/null", "rb") as stream:
            is_wrapper = b"slurm" in stream.read(4096).lower()
        if not is_wrapper:
            found = f" (found {path})" if path else ""
            message = f"{command} of slurm-wlm-torque is not on PATH{found}: apt-get install it"
            unavailable(message)


@pytest.fixture(scope="module")
def torque_site(slurm: SlurmCluster, tmp_path_factory: pytest.TempPathFactory) -> TorqueSite:
    require_wrappers()
    root = tmp_path_factory.mktemp("torque-site")
    work_base = root / "work"
    work_base.mkdir()
    memhog = root / "memhog.py"
    memhog.write_text(MEMHOG)
    memhog.chmod(0o755)
    (root / "site.toml").write_text(site_config(work_base, root / "site.log", memhog))
    bridge_config = root / "bridge.toml"
    bridge_config.write_text(
        f"""
[sites.torque]
method = "local"
site_config = {toml_string(root / "site.toml")}
"""
    )
    return TorqueSite(root, bridge_config, work_base, dict(slurm.env))


@pytest.fixture
def adapter(slurm: SlurmCluster, monkeypatch: pytest.MonkeyPatch) -> TorqueScheduler:
    """The adapter as the site entry builds it, its commands reaching the test cluster."""
    monkeypatch.setenv("SLURM_CONF", slurm.env["SLURM_CONF"])
    scheduler = get_scheduler("torque", SchedulerOptions(poll_interval=0.2, retry_wait=0.1))
    assert isinstance(scheduler, TorqueScheduler)
    return scheduler


def start_bridge(site: TorqueSite, cwd: Path, *args: str) -> subprocess.Popen[bytes]:
    argv = [sys.executable, "-m", "bridge.cli", "run", "--config", str(site.bridge_config)]
    return subprocess.Popen(
        [*argv, *args], cwd=cwd, env=site.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )


def run_bridge(site: TorqueSite, cwd: Path, *args: str) -> tuple[int, bytes, bytes]:
    proc = start_bridge(site, cwd, *args)
    out, err = proc.communicate(timeout=120)
    return proc.returncode, out, err


def qstat(cluster: SlurmCluster, *ids: str) -> dict[str, dict[str, str]]:
    return parse_qstat_full(cluster.run("qstat", "-f", "-1", *ids).stdout)


def spec_for(
    root: Path,
    argv: list[str],
    walltime: float | None = None,
    resources: Resources | None = None,
) -> JobSpec:
    job_id = str(uuid.uuid4())
    workdir = root / job_id
    control = workdir / ".mint-bridge"
    control.mkdir(parents=True)
    return JobSpec(
        job_id=job_id,
        workdir=str(workdir),
        control_dir=str(control),
        argv=argv,
        env={"MINT_PARAM_NOTE": HOSTILE},
        stdout_path=str(control / "stdout"),
        stderr_path=str(control / "stderr"),
        walltime=walltime,
        resources=resources or Resources(),
    )


def follow(adapter: TorqueScheduler, handle: JobHandle, timeout: float = 60) -> JobOutcome:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = adapter.status([handle])[handle.native_id]
        if result.state.is_final:
            return result
        time.sleep(0.2)
    raise AssertionError(f"job {handle.native_id} did not end")


# --- the walltime job runs from the start of the module (Slurm's limit is 1 minute at least) ---


@pytest.fixture(scope="module", autouse=True)
def walltime_job(
    torque_site: TorqueSite, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    job_id = str(uuid.uuid4())
    proc = start_bridge(
        torque_site, tmp_path_factory.mktemp("walltime"), "--site", "torque", "--command",
        "ticks", "-p", "count=100000", "-p", "delay=0.5", "--walltime", "1m", "--job-id", job_id,
    )  # fmt: skip
    yield proc, job_id
    if proc.poll() is None:  # the module was cut short: cancel the job like qdel would
        proc.terminate()
        try:
            proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()


# --- the adapter on its own ---------------------------------------------------------------


def test_submit_status_and_lookup_through_the_wrappers(
    adapter: TorqueScheduler, slurm: SlurmCluster, tmp_path: Path
) -> None:
    spec = spec_for(
        tmp_path,
        ["/bin/sh", "-c", 'printf "%s|" "$@" "$MINT_PARAM_NOTE"; exit 3', "sh", HOSTILE, "x y"],
        walltime=120,
        resources=Resources(cpus=1, memory_mb=200),
    )
    native = adapter.submit(spec)
    assert native.isdigit()  # slurm-wlm-torque: no ".server" part
    handle = JobHandle(spec.job_id, native, spec.control_dir)
    # The job is known by the name the adapter gave it, read back from #PBS -N by sbatch.
    assert qstat(slurm, native)[native]["Job_Name"] == job_name(spec.job_id)
    assert adapter.find_by_name(job_name(spec.job_id)) == native  # no qselect: via qstat -f
    result = follow(adapter, handle)
    assert result == JobOutcome(JobState.FAILED, exit_code=3, reason="solver exited with code 3")
    assert result.bridge_exit_code() == 3
    control = Path(spec.control_dir)
    assert (control / "stdout").read_text() == f"{HOSTILE}|x y|{HOSTILE}|"
    # -o on the qsub command line took effect (the wrapper ignores #PBS -o).
    assert (control / SCHEDULER_OUTPUT_FILE).exists()
    assert not list(tmp_path.rglob("pwned*"))
    assert qstat(slurm, native)[native]["job_state"] == "C"


def test_one_pass_for_known_and_unknown_ids(adapter: TorqueScheduler, tmp_path: Path) -> None:
    spec = spec_for(tmp_path, ["/bin/sleep", "30"])
    native = adapter.submit(spec)
    live = JobHandle(spec.job_id, native, spec.control_dir)
    unknown_dir = tmp_path / "unknown" / ".mint-bridge"
    unknown_dir.mkdir(parents=True)
    unknown = JobHandle(str(uuid.uuid4()), "999999", str(unknown_dir))
    try:
        wait_until(
            lambda: adapter.status([live])[native].state is JobState.RUNNING, "the job to run"
        )
        result = adapter.status([live, unknown])  # qstat -f -1 <live> 999999: one call
        assert result[native].state is JobState.RUNNING
        assert result["999999"].state is JobState.LOST
    finally:
        adapter.cancel(live)


def test_cancel_and_cancel_again(
    adapter: TorqueScheduler, slurm: SlurmCluster, tmp_path: Path
) -> None:
    spec = spec_for(tmp_path, ["/bin/sleep", "300"])
    native = adapter.submit(spec)
    handle = JobHandle(spec.job_id, native, spec.control_dir)
    wait_until(lambda: adapter.status([handle])[native].state is JobState.RUNNING, "the job to run")
    adapter.cancel(handle)
    result = follow(adapter, handle)
    assert result.state is JobState.CANCELLED, result
    assert result.bridge_exit_code() == ExitCode.CANCELLED_AT_SITE
    assert "CANCELLED AT" in result.reason  # slurmstepd's notice in the -o file
    adapter.cancel(handle)  # qdel of an ended job exits 1 silently: not an error


# --- through mint-bridge run ------------------------------------------------------------------


def test_a_job_runs_and_returns_its_results(torque_site: TorqueSite, tmp_path: Path) -> None:
    (tmp_path / "input.bin").write_bytes(b"some input\n")
    job_id = str(uuid.uuid4())
    code, out, err = run_bridge(
        torque_site, tmp_path, "--site", "torque", "--command", "checksum", "-i", "input.bin",
        "--job-id", job_id,
    )  # fmt: skip
    assert code == 0, err.decode()
    assert out == b"checked 1 files\n"
    assert b"a line on stderr" in err
    assert (tmp_path / "sub" / "dir" / "nested.txt").read_text() == "nested result\n"
    assert native_id(torque_site.work_base, job_id).isdigit()


def test_the_solvers_exit_code_comes_back(torque_site: TorqueSite, tmp_path: Path) -> None:
    code, out, err = run_bridge(
        torque_site, tmp_path, "--site", "torque", "--command", "fail", "-p", "code=5"
    )
    assert code == 5, err.decode()
    assert out == b"about to fail\n"


def test_a_hostile_parameter_stays_one_inert_argument(
    torque_site: TorqueSite, tmp_path: Path
) -> None:
    code, _, err = run_bridge(
        torque_site, tmp_path, "--site", "torque", "--command", "argv", "-p", f"free={HOSTILE}"
    )
    assert code == 0, err.decode()
    assert json.loads((tmp_path / "argv.json").read_text()) == [HOSTILE]
    assert not list(torque_site.root.rglob("pwned*"))
    assert not list(tmp_path.rglob("pwned*"))


def test_a_memory_kill_reaches_the_bridge_as_out_of_memory(
    torque_site: TorqueSite, tmp_path: Path
) -> None:
    code, _, err = run_bridge(torque_site, tmp_path, "--site", "torque", "--command", "memhog")
    assert code == ExitCode.OUT_OF_MEMORY, err.decode()
    assert b"memory" in err


def test_a_qdel_at_the_site_reaches_the_bridge_as_cancelled(
    torque_site: TorqueSite, slurm: SlurmCluster, tmp_path: Path
) -> None:
    job_id = str(uuid.uuid4())
    proc = start_bridge(
        torque_site, tmp_path, "--site", "torque", "--command", "ticks", "-p", "count=1000",
        "--job-id", job_id,
    )  # fmt: skip
    wait_until(lambda: bool(native_id(torque_site.work_base, job_id)), "the job id")
    native = native_id(torque_site.work_base, job_id)
    wait_until(lambda: qstat(slurm, native).get(native, {}).get("job_state") == "R", "R")
    assert slurm.run("qdel", native).returncode == 0  # the site's admin, not the bridge
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == ExitCode.CANCELLED_AT_SITE, err.decode()


def test_sigterm_cancels_the_job(
    torque_site: TorqueSite, slurm: SlurmCluster, tmp_path: Path
) -> None:
    job_id = str(uuid.uuid4())
    proc = start_bridge(
        torque_site, tmp_path, "--site", "torque", "--command", "ticks", "-p", "count=1000",
        "--job-id", job_id,
    )  # fmt: skip
    wait_until(lambda: bool(native_id(torque_site.work_base, job_id)), "the job id")
    native = native_id(torque_site.work_base, job_id)
    wait_until(lambda: qstat(slurm, native).get(native, {}).get("job_state") == "R", "R")
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == ExitCode.CANCELLED, err.decode()
    wait_until(lambda: qstat(slurm, native)[native]["job_state"] == "C", "the job to end")


# --- last: collect the walltime job started with the module ----------------------------------


@pytest.mark.timeout(300)  # alone, this test waits out the whole 1-minute limit and more
def test_walltime_kill_reaches_the_bridge_as_a_time_limit(
    walltime_job: tuple[subprocess.Popen[bytes], str], torque_site: TorqueSite
) -> None:
    proc, job_id = walltime_job
    _, err = proc.communicate(timeout=180)  # 1 minute limit, checked by Slurm every 30 s
    assert proc.returncode == ExitCode.WALLTIME_EXCEEDED, err.decode()
    script = (torque_site.work_base / job_id / ".mint-bridge" / "job.sh").read_text()
    assert "#PBS -l walltime=00:01:00\n" in script
