"""The pull path with a black-holed connection: the proxy holds the connection open and passes
no more bytes, the way a stateful firewall that dropped its entry or a hung load balancer does.

Nothing resets: only the reader's own timeout finds it. The client and the agent here set
``read_timeout = 2`` (the default is 60 s), so each scenario shows the timed-out call retried
on a new connection within the 10 s lease, and the job ending once, with the same checks as
every other scenario: exactly one terminal state, the solver ran once, SHA-256 equal both ways,
no stuck run past lease + 60 s.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.resilience.test_pull_faults import (
    INPUT,
    LEASE,
    RESULT,
    Rig,
    _site_config,
    assert_proven,
    proxy_for,
    run_solver,
)
from tests.support.broker import BrokerFactory
from tests.support.fault_proxy import Fault, FaultProxy
from tests.support.pull import start_agent, wait_until

READ_TIMEOUT = 2  # seconds: what both ends are told to wait for a silent broker
RETRY = "retrying in"  # the session's retry line (bridge.core.broker_session)


@pytest.fixture(scope="module")
def rig(broker_factory: BrokerFactory, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    # A black-holed upload holds its file's upload lock at the broker until the body stalls
    # for body_timeout (120 s by default): 3 s here, so the resumed upload gets the lock soon.
    broker = broker_factory("res-blackhole", jobs=f'lease_ttl = "{LEASE}s"',
                            limits='body_timeout = "3s"')  # fmt: skip
    root = tmp_path_factory.mktemp("blackhole")
    client_proxy, agent_proxy = FaultProxy(broker.port), FaultProxy(broker.port)
    token = root / "client.token"
    token.write_text(broker.token("client", "res-node") + "\n")
    token.chmod(0o600)
    # A claim's long poll of 3 s: a black-holed claim is found after 3 + 2 s.
    agent = {"read_timeout": READ_TIMEOUT, "poll_wait": "3s"}
    configs = {
        "client": _site_config(root, broker, "client", broker.url, **agent),
        "agent": _site_config(root, broker, "agent", agent_proxy.url, **agent),
    }
    agents = {leg: start_agent(path) for leg, path in configs.items()}
    yield Rig(broker, root, token, client_proxy, agent_proxy, agents, configs,
              client_settings=f"poll_wait = 3\nread_timeout = {READ_TIMEOUT}\n")  # fmt: skip
    for running in agents.values():
        running.stop()
    client_proxy.close()
    agent_proxy.close()


# Where each leg's step puts its bytes: the client uploads inputs and downloads results, the
# agent downloads inputs and uploads results. A black hole in the direction of the answer
# (down) at byte 0 swallows the first answer of the leg's next connection: the submit on the
# client's leg, the claim on the agent's.
STEP_FAULT = {
    ("client", "submit"): ("down", 0), ("client", "staging_in"): ("up", INPUT // 2),
    ("client", "staging_out"): ("down", RESULT // 2),
    ("agent", "submit"): ("down", 0), ("agent", "staging_in"): ("down", INPUT // 2),
    ("agent", "staging_out"): ("up", RESULT // 2),
}  # fmt: skip


def _describe(request: pytest.FixtureRequest, step: str, leg: str) -> None:
    request.node.user_properties.extend([
        ("fault", f"black hole at {step}, read_timeout {READ_TIMEOUT} s"),
        ("path", f"broker, {leg} leg"),
        ("expected", "retried after the read timeout; finished, solver once, SHA-256 equal"),
    ])  # fmt: skip


def _retries(rig: Rig, leg: str, err: str) -> list[str]:
    """The retry lines of the leg's side: the run's stderr and its job log, or the site's log
    file (the agent's)."""
    if leg == "client":
        found = re.search(r"; log: (\S+)", err)
        text = err + (Path(found.group(1)).read_text(errors="replace") if found else "")
    else:
        site_log = rig.root / leg / "site.log"
        text = site_log.read_text() if site_log.exists() else ""
    return [line for line in text.splitlines() if RETRY in line]


@pytest.mark.parametrize("step", ["submit", "staging_in", "staging_out", "running"])
@pytest.mark.parametrize("leg", ["client", "agent"])
def test_pull_blackhole_at_step(rig: Rig, request: pytest.FixtureRequest, leg: str,
                                step: str) -> None:  # fmt: skip
    _describe(request, step, leg)
    proxy = proxy_for(rig, leg)
    proxy.disarm()
    fired, before = len(proxy.fired), len(_retries(rig, leg, ""))

    def arm_while_running(job_id: str) -> None:
        wait_until(lambda: rig.runs(leg, job_id) > 0, "the solver to start")
        # While the solver runs, the leg's next answer is a long poll's (the client's poll of
        # the job document, the agent's lease renewal or claim) or a log upload's.
        proxy.arm(Fault("blackhole", "down", 0))

    if step == "running":
        got = run_solver(rig, leg, seconds=3.0, during=arm_while_running)
    else:
        direction, at = STEP_FAULT[(leg, step)]
        proxy.arm(Fault("blackhole", direction, at))  # type: ignore[arg-type]
        got = run_solver(rig, leg)
    proxy.disarm()
    assert len(proxy.fired) == fired + 1, "the black hole must have swallowed a connection"
    assert_proven(rig, leg, got)
    retried = _retries(rig, leg, got.err)[before if leg == "agent" else 0 :]
    assert retried, f"the timed-out call must be retried: {got.err[-2000:]}"
    assert all("timed out" in line or "unreachable" in line for line in retried), retried
    expired = [line for line in rig.broker.log_path.read_text(errors="replace").splitlines()
               if f"{got.job_id}: lease expired" in line]  # fmt: skip
    if (leg, step) == ("agent", "submit"):
        # The claim's answer was lost after the broker committed it: the agent never knew
        # the job, so only the lease gives it back, and always before it started.
        assert all("before the job started" in line for line in expired), expired
    else:
        # A black hole found in seconds is retried well inside the lease: never an expiry.
        assert not expired, expired
