"""Manual release with real processes: a ``release = "manual"`` command's results wait at
the site until a site operator runs ``site release`` or ``site reject``, over a real sshd
(with its connection killed while held: the restarted site entry finds the hold) and over
pipes. The bridge side says what the operator must run, the wait counts against the timeout,
nothing leaves before the release, and the decisions are in the audit log.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bridge.site.audit_chain import log_files
from tests.support.site_toml import write_site_toml
from tests.support.sshd import Sshd, start_sshd_for_test

PROG = Path(__file__).parent / "programs" / "egress_prog.py"
OK = b"a result that may leave\n"


@pytest.fixture(scope="module")
def site_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("release-site")
    (root / "work").mkdir()
    write_site_toml(
        root / "site.toml",
        site={"name": "release-site", "work_base": root / "work", "log_file": root / "site.log",
              "audit_dir": root / "audit"},
        commands={"held": {"program": str(PROG), "args": ["copy", str(PROG), "0"],
                           "release": "manual", "egress": {"deny": ["*.dat"]}}},
    )  # fmt: skip
    return root


@pytest.fixture(scope="module")
def release_sshd(site_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sshd]:
    server = start_sshd_for_test(tmp_path_factory.mktemp("release-sshd"), site_root / "site.toml")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def bridge_toml(site_root: Path, release_sshd: Sshd) -> Path:
    toml = site_root / "bridge.toml"
    toml.write_text(
        f'[sites.local]\nmethod = "local"\nsite_config = "{site_root / "site.toml"}"\n'
        f'[sites.ssh]\nmethod = "ssh"\nhost = "site"\nssh_config = "{release_sshd.ssh_config}"\n'
        f'known_hosts = "{release_sshd.known_hosts}"\n'
    )
    return toml


def start_run(toml: Path, site: str, out: Path, *extra: str) -> tuple[str, subprocess.Popen[str]]:
    job_id = str(uuid.uuid4())
    argv = [sys.executable, "-m", "bridge.cli", "run", "--config", str(toml), "--site", site,
            "--command", "held", "--job-id", job_id, "-o", str(out), *extra]  # fmt: skip
    return job_id, subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                    text=True)  # fmt: skip


def site_cli(
    root: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    config = str(root / "site.toml")
    argv = [sys.executable, "-m", "bridge.cli", "site", *args, "--config", config]
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, env=env)


def wait_held(root: Path, job_id: str) -> dict[str, Any]:
    held = root / "work" / job_id / ".mint-bridge" / "held.json"
    deadline = time.monotonic() + 60
    while not held.exists():
        assert time.monotonic() < deadline, "the job's results were never held"
        time.sleep(0.1)
    return dict(json.loads(held.read_text()))


def audit_lines(root: Path, job_id: str) -> list[dict[str, Any]]:
    text = b"".join(Path(p).read_bytes() for p in log_files(str(root / "audit")))
    return [e for e in map(json.loads, text.splitlines()) if e["job"] == job_id]


def received(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in out.rglob("*") if p.is_file()}


def test_release_after_the_site_entry_restarts_over_ssh(
    site_root: Path, bridge_toml: Path, release_sshd: Sshd, tmp_path: Path
) -> None:
    job_id, proc = start_run(bridge_toml, "ssh", tmp_path / "out")
    held = wait_held(site_root, job_id)
    assert held["files"] == [{"name": "ok.txt", "size": len(OK),
                              "sha256": hashlib.sha256(OK).hexdigest()}]  # fmt: skip
    assert held["withheld"] == [{"name": "model_copy.dat", "size": PROG.stat().st_size,
                                 "rule": "deny"}]  # fmt: skip
    time.sleep(1.0)
    assert proc.poll() is None and not received(tmp_path / "out")  # nothing left yet
    shown = subprocess.run([sys.executable, "-m", "bridge.cli", "jobs", "show", job_id],
                           capture_output=True, text=True, timeout=60)  # fmt: skip
    assert (f"exit      awaiting release: a site operator must run `mint-bridge site release "
            f"{job_id}` at site ssh") in shown.stdout, shown.stdout + shown.stderr  # fmt: skip
    for child in release_sshd.connection_processes():  # the site entry dies while held
        child.kill()
    listed = site_cli(site_root, "held")
    assert listed.returncode == 0, listed.stderr
    assert job_id in listed.stdout and hashlib.sha256(OK).hexdigest() in listed.stdout
    assert "rule deny" in listed.stdout and "1 job(s) awaiting release" in listed.stdout
    time.sleep(1.0)  # the bridge re-attaches to the held job meanwhile
    done = site_cli(site_root, "release", job_id)
    assert done.returncode == 0, done.stderr
    assert f"{job_id}: released by root" in done.stdout
    _, err = proc.communicate(timeout=90)
    assert proc.returncode == 0, err
    assert "awaiting release" in err and f"`mint-bridge site release {job_id}`" in err
    assert "reconnecting" in err
    assert received(tmp_path / "out") == {"ok.txt": OK}
    events = [e["event"] for e in audit_lines(site_root, job_id)]
    assert events.count("released") == 1 and events.count("result_sent") == 1
    assert events.index("released") < events.index("result_sent")
    released = next(e for e in audit_lines(site_root, job_id) if e["event"] == "released")
    assert released["by"] == "root"
    again = site_cli(site_root, "release", job_id)
    assert again.returncode == 64 and f"job {job_id} was already released by root" in again.stderr


def test_reject_with_a_reason_sends_nothing_and_exits_91(
    site_root: Path, bridge_toml: Path, tmp_path: Path
) -> None:
    job_id, proc = start_run(bridge_toml, "local", tmp_path / "out")
    wait_held(site_root, job_id)
    done = site_cli(site_root, "reject", job_id, "--reason", "export not approved")
    assert done.returncode == 0, done.stderr
    _, err = proc.communicate(timeout=90)
    assert proc.returncode == 91, err
    assert "rejected the results" in err and "export not approved" in err
    assert received(tmp_path / "out") == {}
    lines = audit_lines(site_root, job_id)
    rejected = [e for e in lines if e["event"] == "rejected"]
    assert [(e["by"], e["reason"]) for e in rejected] == [("root", "export not approved")]
    assert not [e for e in lines if e["event"] == "result_sent"]


def test_a_timeout_while_held_ends_the_run_and_only_the_operator_may_decide(
    site_root: Path, bridge_toml: Path, tmp_path: Path
) -> None:
    job_id, proc = start_run(bridge_toml, "local", tmp_path / "out", "--timeout", "5s")
    _, err = proc.communicate(timeout=90)
    assert proc.returncode == 88, err
    assert "not released within the overall timeout" in err and job_id in err
    assert received(tmp_path / "out") == {}
    # Someone the site does not allow (through sudo, not in [site] release_group) is refused.
    env = {**os.environ, "SUDO_USER": "nobody"}
    refused = site_cli(site_root, "release", job_id, env=env)
    assert refused.returncode == 80, refused.stderr
    assert "nobody may not release or reject jobs at this site" in refused.stderr
    assert "release_group" in refused.stderr
    assert job_id in site_cli(site_root, "held").stdout  # still held, nothing recorded
    assert not [e for e in audit_lines(site_root, job_id) if e["event"] == "released"]
