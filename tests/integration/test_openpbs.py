"""The PBS Pro and Torque adapters against a real OpenPBS 23.06.06, through ``mint-bridge run``.

OpenPBS runs in namespaces of its own (``tests.support.openpbs``); every command of these tests
and the site code itself (``mint-bridge run`` with a ``local`` site whose commands use
``scheduler = "pbspro"`` or ``"torque"``) run inside them as an ordinary account. Job history
is PBS's default (off) unless a test turns it on; the ``history`` fixture runs a test both ways.

pbs_mom checks limits every 1-2 s and the queue's ``kill_delay`` is 2 s (SIGTERM to SIGKILL
after a walltime or ``qdel``), so the limit tests end in seconds.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.support.openpbs import OpenPbs, OpenPbsUnavailable, start_openpbs, user_dir
from tests.support.services import unavailable
from tests.support.site_toml import site_toml, toml_string

TESTPROG = Path(__file__).parent / "programs" / "testprog.py"


@dataclass
class PbsSite:
    root: Path  # owned by the job account: site.toml, bridge.toml, work/, site.log
    bridge_config: Path
    work_base: Path


@pytest.fixture(scope="module")
def openpbs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OpenPbs]:
    try:
        pbs = start_openpbs(tmp_path_factory.mktemp("openpbs"))
    except (OpenPbsUnavailable, OSError, subprocess.SubprocessError) as exc:
        unavailable(f"cannot start OpenPBS: {exc}")
    yield pbs
    pbs.stop()


@pytest.fixture(params=[True], ids=["history-on"])
def history(request: pytest.FixtureRequest, openpbs: OpenPbs) -> Iterator[bool]:
    openpbs.set_history(request.param)
    yield request.param
    openpbs.set_history(False)


def commands(scheduler: str) -> dict[str, dict[str, Any]]:
    def on(command: dict[str, Any]) -> dict[str, Any]:
        return {**command, "scheduler": scheduler}

    return {
        f"checksum-{scheduler}": on({"program": TESTPROG, "args": ["checksum"]}),
        f"fail-{scheduler}": on({
            "program": TESTPROG,
            "args": ["exit", "{code}"],
            "params": {"code": {"type": "int", "default": 3}},
        }),
        f"ticks-{scheduler}": on({
            "program": TESTPROG,
            "args": ["ticks", "{count}", "{delay}"],
            "params": {
                "count": {"type": "int", "default": 3},
                "delay": {"type": "float", "default": 0.2},
            },
        }),
    }


@pytest.fixture(scope="module")
def pbs_site(openpbs: OpenPbs) -> Iterator[PbsSite]:
    root = user_dir("mb-pbs-site-")
    work_base = root / "work"
    work_base.mkdir()
    shutil.chown(work_base, openpbs.uid, openpbs.gid)
    (root / "site.toml").write_text(
        site_toml(
            site={
                "name": "pbs-test",
                "work_base": work_base,
                "retention": "1h",
                "log_file": root / "site.log",
            },
            scheduler={"poll_interval": 0.5, "retries": 3, "retry_wait": "0.2s"},
            commands={**commands("pbspro"), **commands("torque")},
        )
    )
    bridge_config = root / "bridge.toml"
    bridge_config.write_text(
        f'[sites.pbs]\nmethod = "local"\nsite_config = {toml_string(root / "site.toml")}\n'
    )
    yield PbsSite(root, bridge_config, work_base)
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def cwd() -> Iterator[Path]:
    """Where ``mint-bridge run`` starts (inputs, results): owned by the job account."""
    path = user_dir("mb-pbs-run-")
    yield path
    shutil.rmtree(path, ignore_errors=True)


def start_bridge(pbs: OpenPbs, site: PbsSite, cwd: Path, *args: str) -> subprocess.Popen[bytes]:
    argv = [sys.executable, "-m", "bridge.cli", "run", "--config", str(site.bridge_config)]
    return subprocess.Popen(
        pbs.argv([*argv, "--site", "pbs", *args], user=True, cwd=cwd),
        cwd=cwd,
        env=pbs.env(HOME=str(site.root)),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def run_bridge(
    pbs: OpenPbs, site: PbsSite, cwd: Path, *args: str, timeout: float = 120
) -> tuple[int, bytes, bytes]:
    proc = start_bridge(pbs, site, cwd, *args)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        raise AssertionError(f"mint-bridge run did not end: {err.decode()[-2000:]}") from None
    return proc.returncode, out, err


def wait_for(predicate: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def native_id(site: PbsSite, job_id: str) -> str:
    path = site.work_base / job_id / ".mint-bridge" / "native_id"
    return path.read_text().strip() if path.exists() else ""


# --- pbspro: the everyday cases -----------------------------------------------------------


def test_a_job_runs_and_returns_its_results(
    openpbs: OpenPbs, pbs_site: PbsSite, cwd: Path, history: bool
) -> None:
    data = b"some input\n" * 1000
    (cwd / "input.bin").write_bytes(data)
    shutil.chown(cwd / "input.bin", openpbs.uid, openpbs.gid)
    job_id = str(uuid.uuid4())
    code, out, err = run_bridge(
        openpbs, pbs_site, cwd, "--command", "checksum-pbspro", "-i", "input.bin",
        "--job-id", job_id,
    )  # fmt: skip
    assert code == 0, err.decode()
    assert out == b"checked 1 files\n"
    assert b"a line on stderr" in err
    digest = hashlib.sha256(data).hexdigest()
    assert (cwd / "sums.txt").read_text() == f"{digest}  input.bin\n"
    assert (cwd / "sub" / "dir" / "nested.txt").read_text() == "nested result\n"
    assert native_id(pbs_site, job_id).endswith(".pbstest")
