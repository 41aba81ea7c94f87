"""The pull path with the job under a real Slurm (the session's private cluster,
``tests/support/slurm.py``): the agent (site scheduler ``slurm``) killed with SIGKILL while the
Slurm job runs and started again, and the Slurm job cancelled from outside with ``scancel``.

A killed agent must not cost the job: the restarted agent re-attaches to the Slurm job recorded
in the work dir (the same Slurm job id; Slurm lists exactly one job of that name, and there was
one ``sbatch``), and the results come back byte for byte, with the same checks as
``test_pull_faults``. A ``scancel`` must reach ``mint-bridge run`` as the true reason, with
exactly one terminal state at the broker.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.resilience.test_pull_faults import (
    LEASE,
    RESULT,
    SOLVER,
    Rig,
    assert_proven,
    run_solver,
)
from tests.resilience.test_slurm_kills import _slurm_jobs
from tests.support.broker import BrokerFactory
from tests.support.fault_proxy import FaultProxy
from tests.support.pull import ClientApi, start_agent, wait_until
from tests.support.site_toml import write_site_toml
from tests.support.slurm import SlurmCluster

pytest_plugins = ["tests.integration.slurm_fixtures"]

LEG = "agent"  # the Rig's leg whose site this module's agent serves


def _site_config(root: Path, url: str, ca: Path, token: Path) -> Path:
    (root / "work").mkdir(parents=True)
    return write_site_toml(
        root / "site.toml",
        site={"name": f"res-{LEG}", "work_base": root / "work", "log_file": root / "site.log"},
        agent={"url": url, "ca_bundle": ca, "token_file": token,
               "agent_id": "res-slurm-agent", "max_jobs": 2, "lease_renew": "2s"},
        scheduler={"poll_interval": 0.5, "retries": 5, "retry_wait": "0.1s",
                   "command_timeout": 20},
        commands={"solve": {
            "program": SOLVER, "args": [root / "counter.txt", "{seconds}", "{size}"],
            "scheduler": "slurm",
            "params": {"seconds": {"type": "float", "default": 1.0},
                       "size": {"type": "int", "default": RESULT}},
        }},
    )  # fmt: skip


@pytest.fixture(scope="module")
def rig(broker_factory: BrokerFactory, slurm: SlurmCluster,
        tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:  # fmt: skip
    broker = broker_factory("res-slurm", jobs=f'lease_ttl = "{LEASE}s"')
    root = tmp_path_factory.mktemp("pull-slurm")
    client_token, agent_token = root / "client.token", root / "agent.token"
    client_token.write_text(broker.token("client", "res-node") + "\n")
    agent_token.write_text(broker.token("site", f"res-{LEG}") + "\n")
    for token in (client_token, agent_token):
        token.chmod(0o600)
    config = _site_config(root / LEG, broker.url, broker.ca_bundle, agent_token)
    env = dict(slurm.env)  # SLURM_CONF: the agent's sbatch and squeue must reach this cluster
    agents = {LEG: start_agent(config, env)}
    proxies = (FaultProxy(broker.port), FaultProxy(broker.port))  # unused: no faults here
    yield Rig(broker, root, client_token, *proxies, agents, {LEG: config}, agent_env=env)
    for agent in agents.values():
        agent.stop()
    for proxy in proxies:
        proxy.close()


def _slurm_id(rig: Rig, job_id: str) -> str:
    path = rig.work(LEG, job_id) / ".mint-bridge" / "native_id"
    return path.read_text().strip() if path.exists() else ""


def _site_log(rig: Rig) -> str:
    return (rig.root / LEG / "site.log").read_text(errors="replace")


def _describe(request: pytest.FixtureRequest, fault: str, expected: str) -> None:
    request.node.user_properties.extend(
        [("fault", fault), ("path", "broker + Slurm (agent: sbatch, squeue, sacct)"),
         ("expected", expected)]
    )  # fmt: skip


def test_agent_kill9_while_the_slurm_job_runs(
    rig: Rig, slurm: SlurmCluster, request: pytest.FixtureRequest
) -> None:
    _describe(request, "kill -9 of the agent while the Slurm job runs, then a restart",
              "same Slurm job, one sbatch; finished, SHA-256 equal")  # fmt: skip
    seen: dict[str, str] = {}

    def kill(job_id: str) -> None:
        wait_until(lambda: rig.runs(LEG, job_id) > 0, "the solver to start under Slurm")
        seen["first"] = _slurm_id(rig, job_id)
        rig.agents[LEG].kill9()
        rig.restart_agent(LEG)

    got = run_solver(rig, LEG, seconds=6.0, during=kill)
    assert_proven(rig, LEG, got)
    first = seen["first"]
    assert first.isdigit(), first
    assert _slurm_id(rig, got.job_id) == first
    assert _slurm_jobs(slurm, got.job_id) == [first], "exactly one Slurm job for this work dir"
    log = _site_log(rig)
    assert f"{got.job_id}: re-attached; following the running job" in log, log[-2000:]
    assert log.count(f"{got.job_id}: started command solve as ") == 1, log[-2000:]


def test_scancel_from_outside_reaches_the_client_as_the_reason(
    rig: Rig, slurm: SlurmCluster, request: pytest.FixtureRequest
) -> None:
    _describe(request, "scancel of the running Slurm job from outside",
              "run names the cancel at the site; one end state, solver once")  # fmt: skip
    native: dict[str, str] = {}

    def cancel(job_id: str) -> None:
        wait_until(lambda: rig.runs(LEG, job_id) > 0, "the solver to start under Slurm")
        native["id"] = _slurm_id(rig, job_id)
        assert native["id"].isdigit(), native
        done = slurm.run("scancel", native["id"])
        assert done.returncode == 0, done.stderr

    got = run_solver(rig, LEG, seconds=60.0, during=cancel)
    reason = f"Slurm job {native['id']} was cancelled at the site (Slurm state CANCELLED)"
    assert got.code == 86, got.err[-2000:]  # docs/exit-codes.md: cancelled at the site
    assert reason in got.err, got.err[-2000:]
    doc = ClientApi(rig.broker, rig.client_token).job(got.job_id)
    assert doc["state"] == "cancelled", doc  # the one terminal state, the true one
    assert isinstance(doc["outcome"], dict) and doc["outcome"]["reason"] == reason, doc
    assert rig.runs(LEG, got.job_id) == 1
    assert _slurm_jobs(slurm, got.job_id) == [native["id"]]
    assert not (got.module / "result.bin").exists(), "a cancelled job returns no result"
