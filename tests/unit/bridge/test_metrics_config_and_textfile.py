"""The agent's and the bridge node's metrics: config keys, and the node's textfile under
concurrent runs (real processes, one lock file, one atomic rename per update)."""

from __future__ import annotations

import multiprocessing
import textwrap
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from bridge.client import node_metrics
from bridge.client.node_config import load_bridge_config
from bridge.core.errors import ConfigError
from bridge.site.agent_metrics import AgentMetrics
from bridge.site.config import load_site_config


def site_toml(tmp_path: Path, agent_extra: str) -> str:
    path = tmp_path / "site.toml"
    path.write_text(textwrap.dedent(f"""
        [site]
        name = "m"
        work_base = "{tmp_path / 'work'}"
        [agent]
        url = "https://broker.example.org"
        token_file = "agent.token"
        {agent_extra}
        [commands.echo]
        program = "/bin/echo"
        """))  # fmt: skip
    return str(path)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("127.0.0.1:9464", ("127.0.0.1", 9464)),
        ("9464", ("127.0.0.1", 9464)),  # a bare port is loopback
        ("[::1]:9100", ("::1", 9100)),
        ("0.0.0.0:9464", ("0.0.0.0", 9464)),
    ],
)
def test_metrics_listen_accepted(tmp_path: Path, value: str, expected: tuple[str, int]) -> None:
    agent = load_site_config(site_toml(tmp_path, f'metrics_listen = "{value}"')).agent
    assert agent is not None and agent.metrics_listen == expected


@pytest.mark.parametrize(
    ("value", "words"),
    [
        ("localhost:9464", "not an address and port"),
        ("127.0.0.1:http", "not an address and port"),
        ("127.0.0.1:70000", "port 70000 is not 1-65535"),
        ("127.0.0.1:0", "port 0 is not 1-65535"),
    ],
)
def test_metrics_listen_refused_naming_the_key(tmp_path: Path, value: str, words: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_site_config(site_toml(tmp_path, f'metrics_listen = "{value}"'))
    message = str(caught.value)
    assert "agent.metrics_listen" in message and words in message
    assert '"127.0.0.1:9464"' in message  # the fix, as it is written in the file


def test_metrics_keys_default_off_and_textfile_relative(tmp_path: Path) -> None:
    agent = load_site_config(site_toml(tmp_path, "")).agent
    assert agent is not None and agent.metrics_listen is None and agent.metrics_textfile is None
    agent = load_site_config(site_toml(tmp_path, 'metrics_textfile = "m/agent.prom"')).agent
    assert agent is not None and agent.metrics_textfile == str(tmp_path / "m" / "agent.prom")


def test_textfile_without_prom_suffix_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"agent\.metrics_textfile.*must end in '\.prom'"):
        load_site_config(site_toml(tmp_path, 'metrics_textfile = "/var/lib/agent.txt"'))
    bridge = tmp_path / "bridge.toml"
    bridge.write_text('[bridge]\nmetrics_textfile = "node.txt"\n')
    with pytest.raises(ConfigError, match=r"bridge\.metrics_textfile.*must end in '\.prom'"):
        load_bridge_config(str(bridge))
    bridge.write_text('[bridge]\nmetrics_textfile = "node.prom"\n')
    assert load_bridge_config(str(bridge)).metrics_textfile == str(tmp_path / "node.prom")


def test_agent_command_labels_stay_bounded() -> None:
    metrics = AgentMetrics("m", "a1", ["echo"])
    metrics.job_ended("echo", {"state": "completed", "exit_code": 0})
    metrics.job_ended("echo", {"state": "failed", "exit_code": 3})
    metrics.job_ended("echo", {"state": "rejected", "exit_code": None})
    # A name the site does not offer, and a state we do not know: bounded labels still.
    metrics.job_ended("../../etc/passwd", {"state": "completed", "exit_code": 0})
    metrics.job_ended(None, {"state": "a b{c}"})
    samples = {
        (s.labels["command"], s.labels["outcome"]): s.value
        for f in text_string_to_metric_families(_exposition(metrics))
        for s in f.samples
        if s.name == "mint_bridge_agent_jobs_total"
    }
    assert samples == {
        ("echo", "completed"): 1,
        ("echo", "failed"): 1,
        ("echo", "rejected"): 1,
        ("other", "completed"): 1,
        ("other", "unknown"): 1,
    }


def _exposition(metrics: AgentMetrics) -> str:
    from prometheus_client import generate_latest

    return generate_latest(metrics.registry).decode()


# --- the bridge node's textfile -----------------------------------------------------------


def figures(site: str, code: int = 0, n: int = 1) -> node_metrics.RunFigures:
    return node_metrics.RunFigures(site, code, 100 * n, 7 * n, 1_700_000_000.0 + n, 0.5 * n)


def values(path: Path) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for f in text_string_to_metric_families(path.read_text())
        for s in f.samples
    }


def test_textfile_adds_runs_up(tmp_path: Path) -> None:
    path = tmp_path / "node.prom"
    node_metrics.record_run(str(path), figures("a", 0, 1))
    node_metrics.record_run(str(path), figures("a", 5, 2))
    node_metrics.record_run(str(path), figures("b", 0, 3))
    got = values(path)
    assert got[("mint_bridge_node_jobs_total", (("exit_code", "0"), ("site", "a")))] == 1
    assert got[("mint_bridge_node_jobs_total", (("exit_code", "5"), ("site", "a")))] == 1
    assert got[("mint_bridge_node_jobs_total", (("exit_code", "0"), ("site", "b")))] == 1
    in_a = ("mint_bridge_node_staged_bytes_total", (("direction", "in"), ("site", "a")))
    assert got[in_a] == 300
    assert got[("mint_bridge_node_last_run_duration_seconds", (("site", "a"),))] == 1.0
    assert got[("mint_bridge_node_last_run_timestamp_seconds", (("site", "b"),))] == 1.7e9 + 3
    assert not list(tmp_path.glob("node.prom.*[0-9]"))  # no temporary file left behind


def test_damaged_textfile_starts_anew(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "node.prom"
    path.write_text("this is { not prometheus\n")
    node_metrics.record_run(str(path), figures("a"))
    assert values(path)[("mint_bridge_node_jobs_total", (("exit_code", "0"), ("site", "a")))] == 1
    assert "is not Prometheus text" in caplog.text


def test_unwritable_dir_is_a_warning_not_an_error(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    node_metrics.record_run(str(tmp_path / "missing" / "node.prom"), figures("a"))
    assert "not updated" in caplog.text and "metrics_textfile" in caplog.text


def _runs(path: str, site: str, count: int) -> None:
    for i in range(count):
        node_metrics.record_run(path, figures(site, i % 2, 1))


def test_parallel_processes_lose_no_update(tmp_path: Path) -> None:
    path = str(tmp_path / "node.prom")
    ctx = multiprocessing.get_context("spawn")  # fresh interpreters, as separate runs are
    procs = [ctx.Process(target=_runs, args=(path, f"s{i % 2}", 25)) for i in range(6)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(120)
        assert proc.exitcode == 0
    got = values(tmp_path / "node.prom")
    jobs = sum(v for (name, _), v in got.items() if name == "mint_bridge_node_jobs_total")
    assert jobs == 150
    in_s0 = ("mint_bridge_node_staged_bytes_total", (("direction", "in"), ("site", "s0")))
    assert got[in_s0] == 75 * 100
