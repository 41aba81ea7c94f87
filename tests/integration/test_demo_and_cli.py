"""The README's demo, the example configs, and `mint-bridge site cleanup`, as a user runs them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bridge.client.node_config import EXAMPLES_DIR, load_bridge_config
from bridge.site.config import load_site_config

MINT_BRIDGE = [sys.executable, "-m", "bridge.cli"]


@pytest.mark.parametrize("path", ["local", "broker"])
def test_demo_runs_the_sample_end_to_end(tmp_path: Path, path: str) -> None:
    proc = subprocess.run(
        [*MINT_BRIDGE, "demo", "-o", str(tmp_path), "--path", path],
        capture_output=True,
        timeout=180,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr.decode()
    module = tmp_path / path
    assert b"solver: strain amplitude for 1000 cycles" in proc.stdout
    assert f"results in {module}".encode() in proc.stderr
    curve = (module / "sscurve.csv").read_text().splitlines()
    assert curve[0] == "strain,stress_MPa" and len(curve) == 52
    strains = [float(line.split(",")[0]) for line in curve[1:]]
    assert strains == sorted(strains) and strains[0] == 0.0
    result = dict(line.split() for line in (module / "fatigue_result.txt").read_text().splitlines())
    assert result["cycles_to_failure"] == "1000"
    assert 1e-3 < float(result["strain_amplitude"]) < 5e-2
    # The input deck embeds the site's private model: it must stay at the site.
    assert not (module / "input_deck.inp").exists()
    for path in module.iterdir():
        assert b"CONFIDENTIAL-MODEL-MARKER" not in path.read_bytes()


def test_example_configs_load() -> None:
    site = load_site_config(str(EXAMPLES_DIR / "site.toml"))
    assert set(site.commands) == {"fatigue", "fatigue-cluster", "abaqus"}
    assert site.commands["fatigue-cluster"].scheduler == "slurm"
    assert site.commands["abaqus"].log_file == "remote_program_exec.log"
    assert site.max_input_bytes == 100 * 1024**3
    fatigue = site.commands["fatigue"]
    argv = fatigue.argv(fatigue.resolve_params({"cycles": "10"}), "JOB", "/w")
    assert argv == [
        str(EXAMPLES_DIR / "kousoku" / "solver.py"),
        "--model",
        f"{EXAMPLES_DIR}/kousoku/private/Modeldata.inp",
        "--cycles",
        "10",
    ]
    bridge = load_bridge_config(str(EXAMPLES_DIR / "bridge.toml"))
    assert set(bridge.sites) == {"rme-u-tokyo", "rme-u-tokyo-openssh", "local"}
    assert bridge.sites["local"].method == "local"
    assert load_site_config(bridge.sites["local"].site_config).commands["fatigue"]  # type: ignore[union-attr]


def test_cleanup_removes_only_expired_job_dirs(tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    config = tmp_path / "site.toml"
    config.write_text(f'[site]\nwork_base = "{work}"\nretention = "1h"\n')
    old, fresh = "11111111-1111-4111-8111-111111111111", "22222222-2222-4222-8222-222222222222"
    for job in (old, fresh):
        (work / job / ".mint-bridge").mkdir(parents=True)
        (work / job / ".mint-bridge" / "exit.json").write_text(json.dumps({"state": "completed"}))
    two_hours_ago = time.time() - 7200
    os.utime(work / old / ".mint-bridge" / "exit.json", (two_hours_ago, two_hours_ago))
    (work / "not-a-job").mkdir()
    dry = subprocess.run([*MINT_BRIDGE, "site", "cleanup", "--config", str(config), "--dry-run"],
                         capture_output=True, text=True, timeout=60)  # fmt: skip
    assert dry.returncode == 0 and f"would remove {work / old}" in dry.stdout
    assert (work / old).exists()
    real = subprocess.run([*MINT_BRIDGE, "site", "cleanup", "--config", str(config)],
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert real.returncode == 0 and "1 work dir(s) removed" in real.stdout
    assert sorted(os.listdir(work)) == [fresh, "not-a-job"]


def test_bad_site_config_is_reported_by_name(tmp_path: Path) -> None:
    config = tmp_path / "site.toml"
    config.write_text('[commands.x]\nprogram = "/bin/true"\nwaltime = "1h"\n')
    proc = subprocess.run([*MINT_BRIDGE, "site", "cleanup", "--config", str(config)],
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert proc.returncode == 78
    assert f"{config}: commands.x: unknown key 'waltime'" in proc.stderr
