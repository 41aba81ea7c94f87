"""The SSH push path with the job under a real Slurm (the session's private cluster,
``tests/support/slurm.py``): the site entry killed with SIGKILL while the Slurm job runs, and
the Slurm job cancelled from outside with ``scancel``.

A killed entry must not cost the job: the bridge reconnects, the new entry re-attaches to the
Slurm job recorded in the work dir (the same Slurm job id, and Slurm lists exactly one job of
that name, so no second ``sbatch``), and the results come back byte for byte. A ``scancel``
must reach ``run`` as the true reason, with exactly one terminal state at the site.
"""

from __future__ import annotations

import json
import shlex
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from schedulers.batch_script import job_name
from tests.resilience.test_ssh_faults import (
    RESULT,
    SOLVER,
    SshRig,
    _write_bridge,
    assert_proven,
    finish,
    job_log,
    start_run,
)
from tests.support.fault_proxy import FaultProxy
from tests.support.pull import wait_until
from tests.support.site_toml import write_site_toml
from tests.support.slurm import SlurmCluster
from tests.support.sshd import start_sshd_for_test

pytest_plugins = ["tests.integration.slurm_fixtures"]


@pytest.fixture(scope="module")
def rig(slurm: SlurmCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SshRig]:
    root = tmp_path_factory.mktemp("ssh-slurm")
    (root / "work").mkdir()
    site = write_site_toml(
        root / "site.toml",
        site={"name": "res-slurm", "work_base": root / "work", "log_file": root / "site.log",
              "idle_timeout": "5s"},
        scheduler={"poll_interval": 0.5, "retries": 5, "retry_wait": "0.1s",
                   "command_timeout": 20},
        commands={"solve": {
            "program": SOLVER, "args": [root / "counter.txt", "{seconds}", "{size}"],
            "scheduler": "slurm",
            "params": {"seconds": {"type": "float", "default": 1.0},
                       "size": {"type": "int", "default": RESULT}},
        }},
    )  # fmt: skip
    # sshd gives a forced command a bare environment: the entry must still reach this cluster.
    python = f"env SLURM_CONF={shlex.quote(slurm.env['SLURM_CONF'])} {sys.executable}"
    sshd = start_sshd_for_test(root / "sshd", site, python=python)
    proxy = FaultProxy(sshd.port)
    yield SshRig(root, sshd, proxy, _write_bridge(root, sshd, proxy), root / "work",
                 root / "counter.txt")  # fmt: skip
    proxy.close()
    sshd.stop()


def _slurm_id(rig: SshRig, job_id: str) -> str:
    path = rig.control(job_id, "native_id")
    return path.read_text().strip() if path.exists() else ""


def _outcome(rig: SshRig, job_id: str) -> dict[str, object]:
    """The site's one end state of a batch job (``outcome.json``, written once)."""
    doc: dict[str, object] = json.loads(rig.control(job_id, "outcome.json").read_text())
    return doc


def _slurm_jobs(slurm: SlurmCluster, job_id: str) -> list[str]:
    """Every Slurm job of this work dir's name the controller lists (any state)."""
    listed = slurm.run("squeue", "-h", "--states=all", f"--name={job_name(job_id)}", "--format=%i")
    return listed.stdout.split()


def _describe(request: pytest.FixtureRequest, fault: str, expected: str) -> None:
    request.node.user_properties.extend(
        [("fault", fault), ("path", "ssh + Slurm (sbatch, squeue, sacct)"), ("expected", expected)]
    )


def test_site_entry_kill9_while_the_slurm_job_runs(
    rig: SshRig, slurm: SlurmCluster, request: pytest.FixtureRequest
) -> None:
    _describe(request, "kill -9 of the site entry while the Slurm job runs",
              "same Slurm job, one sbatch; completed, SHA-256 equal")  # fmt: skip
    job_id = str(uuid.uuid4())
    proc = start_run(rig, "direct", job_id, 4.0)
    killed: list[int] = []
    try:
        wait_until(lambda: rig.runs(job_id) > 0, "the solver to start under Slurm")
        first = _slurm_id(rig, job_id)
        assert first.isdigit(), first
        for entry in rig.site_entries():
            killed.append(entry.pid)
            entry.kill()
    except BaseException:
        proc.kill()
        proc.communicate()
        raise
    got = finish(rig, job_id, proc)
    assert killed, "a site entry must have been serving the job"
    assert_proven(rig, got, end_file="outcome.json")
    assert "reconnecting" in job_log(got.err), job_log(got.err)
    assert _slurm_id(rig, job_id) == first
    assert _slurm_jobs(slurm, job_id) == [first], "exactly one Slurm job for this work dir"
    log = (rig.root / "site.log").read_text()
    assert f"{job_id}: bridge re-attached at offsets" in log, log[-2000:]
    assert log.count(f"{job_id}: started command solve as ") == 1, log[-2000:]


def test_scancel_from_outside_reaches_run_as_the_reason(
    rig: SshRig, slurm: SlurmCluster, request: pytest.FixtureRequest
) -> None:
    _describe(request, "scancel of the running Slurm job from outside",
              "run names the cancel at the site; one end state, solver once")  # fmt: skip
    job_id = str(uuid.uuid4())
    proc = start_run(rig, "direct", job_id, 60.0)
    try:
        wait_until(lambda: rig.runs(job_id) > 0, "the solver to start under Slurm")
        native = _slurm_id(rig, job_id)
        assert native.isdigit(), native
        done = slurm.run("scancel", native)
        assert done.returncode == 0, done.stderr
    except BaseException:
        proc.kill()
        proc.communicate()
        raise
    got = finish(rig, job_id, proc)
    assert got.code != 0, got.err[-2000:]
    assert "was cancelled at the site" in got.err, got.err[-2000:]
    record = _outcome(rig, job_id)
    assert record["state"] == "cancelled", record
    reason = f"Slurm job {native} was cancelled at the site (Slurm state CANCELLED)"
    assert record["reason"] == reason, record
    assert rig.runs(job_id) == 1
    assert _slurm_jobs(slurm, job_id) == [native]
    assert not (Path(got.module) / "result.bin").exists(), "a cancelled job returns no result"
