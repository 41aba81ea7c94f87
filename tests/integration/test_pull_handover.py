"""The pull path fails loudly, on real processes: a real broker (gunicorn, TLS), real agent
processes and real ``mint-bridge run`` processes.

- A job is handed only to a live connection of a still-valid token: an agent stopped with
  SIGTERM while it long-polled gets nothing (another agent gets the job at once, with no
  "lease expired" requeue), and a token revoked while its poll waited gets 401, the job
  staying queued for a valid agent.
- A job never waits silently: a site the broker does not serve is refused at create with a
  command that registers it (and that command works as printed); for a known site with no
  agent online ``run`` says so within seconds and ends with the true reason.
"""

from __future__ import annotations

import dataclasses
import re
import shlex
import socket
import ssl
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.support.broker import BrokerFactory, BrokerProcess
from tests.support.pull import (
    ClientApi,
    bridge_config,
    make_site,
    mint_bridge,
    start_agent,
    wait_until,
)


@pytest.fixture(scope="module")
def broker(broker_factory: BrokerFactory) -> BrokerProcess:
    """Leases of 30 s: a job handed to a dead poll would sit for 30 s, far beyond the test's
    limits. No agent counts as absent here (10 min)."""
    return broker_factory("handover", jobs='lease_ttl = "30s"\nagent_absent_after = "10m"')


