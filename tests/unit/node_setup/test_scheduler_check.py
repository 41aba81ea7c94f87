"""`setup site` picks only a scheduler whose status command answers, and says why not."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bridge.site.config import load_site_config
from node_setup import scheduler_check
from node_setup.prompt import Unattended
from node_setup.site_layout import SiteOptions
from node_setup.site_setup import setup_site
from tests.unit.node_setup.test_authorized_keys import PUB
from tests.unit.node_setup.test_site_setup import MINT_BRIDGE

SINFO_DOWN = (
    "#!/bin/sh\n"
    "echo 'slurm_load_partitions: Unable to contact slurm controller (connect failure)' >&2\n"
    "exit 1\n"
)


def commands(directory: Path, **scripts: str) -> str:
    """A PATH of just these shell scripts (name -> body after the #! line)."""
    directory.mkdir(exist_ok=True)
    for name, body in scripts.items():
        path = directory / name
        path.write_text(body if body.startswith("#!") else "#!/bin/sh\n" + body)
        path.chmod(0o755)
    return str(directory)


def test_a_sinfo_that_fails_is_not_chosen_and_the_reason_is_its_message(tmp_path: Path) -> None:
    path = commands(tmp_path / "bin", sbatch="exit 0\n", sinfo=SINFO_DOWN)
    result = scheduler_check.check("slurm", path=path)
    assert not result.answers
    assert result.reason == (
        "sbatch is on PATH but slurmctld does not answer: `sinfo -h -o %P` exited 1: "
        "slurm_load_partitions: Unable to contact slurm controller (connect failure)"
    )


def test_a_sinfo_that_answers_is_chosen(tmp_path: Path) -> None:
    path = commands(tmp_path / "bin", sbatch="exit 0\n", sinfo="echo debug\n")
    assert scheduler_check.check("slurm", path=path) == scheduler_check.SchedulerCheck(
        "slurm", True
    )


def test_a_status_command_that_hangs_is_cut_off(tmp_path: Path) -> None:
    path = commands(tmp_path / "bin", qsub="exit 0\n", qstat="exec /bin/sleep 30\n")
    result = scheduler_check.check("pbspro", path=path, timeout=0.5)
    assert not result.answers
    assert result.reason == (
        "qsub is on PATH but the PBS server does not answer: `qstat -B` did not answer "
        "within 0.5 s"
    )


def test_torque_and_pbspro_share_one_question(tmp_path: Path) -> None:
    count = tmp_path / "count"
    path = commands(tmp_path / "bin", qsub="exit 0\n", qstat=f"echo x >> {count}\nexit 0\n")
    checks = scheduler_check.check_all(("torque", "pbspro"), path=path)
    assert [(c.name, c.answers) for c in checks] == [("torque", True), ("pbspro", True)]
    assert count.read_text() == "x\n"


def test_setup_site_falls_back_to_local_and_says_why(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    fake = commands(tmp_path / "bin", sbatch="exit 0\n", sinfo=SINFO_DOWN)
    monkeypatch.setenv("PATH", fake + os.pathsep + "/usr/bin:/bin")
    monkeypatch.delenv("SLURM_CONF", raising=False)
    key = tmp_path / "mint.pub"
    key.write_text(PUB)
    options = SiteOptions(
        site_id="s1", mint_ip="192.0.2.10", mint_key=str(key), work_base=str(home / "work"),
        mint_bridge=MINT_BRIDGE, unit_dir=str(home / "units"),
    )  # fmt: skip
    prompter = Unattended(echo=False)
    result = setup_site(options, prompter)
    assert result.applied
    config = load_site_config(str(home / ".config/mint-bridge/site.toml"))
    assert config.commands["example"].scheduler == "local"
    assert (
        "scheduler slurm not chosen: sbatch is on PATH but slurmctld does not answer: "
        "`sinfo -h -o %P` exited 1: slurm_load_partitions: Unable to contact slurm controller "
        "(connect failure)"
    ) in prompter.lines
    assert any(line.startswith("scheduler: local (no scheduler") for line in prompter.lines)
