"""A pull site whose command runs under a real Slurm: the agent dies mid-job and comes back.

A real broker (gunicorn, TLS from a throwaway CA), a real agent process whose site config runs
the command with ``scheduler = "slurm"`` on the session's private Slurm cluster
(``tests/support/slurm.py``; the agent gets the cluster's environment, ``SLURM_CONF``
included), and a real ``mint-bridge run`` as the client. The agent is killed with SIGKILL while
the Slurm job runs and is started again with the same ``agent_id``: it must follow the Slurm
job recorded in the work dir (``.mint-bridge/native_id``) instead of submitting another one,
and the client must get the results and the solver's own exit code.

The agent finds ``squeue``, ``sacct`` and ``sbatch`` through wrappers first on its ``PATH``
that log each call's arguments before running the real command, so the test sees which Slurm
job the restarted agent asks about and how many submits there were.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

from schedulers.batch_script import job_name
from schedulers.slurm_output import LIVE_STATES
from tests.support.broker import BrokerProcess
from tests.support.site_toml import toml_string, write_site_toml
from tests.support.slurm import SlurmCluster
from tests.support.waiting import native_id, wait_until

# The session-wide `slurm` fixture (a real cluster), shared with the other Slurm test modules.
pytest_plugins = ["tests.integration.slurm_fixtures"]

SITE = "agent-slurm"
TICKS = 40  # x 0.25 s: long enough to kill and restart the agent while the job runs
EXIT_CODE = 7
SOLVER = """#!/usr/bin/env python3
import sys, time
count, code = int(sys.argv[1]), int(sys.argv[2])
for i in range(count):
    print(f"tick {i}", flush=True)
    time.sleep(0.25)
with open("ticks.txt", "w") as out:
    out.write(f"{count}\\n")
sys.exit(code)
"""
WRAPPED = ("sbatch", "squeue", "sacct")


@dataclass
class SlurmPullSite:
    root: Path
    config: Path
    work_base: Path
    log: Path
    calls: Path  # one line per wrapped Slurm command the agent ran: "<program> <args>"
    env: dict[str, str]
    bridge_config: Path


def write_wrappers(directory: Path, calls: Path, path: str) -> None:
    """``sbatch``, ``squeue`` and ``sacct`` that log their arguments, then run the real one."""
    directory.mkdir()
    for program in WRAPPED:
        real = shutil.which(program, path=path)
        assert real is not None, f"{program} is not installed"
        script = directory / program
        script.write_text(
            f"""#!/bin/bash
echo "{program} $*" >> {shlex.quote(str(calls))}
exec {shlex.quote(real)} "$@"
"""
        )
        script.chmod(0o755)


@pytest.fixture(scope="module")
def site(
    broker: BrokerProcess, slurm: SlurmCluster, tmp_path_factory: pytest.TempPathFactory
) -> SlurmPullSite:
    root = tmp_path_factory.mktemp("agent-slurm")
    work_base = root / "work"
    work_base.mkdir()
    solver = root / "solver.py"
    solver.write_text(SOLVER)
    solver.chmod(0o755)
    calls = root / "slurm-calls.txt"
    env = dict(slurm.env)  # SLURM_CONF: the agent's Slurm commands must reach this cluster
    write_wrappers(root / "wrappers", calls, env.get("PATH", os.defpath))
    env["PATH"] = f"{root / 'wrappers'}{os.pathsep}{env.get('PATH', os.defpath)}"
    token = root / "agent.token"
    token.write_text(broker.token("site", SITE) + "\n")
    token.chmod(0o600)
    config = write_site_toml(
        root / "site.toml",
        site={
            "name": SITE,
            "work_base": work_base,
            "retention": "1h",
            "log_file": root / "site.log",
        },
        agent={
            "url": broker.url,
            "ca_bundle": broker.ca_bundle,
            "token_file": token,
            "agent_id": "slurm-agent",
            "lease_renew": "3s",
        },
        scheduler={"poll_interval": 0.5, "retries": 5, "retry_wait": "0.1s", "command_timeout": 20},
        commands={
            "solve": {
                "program": solver,
                "args": ["{count}", "{code}"],
                "scheduler": "slurm",
                "params": {
                    "count": {"type": "int", "default": 3},
                    "code": {"type": "int", "default": 0},
                },
            },
        },
    )
    client_token = root / "client.token"
    client_token.write_text(broker.token("client", "slurm-client") + "\n")
    client_token.chmod(0o600)
    bridge_config = root / "bridge.toml"
    bridge_config.write_text(
        f"""
