"""The pull path under faults: a real broker (gunicorn, TLS), a real agent and real
``mint-bridge run`` processes, with a fault proxy on the client's leg or the agent's leg.

Every scenario runs one tiny job and checks the same five things: exactly one terminal state
(``finished``, exit code 0, the true outcome), the solver ran once (its counter file), the
inputs reached the solver byte for byte and the result came back byte for byte (SHA-256), and
the run ended within the lease plus 60 s (the run's own timeout, never a timing assertion).
"""

from __future__ import annotations

import hashlib
import random
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.broker import BrokerFactory, BrokerProcess
from tests.support.fault_proxy import Fault, FaultProxy
from tests.support.pull import (
    Agent,
    ClientApi,
    bridge_config,
    mint_bridge,
    start_agent,
    wait_until,
)
from tests.support.site_toml import write_site_toml

SOLVER = Path(__file__).parent / "programs" / "solver.py"
LEASE = 10  # seconds: the broker's lease_ttl below
KiB, MiB = 1 << 10, 1 << 20
INPUT, RESULT = 1 * MiB, 1 * MiB


@dataclass
class Rig:
    broker: BrokerProcess
    root: Path
    client_token: Path
    client_proxy: FaultProxy
    agent_proxy: FaultProxy
    agents: dict[str, Agent]
    configs: dict[str, Path]
    client_settings: str = ""  # extra lines for the client's bridge.toml site table
    agent_env: dict[str, str] | None = None  # added to each agent's environment

    def counter(self, leg: str) -> Path:
        return self.root / leg / "counter.txt"

    def runs(self, leg: str, job_id: str) -> int:
        path = self.counter(leg)
        lines = path.read_text().splitlines() if path.exists() else []
        return sum(1 for line in lines if line.split()[0] == job_id)

    def work(self, leg: str, job_id: str) -> Path:
        return self.root / leg / "work" / job_id

    def restart_agent(self, leg: str) -> None:
        self.agents[leg] = start_agent(self.configs[leg], self.agent_env)


def _site_config(rig_root: Path, broker: BrokerProcess, leg: str, url: str,
                 **agent: object) -> Path:  # fmt: skip
    root = rig_root / leg
    (root / "work").mkdir(parents=True)
    token = root / "agent.token"
    token.write_text(broker.token("site", f"res-{leg}") + "\n")
    token.chmod(0o600)
    return write_site_toml(
        root / "site.toml",
        site={"name": f"res-{leg}", "work_base": root / "work", "log_file": root / "site.log"},
        agent={"url": url, "ca_bundle": broker.ca_bundle, "token_file": token,
               "agent_id": f"res-{leg}-agent", "max_jobs": 2, "lease_renew": "2s", **agent},
        commands={"solve": {
            "program": SOLVER, "args": [root / "counter.txt", "{seconds}", "{size}"],
            "params": {"seconds": {"type": "float", "default": 1.0},
                       "size": {"type": "int", "default": RESULT}},
        }},
    )  # fmt: skip


