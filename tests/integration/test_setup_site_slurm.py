"""`setup site` against the real Slurm fixture: a cluster that answers is chosen, one that
does not answer (the same commands, a controller that is not there) is not."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bridge.site.config import load_site_config
from node_setup import scheduler_check
from node_setup.prompt import Unattended
from node_setup.site_layout import SiteOptions
from node_setup.site_setup import setup_site
from tests.integration.slurm_fixtures import SlurmCluster, slurm  # noqa: F401  (the fixture)
from tests.unit.node_setup.test_authorized_keys import PUB
from tests.unit.node_setup.test_site_setup import MINT_BRIDGE


def options(home: Path, key: Path) -> SiteOptions:
    return SiteOptions(
        site_id="cluster-site", mint_ip="192.0.2.10", mint_key=str(key),
        work_base=str(home / "work"), mint_bridge=MINT_BRIDGE, unit_dir=str(home / "units"),
    )  # fmt: skip


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    (tmp_path / "mint.pub").write_text(PUB)
    return home


def test_a_slurm_that_answers_is_chosen(
    slurm: SlurmCluster, home: Path, monkeypatch: pytest.MonkeyPatch  # noqa: F811
) -> None:
    monkeypatch.setenv("SLURM_CONF", slurm.env["SLURM_CONF"])
    prompter = Unattended(echo=False)
    assert setup_site(options(home, home.parent / "mint.pub"), prompter).applied
    config = load_site_config(str(home / ".config/mint-bridge/site.toml"))
    assert config.commands["example"].scheduler == "slurm"
    assert not [line for line in prompter.lines if "not chosen" in line]


def test_slurm_commands_without_a_controller_give_local(
    slurm: SlurmCluster, home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch  # noqa: F811
) -> None:
    # The real sinfo, pointed at a copy of the cluster's config whose controller port is shut.
    conf = Path(slurm.env["SLURM_CONF"]).read_text()
    dead = tmp_path / "slurm.conf"
    lines = [
        "SlurmctldPort=9" if line.startswith("SlurmctldPort") else line
        for line in conf.splitlines()
    ]
    dead.write_text("\n".join(lines) + "\n")
    monkeypatch.setenv("SLURM_CONF", str(dead))
    result = scheduler_check.check("slurm", env=os.environ)
    assert not result.answers
    assert result.reason.startswith(
        "sbatch is on PATH but slurmctld does not answer: `sinfo -h -o %P`"
    )
    prompter = Unattended(echo=False)
    assert setup_site(options(home, home.parent / "mint.pub"), prompter).applied
    config = load_site_config(str(home / ".config/mint-bridge/site.toml"))
    assert config.commands["example"].scheduler == "local"
    assert f"scheduler slurm not chosen: {result.reason}" in prompter.lines