@pytest.fixture(scope="module")
def client_token(broker: BrokerProcess, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("client") / "broker.token"
    path.write_text(broker.token("client", "node01") + "\n")
    path.chmod(0o600)
    return path


class Admin:
    def __init__(self, broker: BrokerProcess) -> None:
        self.http = requests.Session()
        self.http.trust_env = False
        self.http.verify = str(broker.ca_bundle)
        self.http.headers["Authorization"] = f"Bearer {broker.token('admin')}"
        self.url = broker.url

    def long_polls(self) -> int:
        answer = self.http.get(f"{self.url}/api/v1/admin/queues", timeout=10)
        answer.raise_for_status()
        return int(answer.json()["long_polls"])

    def settled_long_polls(self) -> int:
        """The long polls waiting once those of earlier tests are gone: a poll whose client
        went away (an agent stopped, a connection cut) ends within a few seconds, and counting
        from a figure that still holds it would wait for a count that never comes."""
        deadline = time.monotonic() + 15
        while (count := self.long_polls()) and time.monotonic() < deadline:
            time.sleep(0.1)
        return count


def submit(api: ClientApi, site: str, **params: Any) -> str:
    job_id = str(uuid.uuid4())
    body = {"job_id": job_id, "site": site, "command": "count", "params": params}
    api.http.post(api.base, json=body, timeout=30).raise_for_status()
    api.http.post(f"{api.base}/{job_id}/submit", timeout=30).raise_for_status()
    return job_id


def first_holder(api: ClientApi, job_id: str, limit: float) -> str | None:
    """The agent id of the first agent the broker handed the job to (None: none within
    ``limit`` seconds, a bound on the wait, far below the 30 s lease a dead poll would hold)."""
    deadline = time.monotonic() + limit
    doc = api.job(job_id)
    while doc["agent_id"] is None and time.monotonic() < deadline:
        doc = api.job(job_id, wait=1, version=int(str(doc["version"])))
    holder = doc["agent_id"]
    return str(holder) if holder is not None else None


def requeued_by_lease(broker: BrokerProcess, job_id: str) -> bool:
    text = broker.log_path.read_text(errors="replace")
    return f"{job_id}: lease expired before the job started" in text


def claims(broker: BrokerProcess, job_id: str) -> list[str]:
    """The agent ids of every claim of the job the broker committed, in order."""
    text = broker.log_path.read_text(errors="replace")
    return re.findall(rf"{job_id}: claimed by agent (\S+) ", text)


def ever_claimed_by(broker: BrokerProcess, job_id: str, agent_id: str) -> bool:
    """Whether the broker committed a claim of the job for ``agent_id``, even briefly (an
    answer whose write failed is handed back, but should not have been needed)."""
    text = broker.log_path.read_text(errors="replace")
    return f"{job_id}: claimed by agent {agent_id} " in text


# --- no job for a stopped agent or a revoked token ------------------------------------------


def test_a_job_never_goes_to_the_poll_of_an_agent_stopped_with_sigterm(
    broker: BrokerProcess, client_token: Path, tmp_path: Path
) -> None:
    site = make_site(broker, tmp_path / "site", "hand-stop")
    admin, api = Admin(broker), ClientApi(broker, client_token)
    base = admin.settled_long_polls()
    stopping = start_agent(site.config("stopping-agent"))
    wait_until(lambda: admin.long_polls() == base + 1, "the first agent's long poll")
    second = start_agent(site.config("second-agent"))
    try:
        wait_until(lambda: admin.long_polls() == base + 2, "the second agent's long poll")
        # The first agent's poll is the older one: the broker would wake it first.
        assert stopping.stop() == 0, stopping.text()
        job_id = submit(api, site.name)
        holder = first_holder(api, job_id, limit=10)
        assert holder == "second-agent", stopping.text()
        assert not ever_claimed_by(broker, job_id, "stopping-agent")
        doc = api.final(job_id, limit=60)
        assert doc["state"] == "finished", doc
        # At once: one claim, by the live agent, and no lease had to expire to get there.
        assert claims(broker, job_id) == ["second-agent"]
        assert not requeued_by_lease(broker, job_id)
        # The stopped agent's poll is gone from the broker too, not left holding a thread.
        wait_until(lambda: admin.long_polls() == base + 1, "the stopped poll to end", limit=5)
    finally:
        assert second.stop() == 0, second.text()
    assert "claimed" not in stopping.text().split("SIGTERM received")[-1]


def test_a_poll_whose_connection_is_cut_gets_no_job(
    broker: BrokerProcess, client_token: Path, tmp_path: Path
) -> None:
    """A claim's TLS connection closed by its client while the client's process lives on (a
    cut network looks the same to the broker): the job goes to the live agent at once."""
    site = make_site(broker, tmp_path / "site", "hand-cut")
    token = site.token_file.read_text().strip()
    admin, api = Admin(broker), ClientApi(broker, client_token)
    base = admin.settled_long_polls()
    context = ssl.create_default_context(cafile=str(broker.ca_bundle))
    conn = context.wrap_socket(socket.create_connection(("127.0.0.1", broker.port)),
                               server_hostname="127.0.0.1")  # fmt: skip
    body = b'{"agent_id": "cut-agent"}'
    conn.sendall(
        b"POST /api/v1/agent/claim?wait=30 HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Authorization: Bearer " + token.encode() + b"\r\nContent-Type: application/json\r\n"
        b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
    )
    wait_until(lambda: admin.long_polls() == base + 1, "the poll that will be cut")
    agent = start_agent(site.config("live-agent"))
    try:
        wait_until(lambda: admin.long_polls() == base + 2, "the live agent's long poll")
        conn.close()
        job_id = submit(api, site.name)
        holder = first_holder(api, job_id, limit=10)
        assert holder == "live-agent"
        assert not ever_claimed_by(broker, job_id, "cut-agent")
        assert api.final(job_id, limit=60)["state"] == "finished"
        assert claims(broker, job_id) == ["live-agent"]  # at once: one claim, no requeue
    finally:
        assert agent.stop() == 0, agent.text()
    assert not requeued_by_lease(broker, job_id)


def test_a_revoked_tokens_open_poll_gets_401_and_the_job_waits_for_a_valid_agent(
    broker: BrokerProcess, client_token: Path, tmp_path: Path
) -> None:
    site = make_site(broker, tmp_path / "site", "hand-revoke")
    revoked = site.token_file.read_text().strip()
    admin, api = Admin(broker), ClientApi(broker, client_token)
    base = admin.settled_long_polls()
    answers: list[requests.Response] = []

    def poll() -> None:
        http = requests.Session()
        http.trust_env = False
        answers.append(http.post(
            f"{broker.url}/api/v1/agent/claim", params={"wait": 30},
            json={"agent_id": "revoked-agent"}, verify=str(broker.ca_bundle), timeout=60,
            headers={"Authorization": f"Bearer {revoked}"},
        ))  # fmt: skip

    # The site keeps a valid token of its own (for the agent started below).
    fresh = broker.cli("token", "create", "--site", site.name)
    assert fresh.returncode == 0, fresh.stderr
    token_file = tmp_path / "fresh.token"
    token_file.write_text(fresh.stdout.strip() + "\n")
    token_file.chmod(0o600)
    poller = threading.Thread(target=poll)
    poller.start()
    wait_until(lambda: admin.long_polls() == base + 1, "the long poll of the doomed token")
    done = broker.cli("token", "revoke", revoked.split("_")[1])
    assert done.returncode == 0, done.stderr
    job_id = submit(api, site.name)
    poller.join(timeout=10)
    assert answers and answers[0].status_code == 401, answers
    assert "was revoked" in answers[0].json()["error"]["message"]
    time.sleep(1)
    doc = api.job(job_id)
    assert doc["state"] == "queued" and doc["agent_id"] is None

    agent = start_agent(dataclasses.replace(site, token_file=token_file).config("valid-agent"))
    try:
        holder = first_holder(api, job_id, limit=20)
        assert holder == "valid-agent"
        assert api.final(job_id, limit=60)["state"] == "finished"
    finally:
        assert agent.stop() == 0, agent.text()
    assert not requeued_by_lease(broker, job_id)


# --- no silent wait for a site that cannot take the job -------------------------------------


@pytest.fixture(scope="module")
def lonely(broker_factory: BrokerFactory) -> BrokerProcess:
    """Agents count as absent after 1 s; jobs nobody claims expire after 8 s."""
    return broker_factory("lonely", jobs='agent_absent_after = "1s"\nqueue_ttl = "8s"')


@pytest.fixture
def lonely_bridge(lonely: BrokerProcess, tmp_path: Path) -> Path:
    token = tmp_path / "client.token"
    token.write_text(lonely.token("client", "node01") + "\n")
    token.chmod(0o600)
    return bridge_config(tmp_path / "bridge.toml", lonely.url, lonely.ca_bundle, token,
                         ["no-such-site", "no-agent-site"])  # fmt: skip


def run_lines(config: Path, *args: str, cwd: Path, timeout: float = 60
              ) -> tuple[int, list[str]]:  # fmt: skip
    """(exit code, stderr lines in the order they arrived)."""
    proc = mint_bridge(config, *args, cwd=cwd)
    try:
        _, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
        raise AssertionError(f"run still going after {timeout} s: {err.decode()[-2000:]}") from None
    return proc.returncode, err.decode(errors="replace").splitlines()


def site_jobs(broker: BrokerProcess, client_token: Path, site: str) -> list[str]:
    """The states of every job the broker holds for ``site``."""
    api = ClientApi(broker, client_token)
    answer = api.http.get(api.base, timeout=30)
    answer.raise_for_status()
    return [job["state"] for job in answer.json()["jobs"] if job["site"] == site]


def test_an_unknown_site_is_refused_at_once_with_a_command_that_works_as_printed(
    lonely: BrokerProcess, lonely_bridge: Path, tmp_path: Path
) -> None:
    code, lines = run_lines(lonely_bridge, "--site", "no-such-site", "--command", "count",
                            cwd=tmp_path)  # fmt: skip
    text = "\n".join(lines)
    assert code == 78, text
    # At once: refused at create, never retried, no job left at the broker.
    assert not [line for line in lines if "retry" in line or "reconnect" in line], text
    assert site_jobs(lonely, tmp_path / "client.token", "no-such-site") == []
    assert "no site 'no-such-site' is registered at this broker" in text
    assert "sites.no-such-site" in text  # and which key of our config names it
    command = re.search(r"`(mint-bridge broker token create [^`]+)`", text)
    assert command is not None, text
    argv = shlex.split(command.group(1))
    assert argv[:6] == ["mint-bridge", "broker", "token", "create", "--site", "no-such-site"]
    # As printed, with the console script of this installation.
    created = subprocess.run([str(Path(sys.executable).parent / argv[0]), *argv[1:]],
                             capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    assert created.returncode == 0, created.stderr
    assert created.stdout.startswith("mbt_")
    # Registered now: the same run is accepted (and, with no agent, times out as below).
    code, lines = run_lines(lonely_bridge, "--site", "no-such-site", "--command", "count",
                            "--timeout", "3s", cwd=tmp_path)  # fmt: skip
    assert code == 69, lines


def test_no_agent_online_is_said_within_seconds_and_is_the_reason_of_the_timeout(
    lonely: BrokerProcess, lonely_bridge: Path, tmp_path: Path
) -> None:
    lonely.token("site", "no-agent-site")  # registered; its agent never polls
    time.sleep(1.2)  # the broker has been up longer than agent_absent_after
    code, lines = run_lines(lonely_bridge, "--site", "no-agent-site", "--command",
                            "count", "--timeout", "5s", cwd=tmp_path)  # fmt: skip
    text = "\n".join(lines)
    assert code == 69, text
    said = [i for i, line in enumerate(lines)
            if "has ever polled this broker" in line and "error:" not in line]  # fmt: skip
    assert len(said) == 1, text  # said once
    line = lines[said[0]]
    errors = [i for i, line in enumerate(lines) if "error:" in line]
    assert errors and said[0] < errors[0], text  # while waiting, before the timeout ends it
    assert "no agent of site no-agent-site has ever polled this broker; the job stays" in line
    assert "gives up after 5 s" in line
    assert "never claimed: no agent of site no-agent-site was online" in text
    assert "cancelled at the site" not in text
    # The run's own --timeout ended it (not the broker's 8 s queue limit).
    assert "the job was cancelled at the broker after 5 s" in lines[errors[0]], text


def test_a_job_the_queue_limit_ends_unclaimed_says_no_agent_was_online(
    lonely: BrokerProcess, lonely_bridge: Path, tmp_path: Path
) -> None:
    lonely.token("site", "no-agent-site")
    code, lines = run_lines(lonely_bridge, "--site", "no-agent-site", "--command",
                            "count", cwd=tmp_path)  # fmt: skip
    text = "\n".join(lines)
    assert code == 69, text
    assert "never claimed: no agent of site no-agent-site was online" in text
    assert "queue limit" in text
    job_id = re.search(r"job (\S+) at site", lines[0])
    assert job_id is not None, text
    doc = ClientApi(lonely, tmp_path / "client.token").job(job_id.group(1))
    assert doc["state"] == "expired", doc  # the broker's queue limit ended it, not our timeout