@pytest.fixture(scope="module")
def rig(broker_factory: BrokerFactory, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    yield from make_rig(broker_factory, tmp_path_factory, "res-broker")


def make_rig(broker_factory: BrokerFactory, tmp_path_factory: pytest.TempPathFactory,
             name: str, broker_env: dict[str, str] | None = None,
             agent_env: dict[str, str] | None = None) -> Iterator[Rig]:  # fmt: skip
    """One broker; site ``res-client`` whose agent talks to it directly (the client's leg gets
    the faults), site ``res-agent`` whose agent talks through the agent proxy. The ``env``
    dicts are added to the broker's and the agents' environments."""
    broker = broker_factory(name, jobs=f'lease_ttl = "{LEASE}s"', env=broker_env)
    root = tmp_path_factory.mktemp("resilience")
    client_proxy, agent_proxy = FaultProxy(broker.port), FaultProxy(broker.port)
    token = root / "client.token"
    token.write_text(broker.token("client", "res-node") + "\n")
    token.chmod(0o600)
    configs = {
        "client": _site_config(root, broker, "client", broker.url),
        "agent": _site_config(root, broker, "agent", agent_proxy.url),
    }
    agents = {leg: start_agent(path, agent_env) for leg, path in configs.items()}
    yield Rig(broker, root, token, client_proxy, agent_proxy, agents, configs,
              agent_env=agent_env)  # fmt: skip
    for agent in agents.values():
        agent.stop()
    client_proxy.close()
    agent_proxy.close()


@dataclass
class Outcome:
    job_id: str
    code: int
    out: str
    err: str
    module: Path
    blob: bytes


def run_solver(rig: Rig, leg: str, seconds: float = 1.0, during: object = None) -> Outcome:
    """One job on the leg's site; ``during(job_id)`` runs while it is in flight."""
    url = rig.client_proxy.url if leg == "client" else rig.broker.url
    job_id = str(uuid.uuid4())
    module = rig.root / "modules" / job_id
    module.mkdir(parents=True)
    blob = random.Random(job_id).randbytes(INPUT)
    (module / "in.bin").write_bytes(blob)
    config = bridge_config(module.parent / f"{job_id}.toml", url, rig.broker.ca_bundle,
                           rig.client_token, [f"res-{leg}"], rig.client_settings)  # fmt: skip
    proc = mint_bridge(config, "--site", f"res-{leg}", "--command", "solve",
                       "-p", f"seconds={seconds}", "-i", "in.bin", "--job-id", job_id,
                       cwd=module)  # fmt: skip
    try:
        if callable(during):
            during(job_id)
        out, err = proc.communicate(timeout=LEASE + 60)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        raise AssertionError(f"{job_id} stuck past lease + 60 s: {err.decode()[-2000:]}") from None
    return Outcome(job_id, proc.returncode, out.decode(errors="replace"),
                   err.decode(errors="replace"), module, blob)  # fmt: skip


def assert_proven(rig: Rig, leg: str, got: Outcome) -> None:
    assert got.code == 0, got.err[-3000:]
    doc = ClientApi(rig.broker, rig.client_token).job(got.job_id)
    assert doc["state"] == "finished", doc
    assert isinstance(doc["outcome"], dict) and doc["outcome"]["exit_code"] == 0, doc
    assert rig.runs(leg, got.job_id) == 1, "the solver must run exactly once"
    expected = hashlib.sha256(random.Random(got.job_id).randbytes(RESULT)).hexdigest()
    assert hashlib.sha256((got.module / "result.bin").read_bytes()).hexdigest() == expected
    sums = (rig.work(leg, got.job_id) / "sums.txt").read_text()
    assert sums == f"{hashlib.sha256(got.blob).hexdigest()}  in.bin\n"
    assert got.out.splitlines()[0] == f"started {got.job_id}"
    assert got.out.splitlines()[-1] == "done"


def proxy_for(rig: Rig, leg: str) -> FaultProxy:
    return rig.client_proxy if leg == "client" else rig.agent_proxy


# Which direction carries which step on each leg: the client uploads inputs and downloads
# results; the agent downloads inputs and uploads results.
STEP_DIRECTION = {
    ("client", "submitted"): "up", ("client", "staging_in"): "up",
    ("client", "staging_out"): "down",
    ("agent", "submitted"): "down", ("agent", "staging_in"): "down",
    ("agent", "staging_out"): "up",
}  # fmt: skip
STEP_OFFSET = {"submitted": 0, "staging_in": INPUT // 2, "staging_out": RESULT // 2}


def make_fault(action: str, leg: str, step: str) -> Fault:
    direction = STEP_DIRECTION[(leg, step)]
    extra: dict[str, object] = {"delay": {"seconds": 1.0}, "throttle": {"rate": 2 * MiB}}.get(
        action, {}
    )
    return Fault(action, direction, STEP_OFFSET[step], **extra)  # type: ignore[arg-type]


TABLE = [
    (leg, step, action)
    for leg in ("client", "agent")
    for step in ("submitted", "staging_in", "staging_out")
    for action in ("cut", "truncate", "delay", "throttle")
]


def _describe(request: pytest.FixtureRequest, fault: str, path: str) -> None:
    request.node.user_properties.extend(
        [("fault", fault), ("path", path), ("expected", "finished, solver once, SHA-256 equal")]
    )


@pytest.mark.parametrize(("leg", "step", "action"), TABLE)
def test_proxy_fault_at_step(rig: Rig, request: pytest.FixtureRequest, leg: str, step: str,
                             action: str) -> None:  # fmt: skip
    _describe(request, f"{action} at {step}", f"broker, {leg} leg")
    proxy = proxy_for(rig, leg)
    proxy.disarm()
    fired = len(proxy.fired)
    proxy.arm(make_fault(action, leg, step))
    got = run_solver(rig, leg)
    proxy.disarm()
    assert len(proxy.fired) == fired + 1, "the fault must have fired"
    assert_proven(rig, leg, got)


@pytest.mark.parametrize("leg", ["client", "agent"])
def test_link_flap_while_running(rig: Rig, request: pytest.FixtureRequest, leg: str) -> None:
    _describe(request, "reset every connection, twice, while the solver runs",
              f"broker, {leg} leg")  # fmt: skip
    proxy = proxy_for(rig, leg)

    def flap(job_id: str) -> None:
        wait_until(lambda: rig.runs(leg, job_id) > 0, "the solver to start")
        proxy.cut_all()
        proxy.arm(Fault("cut", "up", 0), Fault("cut", "down", 0))
        proxy.cut_all()

    got = run_solver(rig, leg, seconds=2.0, during=flap)
    proxy.disarm()
    assert_proven(rig, leg, got)


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("leg", ["client", "agent"])
def test_seeded_random_cut(rig: Rig, request: pytest.FixtureRequest, leg: str,
                           seed: int) -> None:  # fmt: skip
    rng = random.Random(seed)
    direction = rng.choice(["up", "down"])
    action = rng.choice(["cut", "truncate"])
    fault = Fault.random(seed, action, direction, 0, INPUT + RESULT)  # type: ignore[arg-type]
    _describe(request, f"seed {seed}: {action} {direction} at byte {fault.at}",
              f"broker, {leg} leg")  # fmt: skip
    proxy = proxy_for(rig, leg)
    proxy.disarm()
    proxy.arm(fault)
    got = run_solver(rig, leg)
    proxy.disarm()
    assert_proven(rig, leg, got)


@pytest.mark.parametrize("leg", ["client", "agent"])
def test_both_legs_cut_at_once(rig: Rig, request: pytest.FixtureRequest, leg: str) -> None:
    _describe(request, "client and agent legs cut mid-transfer", f"broker, {leg} site")
    for proxy in (rig.client_proxy, rig.agent_proxy):
        proxy.disarm()
        proxy.arm(Fault("cut", "up", INPUT // 3), Fault("cut", "down", RESULT // 3))
    got = run_solver(rig, leg)
    for proxy in (rig.client_proxy, rig.agent_proxy):
        proxy.disarm()
    assert_proven(rig, leg, got)


# --- processes killed with SIGKILL ----------------------------------------------------------


@pytest.mark.parametrize("step", ["submitted", "running"])
@pytest.mark.parametrize("leg", ["client", "agent"])
def test_agent_kill9(rig: Rig, request: pytest.FixtureRequest, leg: str, step: str) -> None:
    _describe(request, f"kill -9 of the agent at {step}, then a restart", f"broker, {leg} site")

    def kill(job_id: str) -> None:
        if step == "running":
            wait_until(lambda: rig.runs(leg, job_id) > 0, "the solver to start")
        rig.agents[leg].kill9()
        rig.restart_agent(leg)

    got = run_solver(rig, leg, seconds=2.0, during=kill)
    assert_proven(rig, leg, got)


@pytest.mark.parametrize("step", ["submitted", "running"])
def test_broker_kill9(rig: Rig, request: pytest.FixtureRequest, step: str) -> None:
    _describe(request, f"kill -9 of gunicorn at {step}, restart on the same store",
              "broker, both legs")  # fmt: skip

    def kill(job_id: str) -> None:
        if step == "running":
            wait_until(lambda: rig.runs("agent", job_id) > 0, "the solver to start")
        rig.broker.kill9()
        rig.broker.restart()

    got = run_solver(rig, "agent", seconds=2.0, during=kill)
    assert_proven(rig, "agent", got)


