"""The pull path end to end: a real broker (gunicorn, TLS from a throwaway CA), real agent
processes (``python -m bridge.site.agent``) and real ``mint-bridge run`` processes.

Sites here open no port: each agent long-polls the broker. Each scenario that needs its own
agent uses its own site name at the broker, so no other agent can take its jobs.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
import requests

from tests.support.broker import BrokerProcess
from tests.support.fault_proxy import Fault, FaultProxy
from tests.support.pull import (
    Agent,
    ClientApi,
    MiB,
    Site,
    bridge_config,
    make_site,
    mint_bridge,
    run_job,
    sha256,
    start_agent,
    wait_until,
)

# --- services ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def main_site(broker: BrokerProcess, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    """Site ``pull-main`` with one agent for the module's simple scenarios."""
    site = make_site(broker, tmp_path_factory.mktemp("pull") / "main", "pull-main")
    agent = start_agent(site.config("main-agent"))
    yield site
    assert agent.stop() == 0, agent.text()


@pytest.fixture(scope="module")
def client_token(broker: BrokerProcess, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("client") / "broker.token"
    path.write_text(broker.token("client", "node01") + "\n")
    path.chmod(0o600)
    return path


@pytest.fixture(scope="module")
def bridge_toml(
    broker: BrokerProcess, client_token: Path, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    path = tmp_path_factory.mktemp("bridge") / "bridge.toml"
    return bridge_config(
        path, broker.url, broker.ca_bundle, client_token, ["pull-main", "pull-kill", "pull-stop"]
    )


# --- one agent: bytes, log, exit codes, refusals, cancel ----------------------------------


def test_results_bytes_and_sha256_end_to_end(
    main_site: Site, bridge_toml: Path, tmp_path: Path
) -> None:
    module = tmp_path / "module"
    module.mkdir()
    blob = os.urandom(3 * MiB + 17)
    (module / "in1.bin").write_bytes(blob)
    (module / "in two.txt").write_text("hello\n")
    (module / "empty.dat").write_bytes(b"")
    job_id = str(uuid.uuid4())
    code, out, err = run_job(
        bridge_toml, "--site", "pull-main", "--command", "checksum", "--job-id", job_id,
        "-i", "in1.bin", "-i", "in two.txt", "-i", "empty.dat", "-o", "out", cwd=module,
    )  # fmt: skip
    assert code == 0, err
    assert "checked 3 files" in out
    assert "a line on stderr" in err
    sums = dict(
        reversed(line.split("  ", 1)) for line in (module / "out/sums.txt").read_text().splitlines()
    )
    # What the solver saw at the site is byte for byte what we sent.
    assert sums == {
        "empty.dat": hashlib.sha256(b"").hexdigest(),
        "in1.bin": hashlib.sha256(blob).hexdigest(),
        "in two.txt": hashlib.sha256(b"hello\n").hexdigest(),
    }
    assert (module / "out/sub/dir/nested.txt").read_text() == "nested result\n"
    # Unchanged inputs do not come back; the control dir never does.
    assert sorted(p.name for p in (module / "out").iterdir()) == ["sub", "sums.txt"]
    site_copy = main_site.work_base / job_id / "sums.txt"
    assert sha256(module / "out/sums.txt") == sha256(site_copy)


def test_big_result_arrives_intact(main_site: Site, bridge_toml: Path, tmp_path: Path) -> None:
    job_id = str(uuid.uuid4())
    code, _, err = run_job(
        bridge_toml, "--site", "pull-main", "--command", "big", "-p", f"size={6 * MiB}",
        "--job-id", job_id, cwd=tmp_path,
    )  # fmt: skip
    assert code == 0, err
    assert (tmp_path / "big.out").stat().st_size == 6 * MiB
    assert sha256(tmp_path / "big.out") == sha256(main_site.work_base / job_id / "big.out")


def test_log_is_live(main_site: Site, bridge_toml: Path, tmp_path: Path) -> None:
    job_id = str(uuid.uuid4())
    proc = mint_bridge(
        bridge_toml, "--site", "pull-main", "--command", "ticks", "-p", "count=6",
        "-p", "delay=0.5", "--job-id", job_id, cwd=tmp_path,
    )  # fmt: skip
    assert proc.stdout is not None
    first = proc.stdout.readline()
    # The first line reached us while the solver was still running: it writes ticks.txt last.
    assert first == b"tick 0\n"
    assert not (main_site.work_base / job_id / "ticks.txt").exists()
    rest, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert rest.decode().splitlines() == [f"tick {i}" for i in range(1, 6)]
    assert (tmp_path / "ticks.txt").read_text() == "6\n"


def test_solver_exit_code_and_both_streams(
    main_site: Site, bridge_toml: Path, tmp_path: Path
) -> None:
    code, out, err = run_job(
        bridge_toml, "--site", "pull-main", "--command", "fail", "-p", "code=7", cwd=tmp_path
    )
    assert code == 7
    assert out == "about to fail\n"
    assert "failure detail" in err


def test_refusals_exit_like_over_ssh(main_site: Site, bridge_toml: Path, tmp_path: Path) -> None:
    code, _, err = run_job(bridge_toml, "--site", "pull-main", "--command", "rm", cwd=tmp_path)
    assert code == 77
    assert "has no command 'rm'" in err
    code, _, err = run_job(
        bridge_toml, "--site", "pull-main", "--command", "fail", "-p", "code=x", cwd=tmp_path
    )
    assert code == 65
    assert "code='x' is invalid" in err
    code, _, err = run_job(
        bridge_toml, "--site", "pull-main", "--command", "fail", "-p", "nope=1", cwd=tmp_path
    )
    assert code == 65
    assert "no parameter 'nope'" in err


def test_sigterm_cancels_the_job_at_the_site(
    main_site: Site, bridge_toml: Path, client_token: Path, tmp_path: Path
) -> None:
    job_id = str(uuid.uuid4())
    proc = mint_bridge(
        bridge_toml, "--site", "pull-main", "--command", "count", "-p", "seconds=120",
        "--job-id", job_id, cwd=tmp_path,
    )  # fmt: skip
    wait_until(lambda: any(j == job_id for j, _ in main_site.counted()), "the solver to start")
    solver = next(pid for j, pid in main_site.counted() if j == job_id)
    assert psutil.pid_exists(solver)
    proc.send_signal(signal.SIGTERM)
    try:
        _, err = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        # Python's fault handler prints every thread's stack on SIGABRT: show where it hangs.
        proc.send_signal(signal.SIGABRT)
        _, err = proc.communicate(timeout=10)
        pytest.fail(f"run did not exit 30 s after SIGTERM:\n{err.decode(errors='replace')}")
    assert proc.returncode == 143, err
    assert b"cancelled at the site" in err
    wait_until(lambda: not _alive(solver), "the solver to be gone", limit=20)
    doc = ClientApi(main_site.broker, client_token).job(job_id)
    assert doc["state"] == "cancelled"
    assert isinstance(doc["outcome"], dict) and doc["outcome"]["state"] == "cancelled"


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


# --- the agent dies or stops mid-job ----------------------------------------------------------


@pytest.mark.parametrize("how", ["kill9", "sigterm"])
def test_agent_restart_reattaches_and_runs_the_job_once(
    broker: BrokerProcess, bridge_toml: Path, tmp_path: Path, how: str
) -> None:
    name = "pull-kill" if how == "kill9" else "pull-stop"
    site = make_site(broker, tmp_path / "site", name)
    config = site.config(f"{name}-agent")
    agent = start_agent(config)
    job_id = str(uuid.uuid4())
    module = tmp_path / "module"
    module.mkdir()
    client = mint_bridge(
        bridge_toml, "--site", name, "--command", "count", "-p", "seconds=4",
        "--job-id", job_id, cwd=module,
    )  # fmt: skip
    try:
        wait_until(lambda: site.counted(), "the solver to start")
        if how == "kill9":
            agent.kill9()
        else:
            assert agent.stop() == 0, agent.text()  # SIGTERM: hands the job back, exits 0
            assert "handed back" in agent.text()
        solver = site.counted()[0][1]
        assert _alive(solver)  # the job runs on without its agent
        agent = start_agent(config)
        out, err = client.communicate(timeout=90)
    finally:
        if client.poll() is None:
            client.kill()
        stopped = agent.stop()
    assert client.returncode == 0, err
    assert site.counted() == [(job_id, solver)]  # started exactly once
    assert (module / "done.txt").read_text() == "done\n"
    # The log went on where the broker's copy ended: every line once, in order.
    assert out.decode().splitlines() == [f"counted {job_id}"] + [f"working {i}" for i in range(4)]
    assert stopped == 0
    assert "re-attach" in agent.text()


# --- transfers resume after a cut ---------------------------------------------------------------


@pytest.mark.parametrize("side", ["client", "agent"])
def test_transfers_resume_after_a_cut(
    broker: BrokerProcess, client_token: Path, tmp_path: Path, side: str
) -> None:
    """The client's input upload and result download, or the agent's input download and result
    upload, each cut once halfway (through the fault proxy, which resets the TCP connection)."""
    size = 8 * MiB
    site = make_site(broker, tmp_path / "site", f"pull-cut-{side}")
    proxy = FaultProxy(broker.port)
    proxy.arm(Fault("cut", "up", size // 2), Fault("cut", "down", size // 2))
    relayed = proxy.url
    agent = start_agent(site.config("cut-agent", url=relayed if side == "agent" else None))
    try:
        config = bridge_config(
            tmp_path / "bridge.toml", relayed if side == "client" else broker.url,
            broker.ca_bundle, client_token, [site.name],
        )  # fmt: skip
        module = tmp_path / "module"
        module.mkdir()
        blob = os.urandom(size)
        (module / "in.bin").write_bytes(blob)
        job_id = str(uuid.uuid4())
        code, _, err = run_job(
            config, "--site", site.name, "--command", "big", "-p", f"size={size}",
            "-i", "in.bin", "--job-id", job_id, cwd=module,
        )  # fmt: skip
    finally:
        proxy.close()
        stopped = agent.stop()
    assert code == 0, err
    assert stopped == 0
    assert sorted(way for _, way, _ in proxy.fired) == ["down", "up"]  # each cut once
    assert sha256(site.work_base / job_id / "in.bin") == hashlib.sha256(blob).hexdigest()
    assert sha256(module / "big.out") == sha256(site.work_base / job_id / "big.out")
    # Resumed, not restarted: a restart sends (or fetches) the whole first half again, at
    # least 1.5 times the size in all; a resume repeats only what was in flight at the cut
    # (socket buffers between the proxy and the broker: a few MB on a loaded machine).
    assert proxy.carried["up"] < size * 1.5
    assert proxy.carried["down"] < size * 1.5


# --- four agents race for fifty jobs --------------------------------------------------------------


def test_four_agents_fifty_jobs_each_runs_once(
    broker: BrokerProcess, client_token: Path, tmp_path: Path
) -> None:
    site = make_site(broker, tmp_path / "site", "pull-race")
    agents = [start_agent(site.config(f"racer-{i}", max_jobs=2)) for i in range(4)]
    api = ClientApi(broker, client_token)
    try:
        ids = [str(uuid.uuid4()) for _ in range(50)]
        for job_id in ids:
            body = {"job_id": job_id, "site": "pull-race", "command": "count"}
            api.http.post(api.base, json=body, timeout=30).raise_for_status()
            api.http.post(f"{api.base}/{job_id}/submit", timeout=30).raise_for_status()
        docs = [api.final(job_id) for job_id in ids]
    finally:
        codes = [agent.stop() for agent in agents]
    assert codes == [0, 0, 0, 0]
    for doc in docs:
        assert doc["state"] == "finished", doc
        assert isinstance(doc["outcome"], dict) and doc["outcome"]["exit_code"] == 0, doc
    runs = Counter(job for job, _ in site.counted())
    assert set(runs) == set(ids)
    assert max(runs.values()) == 1


# --- the broker itself dies mid-job -------------------------------------------------------------


def test_broker_crash_mid_job_is_ridden_out(
    broker: BrokerProcess, main_site: Site, bridge_toml: Path, tmp_path: Path
) -> None:
    """kill -9 of the broker while a job runs, then a restart on the same data: the client and
    the agent reconnect (backoff with jitter), the job runs once and its results arrive."""
    job_id = str(uuid.uuid4())
    client = mint_bridge(
        bridge_toml, "--site", "pull-main", "--command", "count", "-p", "seconds=3",
        "--job-id", job_id, cwd=tmp_path,
    )  # fmt: skip
    try:
        wait_until(lambda: any(j == job_id for j, _ in main_site.counted()), "the solver to start")
        broker.kill9()
        broker.restart()
        out, err = client.communicate(timeout=120)
    finally:
        if client.poll() is None:
            client.kill()
    assert client.returncode == 0, err
    assert [j for j, _ in main_site.counted()].count(job_id) == 1
    assert (tmp_path / "done.txt").read_text() == "done\n"
    assert out.decode().splitlines() == [f"counted {job_id}"] + [f"working {i}" for i in range(3)]


# --- an agent killed between submit and recording the native id ---------------------------------


def test_a_start_cut_off_before_its_id_was_recorded_runs_once(
    broker: BrokerProcess, client_token: Path, tmp_path: Path
) -> None:
    from bridge.core.job import JobRequest
    from bridge.core.workdir_files import BROKER_FILE
    from bridge.site import accepted_job, job_start
    from bridge.site.config import load_site_config
    from bridge.site.workdir import WorkDir

    name = "pull-cut"
    site = make_site(broker, tmp_path / "site", name)
    config = site.config(f"{name}-agent")
    toml = bridge_config(tmp_path / "bridge.toml", broker.url, broker.ca_bundle, client_token,
                         [name])  # fmt: skip
    module = tmp_path / "module"
    module.mkdir()
    job_id = str(uuid.uuid4())
    client = mint_bridge(
        toml, "--site", name, "--command", "count", "-p", "seconds=2", "--job-id", job_id,
        cwd=module,
    )  # fmt: skip
    agent: Agent | None = None
    try:
        api = ClientApi(broker, client_token)
        wait_until(lambda: _exists(api, job_id), "the job to reach the broker")
        # What an agent killed right after the scheduler's submit leaves behind: its work dir,
        # the accepted request, the submitting marker, a running solver, and no native id.
        site_config = load_site_config(str(config))
        request = JobRequest.from_message(
            {"job_id": job_id, "command": "count", "params": {"seconds": "2"}}
        )
        command, values = site_config.check_request(request)
        wd = WorkDir(site_config.work_base, job_id)
        wd.create()
        wd.write_json(BROKER_FILE, {"job_id": job_id, "broker": broker.url, "agent_id": "gone"})
        job = accepted_job.AcceptedJob(request, command, values, wd)
        accepted_job.save_accepted(job)
        wd.write_json("inputs.json", {})
        with wd.locked():
            job_start.start(job, site_config.scheduler(command))
        os.unlink(wd.control_file("native_id"))
        wait_until(lambda: site.counted(), "the solver to start")
        solver = site.counted()[0][1]

        agent = start_agent(config)
        out, err = client.communicate(timeout=90)
    finally:
        if client.poll() is None:
            client.kill()
        stopped = agent.stop() if agent is not None else 0
    assert client.returncode == 0, err.decode()
    assert site.counted() == [(job_id, solver)], "the agent must follow it, not start it again"
    assert (module / "done.txt").read_text() == "done\n"
    assert out.decode().splitlines() == [f"counted {job_id}", "working 0", "working 1"]
    assert stopped == 0
    assert wd.native_id() is not None


def _exists(api: ClientApi, job_id: str) -> bool:
    try:
        api.job(job_id)
    except requests.HTTPError:
        return False
    return True