[sites.{SITE}]
method = "broker"
url = "{broker.url}"
ca_bundle = {toml_string(broker.ca_bundle)}
token_file = {toml_string(client_token)}
poll_wait = 20
"""
    )
    return SlurmPullSite(root, config, work_base, root / "site.log", calls, env, bridge_config)


@dataclass
class Agent:
    proc: subprocess.Popen[bytes]
    output: Path

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                return self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        return self.proc.wait(timeout=10)


def start_agent(site: SlurmPullSite) -> Agent:
    output = site.root / f"agent.{time.monotonic_ns()}.out"
    with open(output, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "bridge.site.agent", str(site.config)],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=site.env,
            start_new_session=True,
        )  # fmt: skip
    return Agent(proc, output)


def live_state(cluster: SlurmCluster, slurm_id: str) -> str:
    out = cluster.run(
        "squeue", "-h", f"--jobs={slurm_id}", f"--states={','.join(LIVE_STATES)}", "--format=%T"
    ).stdout
    return out.strip()


def calls_since(site: SlurmPullSite, offset: int) -> list[str]:
    if not site.calls.exists():
        return []
    return site.calls.read_text()[offset:].splitlines()


def asks_about(call: str, slurm_id: str) -> bool:
    """Whether a logged squeue/sacct call names ``slurm_id`` in its ``--jobs=`` list."""
    return any(
        arg.startswith("--jobs=") and slurm_id in arg.removeprefix("--jobs=").split(",")
        for arg in call.split()[1:]
    )


def test_killed_agent_follows_the_same_slurm_job_after_restart(
    site: SlurmPullSite, slurm: SlurmCluster, tmp_path: Path
) -> None:
    job_id = str(uuid.uuid4())
    agent = start_agent(site)
    client = subprocess.Popen(
        [
            sys.executable, "-m", "bridge.cli", "run", "--config", str(site.bridge_config),
            "--site", SITE, "--command", "solve", "-p", f"count={TICKS}",
            "-p", f"code={EXIT_CODE}", "--job-id", job_id,
        ],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        stdout_log = site.work_base / job_id / ".mint-bridge" / "stdout"
        wait_until(
            lambda: stdout_log.exists() and b"tick 2\n" in stdout_log.read_bytes(),
            "the Slurm job to run",
        )
        slurm_id = native_id(site.work_base, job_id)
        assert slurm_id.isdigit(), slurm_id
        assert live_state(slurm, slurm_id) == "RUNNING"

        agent.proc.kill()  # kill -9: no hand-back, no last word to the broker
        agent.proc.wait(timeout=10)
        assert live_state(slurm, slurm_id) == "RUNNING"  # the job belongs to Slurm, not to us
        offset = site.calls.stat().st_size

        agent = start_agent(site)
        out, err = client.communicate(timeout=120)
    finally:
        if client.poll() is None:
            client.kill()
            client.communicate()
        stopped = agent.stop()
    assert stopped == 0, agent.output.read_text()[-3000:]

    # The solver's own exit code and its results reached the client.
    assert client.returncode == EXIT_CODE, err.decode()[-3000:]
    assert (tmp_path / "ticks.txt").read_text() == f"{TICKS}\n"
    # The log went on where the broker's copy ended: every line once, in order.
    assert out.decode().splitlines() == [f"tick {i}" for i in range(TICKS)]

    # The restarted agent followed the recorded Slurm job: it asked Slurm about that id, and
    # neither it nor anyone else submitted a second job for this work dir.
    assert native_id(site.work_base, job_id) == slurm_id
    after = calls_since(site, offset)
    asked = [c for c in after if c.startswith(("squeue", "sacct")) and asks_about(c, slurm_id)]
    assert asked, f"the restarted agent never asked Slurm about job {slurm_id}: {after}"
    assert not [c for c in after if c.startswith("sbatch")], after
    all_calls = calls_since(site, 0)
    assert len([c for c in all_calls if c.startswith("sbatch")]) == 1, all_calls
    name = job_name(job_id)
    listed = slurm.run("squeue", "-h", "--states=all", f"--name={name}", "--format=%i")
    assert listed.stdout.split() == [slurm_id], "exactly one Slurm job for this work dir"

    def recorded() -> list[str]:  # jobcomp lines of ended jobs, by the job name we gave
        done = slurm.run("sacct", "-c", "-n", "-P", "--format=JobID,JobName,State")
        return [line for line in done.stdout.splitlines() if f"|{name}|" in line]

    wait_until(lambda: bool(recorded()), "the job in Slurm's completion log", limit=20)
    assert [line.split("|")[0] for line in recorded()] == [slurm_id]
    assert recorded()[0].split("|")[2] == "FAILED"  # exit code 7: Slurm calls that FAILED

    log = site.log.read_text()
    assert f"{job_id}: re-attached; following the running job" in log
    assert "Traceback" not in agent.output.read_text()
