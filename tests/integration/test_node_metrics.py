"""Metrics of the site agent and the bridge node, from real processes.

A real agent (``python -m bridge.site.agent``) against the real broker under gunicorn with TLS
serves ``metrics_listen`` and writes ``metrics_textfile``; real ``mint-bridge run`` processes
put jobs through it. Then the endpoint is scraped and the textfile read, both parsed with
``prometheus_client.parser``, and the values compared with what the jobs did. Separately,
parallel ``mint-bridge run`` processes over the ``local`` method update one bridge-node
textfile, and every run is counted.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from bridge import __version__
from tests.integration.conftest import SiteEnv
from tests.support.broker import BrokerProcess
from tests.support.net import free_port
from tests.support.pull import (
    PROGRAMS,
    Agent,
    Site,
    bridge_config,
    make_site,
    run_job,
    start_agent,
    wait_until,
)
from tests.support.site_toml import write_site_toml

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse(text: str) -> Samples:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def agent_config(site: Site, port: int, textfile: Path, agent_id: str = "metrics-agent") -> Path:
    prog = PROGRAMS / "testprog.py"
    return write_site_toml(
        site.root / "agent.toml",
        site={"name": site.name, "work_base": site.work_base, "log_file": site.root / "site.log"},
        agent={
            "url": site.broker.url,
            "ca_bundle": site.broker.ca_bundle,
            "token_file": site.token_file,
            "agent_id": agent_id,
            "lease_renew": "3s",
            "metrics_listen": f"127.0.0.1:{port}",
            "metrics_textfile": textfile,
        },
        commands={
            "checksum": {"program": prog, "args": ["checksum"]},
            "fail": {
                "program": prog,
                "args": ["exit", "{code}"],
                "params": {"code": {"type": "int", "default": 3}},
            },
        },
    )


class Scraped:
    def __init__(self, port: int, textfile: Path, agent: Agent) -> None:
        self.url = f"http://127.0.0.1:{port}/metrics"
        self.textfile = textfile
        self.agent = agent

    def scrape(self) -> Samples:
        http = requests.Session()
        http.trust_env = False  # no proxy from the environment for a loopback address
        answer = http.get(self.url, timeout=10)
        answer.raise_for_status()
        assert answer.headers["Content-Type"].startswith("text/plain")
        return parse(answer.text)


@pytest.fixture(scope="module")
def metrics_agent(
    broker: BrokerProcess, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Scraped]:
    site = make_site(broker, tmp_path_factory.mktemp("metrics") / "site", "pull-metrics")
    port, textfile = free_port(), site.root / "textfile" / "mint-bridge-agent.prom"
    textfile.parent.mkdir()
    agent = start_agent(agent_config(site, port, textfile))
    scraped = Scraped(port, textfile, agent)

    def answers() -> bool:
        assert agent.proc.poll() is None, agent.text()
        try:
            return bool(scraped.scrape())
        except requests.ConnectionError:
            return False

    wait_until(answers, "the agent's metrics endpoint")
    yield scraped
    assert agent.stop() == 0, agent.text()


def bridge_toml_for(
    broker: BrokerProcess, root: Path, textfile: Path | None = None
) -> Path:  # fmt: skip
    token = root / "client.token"
    token.write_text(broker.token("client", "node-metrics") + "\n")
    token.chmod(0o600)
    path = bridge_config(root / "bridge.toml", broker.url, broker.ca_bundle, token,
                         ["pull-metrics"])  # fmt: skip
    if textfile is not None:
        path.write_text(f'[bridge]\nmetrics_textfile = "{textfile}"\n' + path.read_text())
    return path


def test_agent_metrics_after_real_jobs(
    metrics_agent: Scraped, broker: BrokerProcess, tmp_path: Path
) -> None:
    before = metrics_agent.scrape()
    labels = (("agent_id", "metrics-agent"), ("site", "pull-metrics"), ("version", __version__))
    info = ("mint_bridge_agent_build_info", labels)
    assert before[info] == 1
    node_textfile = tmp_path / "node.prom"
    config = bridge_toml_for(broker, tmp_path, node_textfile)
    module = tmp_path / "module"
    module.mkdir()
    blob = os.urandom(200_000)
    (module / "in.bin").write_bytes(blob)
    started = time.time()
    code, _, err = run_job(config, "--site", "pull-metrics", "--command", "checksum",
                           "-i", "in.bin", "-o", "out", cwd=module)  # fmt: skip
    assert code == 0, err
    code, _, err = run_job(config, "--site", "pull-metrics", "--command", "fail",
                           "-p", "code=4", "-o", "out2", cwd=module)  # fmt: skip
    assert code == 4, err
    out_bytes = sum(p.stat().st_size for p in (module / "out").rglob("*") if p.is_file())

    def counted() -> bool:  # the agent counts a job once the broker took its completion
        got = metrics_agent.scrape()
        return got.get(("mint_bridge_agent_jobs_total", (("command", "fail"),
                                                         ("outcome", "failed")))) == 1  # fmt: skip

    wait_until(counted, "the agent to count the failed job")
    got = metrics_agent.scrape()
    ok = ("mint_bridge_agent_jobs_total", (("command", "checksum"), ("outcome", "completed")))
    assert got.get(ok) == 1, sorted(k for k in got if "jobs_total" in k[0])
    staged_in = ("mint_bridge_agent_staged_bytes_total", (("direction", "in"),))
    staged_out = ("mint_bridge_agent_staged_bytes_total", (("direction", "out"),))
    assert got[staged_in] - before.get(staged_in, 0) == len(blob)
    assert got[staged_out] - before.get(staged_out, 0) == out_bytes > 0
    assert got[("mint_bridge_agent_running_jobs", ())] == 0
    assert got[("mint_bridge_agent_claim_wait_seconds_count", ())] >= 2
    assert got[("mint_bridge_agent_last_poll_success_timestamp_seconds", ())] >= started
    # The bridge node's own textfile, from the same two runs.
    node = parse(node_textfile.read_text())
    jobs = "mint_bridge_node_jobs_total"
    assert node[(jobs, (("exit_code", "0"), ("site", "pull-metrics")))] == 1
    assert node[(jobs, (("exit_code", "4"), ("site", "pull-metrics")))] == 1
    site = ("site", "pull-metrics")
    node_in = ("mint_bridge_node_staged_bytes_total", (("direction", "in"), site))
    node_out = ("mint_bridge_node_staged_bytes_total", (("direction", "out"), site))
    assert node[node_in] == len(blob) and node[node_out] == out_bytes
    assert node[("mint_bridge_node_last_run_timestamp_seconds", (site,))] >= started
    assert node[("mint_bridge_node_last_run_duration_seconds", (site,))] > 0


def test_agent_textfile_written_and_final_on_stop(broker: BrokerProcess, tmp_path: Path) -> None:
    site = make_site(broker, tmp_path / "tf", "pull-metrics-textfile")
    textfile = tmp_path / "textfile" / "agent.prom"
    textfile.parent.mkdir()
    config = agent_config(site, free_port(), textfile, "textfile-agent")
    agent = start_agent(config)
    try:
        wait_until(textfile.exists, "the agent's first textfile", limit=30)
        first = parse(textfile.read_text())
        assert first[("mint_bridge_agent_running_jobs", ())] == 0
        token = _client_token(broker, tmp_path)
        bridge = bridge_config(tmp_path / "bridge.toml", broker.url, broker.ca_bundle, token,
                               ["pull-metrics-textfile"])  # fmt: skip
        code, _, err = run_job(bridge, "--site", "pull-metrics-textfile", "--command", "fail",
                               "-p", "code=5", "-o", "out", cwd=tmp_path)  # fmt: skip
        assert code == 5, err
    finally:
        assert agent.stop() == 0, agent.text()
    # The stop writes the file once more: the job that just ended is in it.
    got = parse(textfile.read_text())
    failed = ("mint_bridge_agent_jobs_total", (("command", "fail"), ("outcome", "failed")))
    assert got.get(failed) == 1, agent.text()
    assert failed not in first
    # Written through a temporary file and a rename: none is left next to it.
    assert [p.name for p in textfile.parent.iterdir()] == [textfile.name]


def _client_token(broker: BrokerProcess, root: Path) -> Path:
    token = root / "client.token"
    token.write_text(broker.token("client", "node-metrics") + "\n")
    token.chmod(0o600)
    return token


def test_agent_metrics_port_in_use_is_named(broker: BrokerProcess, tmp_path: Path) -> None:
    site = make_site(broker, tmp_path / "busy", "pull-metrics-busy")
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        config = agent_config(site, port, tmp_path / "busy.prom")
        done = subprocess.run([sys.executable, "-m", "bridge.site.agent", str(config)],
                              capture_output=True, text=True, timeout=60)  # fmt: skip
    assert done.returncode != 0
    assert f"metrics_listen: cannot listen on 127.0.0.1:{port}" in done.stderr
    assert "choose a free port or remove the key" in done.stderr


def test_parallel_local_runs_all_counted(site_env: SiteEnv, tmp_path: Path) -> None:
    textfile = tmp_path / "node.prom"
    config = tmp_path / "bridge.toml"
    config.write_text(f"""
