"""Disk full on the pull path: the broker's byte store, and the site's work dirs, each on a small
tmpfs mounted for the test (root only), under a real broker (gunicorn, TLS) and a real agent.

A full disk is not a fault anything can ride out: the scenario asserts that the job ends once,
with the true reason in front of the user, and that nothing was left running or half-done.
"""

from __future__ import annotations

import contextlib
import os
import random
import re
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.broker import BrokerProcess, BrokerUnavailable, start_broker
from tests.support.pull import Agent, ClientApi, bridge_config, mint_bridge, start_agent
from tests.support.services import unavailable
from tests.support.site_toml import write_site_toml

SOLVER = Path(__file__).parent / "programs" / "solver.py"
LEASE = 10
MiB = 1 << 20
TMPFS = 4 * MiB  # each mount: room for the database and a little more, not for the big file


@contextlib.contextmanager
def tmpfs(path: Path, size: int) -> Iterator[Path]:
    path.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs",
                           str(path)], capture_output=True, text=True, check=False)  # fmt: skip
    if done.returncode != 0:
        unavailable(f"cannot mount a tmpfs at {path} (needs root): {done.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True, check=False)


@dataclass
class FullRig:
    root: Path
    broker: BrokerProcess
    token: Path
    config: Path
    work: Path
    agent: Agent

    def runs(self, job_id: str) -> int:
        path = self.root / "counter.txt"
        lines = path.read_text().splitlines() if path.exists() else []
        return sum(1 for line in lines if line.split()[0] == job_id)


@pytest.fixture(scope="module")
def full(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FullRig]:
    root = tmp_path_factory.mktemp("disk-full")
    with tmpfs(root / "broker" / "data", TMPFS), tmpfs(root / "work", TMPFS):
        try:
            broker = start_broker(root / "broker", jobs=f'lease_ttl = "{LEASE}s"')
        except (BrokerUnavailable, OSError, subprocess.SubprocessError) as exc:
            unavailable(f"cannot start the broker: {exc}")
        try:
            token = root / "client.token"
            token.write_text(broker.token("client", "full-node") + "\n")
            agent_token = root / "agent.token"
            agent_token.write_text(broker.token("site", "res-full") + "\n")
            for path in (token, agent_token):
                path.chmod(0o600)
            site = write_site_toml(
                root / "site.toml",
                site={"name": "res-full", "work_base": root / "work",
                      "log_file": root / "site.log"},
                agent={"url": broker.url, "ca_bundle": broker.ca_bundle,
                       "token_file": agent_token, "agent_id": "res-full-agent",
                       "lease_renew": "2s"},
                commands={"solve": {
                    "program": SOLVER, "args": [root / "counter.txt", "{seconds}", "{size}"],
                    "params": {"seconds": {"type": "float", "default": 0.2},
                               "size": {"type": "int", "default": 1024}},
                }},
            )  # fmt: skip
            agent = start_agent(site)
            config = bridge_config(root / "bridge.toml", broker.url, broker.ca_bundle, token,
                                   ["res-full"])  # fmt: skip
            yield FullRig(root, broker, token, config, root / "work", agent)
            agent.stop()
        finally:
            broker.stop()


def _run(rig: FullRig, size_in: int, size_out: int) -> tuple[str, int, str, Path]:
    job_id = str(uuid.uuid4())
    module = rig.root / "modules" / job_id
    module.mkdir(parents=True)
    with open(module / "in.bin", "wb") as out:
        out.write(random.Random(job_id).randbytes(size_in))
    proc = mint_bridge(rig.config, "--site", "res-full", "--command", "solve", "-p",
                       f"size={size_out}", "-i", "in.bin", "--job-id", job_id,
                       cwd=module)  # fmt: skip
    try:
        _, err = proc.communicate(timeout=LEASE + 60)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
        raise AssertionError(f"{job_id} stuck past lease + 60 s: {err.decode()[-2000:]}") from None
    return job_id, proc.returncode, err.decode(errors="replace"), module


def job_log(err: str) -> str:
    found = re.search(r"; log: (\S+)", err)
    assert found, err
    return Path(found.group(1)).read_text(errors="replace")


def _describe(request: pytest.FixtureRequest, fault: str, expected: str) -> None:
    request.node.user_properties.extend(
        [("fault", fault), ("path", "broker, tmpfs"), ("expected", expected)]
    )


def test_broker_disk_full(full: FullRig, request: pytest.FixtureRequest) -> None:
    _describe(request, "the broker's byte store is full (an input larger than its tmpfs)",
              "run fails naming the broker's full disk; solver never ran")  # fmt: skip
    job_id, code, err, _ = _run(full, 6 * MiB, 1024)
    said = job_log(err)
    # At once (not after eight retries of an "internal error"), with the true reason.
    assert code == 73, said
    assert "the broker's disk is full: input 'in.bin'" in said, said
    assert "retrying" not in said, said
    doc = ClientApi(full.broker, full.token).job(job_id)
    assert doc["state"] == "created" and doc["agent_id"] is None, doc  # never offered to a site
    assert full.runs(job_id) == 0
    # The broker gave the space back: it still writes (this call creates a job).
    assert os.statvfs(full.broker.data_dir).f_bfree * os.statvfs(full.broker.data_dir).f_bsize > MiB


def test_site_disk_full(full: FullRig, request: pytest.FixtureRequest) -> None:
    _describe(request, "the site's work dirs are full (a result larger than their tmpfs)",
              "the job ends once, failed, with the solver's own ENOSPC message")  # fmt: skip
    job_id, code, err, module = _run(full, 1024, 6 * MiB)
    said = job_log(err)
    doc = ClientApi(full.broker, full.token).job(job_id)
    assert doc["state"] == "finished", doc  # one terminal state, not handed back forever
    assert isinstance(doc["outcome"], dict), doc
    assert doc["outcome"]["state"] == "failed", doc
    assert "the site's disk is full" in str(doc["outcome"]["reason"]), doc
    assert "the site's disk is full" in said, said
    assert "/" not in str(doc["outcome"]["reason"]).replace("[site] work_base", ""), doc
    assert code != 0, said
    assert full.runs(job_id) == 1
    assert not (module / "result.bin").exists()
