"""The pull path as MInt modules use it: the mi-system-wf drop-in and the sample module,
through a real broker (gunicorn, TLS) and a real site agent."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from bridge.client.node_config import EXAMPLES_DIR
from tests.integration.test_sample_workflow import expected_amplitude, mint_module_dir
from tests.support.broker import BrokerProcess
from tests.support.pull import PROGRAMS, Site, make_site, start_agent
from tests.support.site_toml import write_site_toml

DROP_IN = EXAMPLES_DIR / "compat" / "mi-system-wf.py"
SAMPLE = EXAMPLES_DIR / "kousoku"


def site_config(site: Site) -> Path:
    return write_site_toml(
        site.root / "site.toml",
        site={"name": site.name, "work_base": site.work_base, "log_file": site.root / "site.log"},
        agent={
            "url": site.broker.url,
            "ca_bundle": site.broker.ca_bundle,
            "token_file": site.token_file,
            "agent_id": "compat-agent",
        },
        commands={
            "execute_remote-side_program_ssh.sh": {
                "program": PROGRAMS / "execute_remote-side_program_ssh.sh",
                "log_file": "remote_program_exec.log",
            },
            "fail": {
                "program": PROGRAMS / "testprog.py",
                "args": ["exit", "{code}"],
                "params": {"code": {"type": "int", "default": 3}},
            },
            "fatigue": {
                "program": SAMPLE / "solver.py",
                "args": ["--model", SAMPLE / "private" / "Modeldata.inp", "--cycles", "{cycles}"],
                "inputs": ["yield_strength.dat", "tensile_strength.dat", "reduction_area.dat"],
                "exclude": ["*.inp"],
                "params": {"cycles": {"type": "int", "default": 100000}},
            },
        },
    )


@pytest.fixture(scope="module")
def compat_site(broker: BrokerProcess, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    site = make_site(broker, tmp_path_factory.mktemp("compat") / "site", "compat-site")
    agent = start_agent(site_config(site))
    yield site
    assert agent.stop() == 0, agent.text()


@pytest.fixture(scope="module")
def client_token(broker: BrokerProcess) -> str:
    return broker.token("client", "ssh-node01")


def wf(
    broker: BrokerProcess, cwd: Path, *args: str, token: str = "-", env_token: str = ""
) -> subprocess.CompletedProcess[bytes]:
    env = dict(os.environ, REQUESTS_CA_BUNDLE=str(broker.ca_bundle), MINT_BRIDGE_TOKEN=env_token)
    return subprocess.run(
        [sys.executable, str(DROP_IN), broker.url, "compat-site", token, *args],
        cwd=cwd, env=env, capture_output=True, timeout=120,
    )  # fmt: skip


def test_mi_system_wf_drop_in(
    broker: BrokerProcess, compat_site: Site, client_token: str, tmp_path: Path
) -> None:
    (tmp_path / "a.dat").write_text("A\n")
    (tmp_path / "b.dat").write_text("B\n")
    proc = wf(broker, tmp_path, "/home/site/execute_remote-side_program_ssh.sh", "a.dat:b.dat",
              "listing.txt:remote_program_exec.log", env_token=client_token)  # fmt: skip
    assert proc.returncode == 0, proc.stderr.decode()
    assert (tmp_path / "listing.txt").read_text() == "a.dat\nb.dat\n"
    assert "legacy script done" in (tmp_path / "remote_program_exec.log").read_text()
    stdout_file = (tmp_path / "計算標準出力.txt").read_bytes()
    assert stdout_file.endswith(b"legacy script done\n\n\n")  # as the original: output + "\n\n"
    assert (tmp_path / "計算標準エラー出力.txt").read_bytes() == b"\n\n"


def test_mi_system_wf_abnormal_and_missing_outputs(
    broker: BrokerProcess, compat_site: Site, client_token: str, tmp_path: Path
) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(client_token)
    failed = wf(broker, tmp_path, "fail", "", "out.dat", "code=4", token=f"@{token_file}")
    assert failed.returncode == 1
    assert b"failure detail" in (tmp_path / "計算標準エラー出力.txt").read_bytes()
    missing = wf(broker, tmp_path, "fail", "", "out.dat", "code=0", token=f"@{token_file}")
    assert missing.returncode == 1
    assert b"declared outputs missing: out.dat" in missing.stderr


def test_mi_system_wf_refuses_bad_params_and_names(
    broker: BrokerProcess, compat_site: Site, client_token: str, tmp_path: Path
) -> None:
    bad_param = wf(broker, tmp_path, "fail", "", "", "p1 p2", env_token=client_token)
    assert bad_param.returncode == 1
    assert b"parameter 'p1' must be name=value" in bad_param.stderr
    escape = wf(broker, tmp_path, "fail", "", "../escape.txt", "code=0", env_token=client_token)
    assert escape.returncode == 1
    assert not (tmp_path.parent / "escape.txt").exists()


def test_sample_module_over_the_broker(
    broker: BrokerProcess, compat_site: Site, client_token: str, tmp_path: Path
) -> None:
    module = mint_module_dir(tmp_path)
    token_file = tmp_path / "client.token"
    token_file.write_text(client_token + "\n")
    token_file.chmod(0o600)
    config = tmp_path / "bridge.toml"
    config.write_text(
        f'[sites.rme]\nmethod = "broker"\nurl = "{broker.url}"\nca_bundle = "{broker.ca_bundle}"\n'
        f'token_file = "{token_file}"\nbroker_site = "compat-site"\n'
    )
    env = dict(os.environ, MINT_BRIDGE_CONFIG=str(config), MINT_BRIDGE_SITE="rme",
               MINT_BRIDGE=str(Path(sys.executable).parent / "mint-bridge"))  # fmt: skip
    argv = [str(SAMPLE / "module" / "kousoku_fatigue.sh"), "--yield_strength", "in_ys",
            "--tensile_strength", "in_ts", "--reduction_area", "in_ra", "--cycles", "20000",
            "--fatigue_result", "out_result"]  # fmt: skip
    proc = subprocess.run(argv, cwd=module, env=env, capture_output=True, timeout=120)
    assert proc.returncode == 0, proc.stderr.decode()
    result = dict(line.split() for line in (module / "out_result").read_text().splitlines())
    assert (
        abs(float(result["strain_amplitude"]) / expected_amplitude(1150.0, 0.52, 20000) - 1) < 1e-5
    )
    for path in module.rglob("*"):
        if path.is_file():
            assert b"CONFIDENTIAL-MODEL-MARKER" not in path.read_bytes()