[bridge]
metrics_textfile = "{textfile}"

[sites.local]
method = "local"
site_config = "{site_env.site_config}"
""")
    module = tmp_path / "module"
    module.mkdir()
    (module / "data.txt").write_bytes(b"x" * 1000)

    def one(i: int) -> int:
        command = ["--command", "checksum", "-i", "data.txt"] if i % 2 == 0 else [
            "--command", "fail", "-p", "code=2"]  # fmt: skip
        done = subprocess.run(
            [sys.executable, "-m", "bridge.cli", "run", "--config", str(config),
             "--site", "local", *command, "-o", f"out{i}"],
            cwd=module, capture_output=True, timeout=120,
        )  # fmt: skip
        return done.returncode

    with ThreadPoolExecutor(max_workers=6) as pool:
        codes = list(pool.map(one, range(12)))
    assert sorted(codes) == [0] * 6 + [2] * 6
    got = parse(textfile.read_text())
    assert got[("mint_bridge_node_jobs_total", (("exit_code", "0"), ("site", "local")))] == 6
    assert got[("mint_bridge_node_jobs_total", (("exit_code", "2"), ("site", "local")))] == 6
    staged_in = ("mint_bridge_node_staged_bytes_total", (("direction", "in"), ("site", "local")))
    assert got[staged_in] == 6 * 1000


def test_broker_reports_its_certificate_expiry(broker: BrokerProcess) -> None:
    from cryptography import x509

    cert = x509.load_pem_x509_certificate((broker.root / "server.pem").read_bytes())
    token = broker.token("operator", "metrics-test")
    http = requests.Session()
    http.trust_env = False
    answer = http.get(f"{broker.url}/metrics", headers={"Authorization": f"Bearer {token}"},
                      verify=str(broker.ca_bundle), timeout=10)  # fmt: skip
    assert answer.status_code == 200, answer.text
    got = parse(answer.text)
    expires = got[("mint_bridge_broker_tls_cert_not_after_timestamp_seconds", ())]
    assert expires == cert.not_valid_after_utc.timestamp()
    assert time.time() < expires < time.time() + 2 * 86400  # the fixture's 1-day certificate
