"""The cleanup timer and service `setup site` writes, and the broker's unit: content and
`systemd-analyze verify`."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

from node_setup import broker_unit, cleanup_timer, systemd
from node_setup.prompt import Unattended
from node_setup.site_setup import setup_site
from tests.unit.node_setup.test_site_setup import MINT_BRIDGE, home, mint_key, ssh_options

__all__ = ["home", "mint_key"]  # the fixtures, used by name

MB = str(Path(sys.executable).parent / "mint-bridge")


def needs_analyze() -> None:
    if not shutil.which("systemd-analyze"):
        pytest.skip("systemd-analyze is not installed; the units' content is tested above")


def test_ssh_site_gets_a_cleanup_timer_and_the_notes_say_how_to_start_it(
    home: Path, mint_key: Path
) -> None:
    out = Unattended(echo=False)
    result = setup_site(ssh_options(home, mint_key), out)
    service = (home / "units" / cleanup_timer.SERVICE_NAME).read_text()
    timer = (home / "units" / cleanup_timer.TIMER_NAME).read_text()
    config = home / ".config/mint-bridge/site.toml"
    assert f"ExecStart={MINT_BRIDGE} site cleanup --config {config}\n" in service
    assert "Type=oneshot\n" in service
    assert f"ReadWritePaths={home / 'work'} {home / '.local/state/mint-bridge'}\n" in service
    assert "OnCalendar=hourly\n" in timer and "Persistent=true\n" in timer
    assert "WantedBy=timers.target\n" in timer
    notes = "\n".join(result.notes)
    assert (
        f"install -m 0644 {home / 'units' / cleanup_timer.SERVICE_NAME} "
        f"{home / 'units' / cleanup_timer.TIMER_NAME} /etc/systemd/system/ && systemctl "
        f"daemon-reload && systemctl enable --now {cleanup_timer.TIMER_NAME}"
    ) in notes
    assert "`userdel` leaves the work dirs in" in notes
    if shutil.which("systemd-analyze"):
        assert (
            f"systemd-analyze verify: {cleanup_timer.SERVICE_NAME}, {cleanup_timer.TIMER_NAME} "
            "valid"
        ) in out.lines


def test_cleanup_units_verify() -> None:
    needs_analyze()
    units = cleanup_timer.CleanupUnits("s", [MB, "site", "cleanup", "--config", "/srv/a b.toml"],
                                       "root", ["/tmp", "/srv/state"])  # fmt: skip
    outcome = systemd.verify_texts(
        {cleanup_timer.SERVICE_NAME: units.service(), cleanup_timer.TIMER_NAME: units.timer()}
    )
    assert outcome is not None and outcome.ok, outcome.problems


def test_broker_unit_kills_the_whole_control_group_and_verifies() -> None:
    unit = broker_unit.BrokerUnit(
        [MB, "broker", "serve", "--config", "/etc/mint-bridge/broker.toml"],
        "root",
        ["/var/lib/mint-broker"],
    ).render()
    assert "\nKillMode=control-group\n" in unit
    assert "\nExecReload=/bin/kill -HUP $MAINPID\n" in unit
    assert f"\nExecStart={MB} broker serve --config /etc/mint-bridge/broker.toml\n" in unit
    assert "\nReadWritePaths=/var/lib/mint-broker\n" in unit
    needs_analyze()
    outcome = systemd.verify_texts({broker_unit.UNIT_NAME: unit})
    assert outcome is not None and outcome.ok, outcome.problems


def test_a_broken_unit_is_reported() -> None:
    needs_analyze()
    outcome = systemd.verify_texts({"x.service": "[Service]\nExecStart=relative/path\n"})
    assert outcome is not None and not outcome.ok
    assert any("x.service" in problem for problem in outcome.problems)


def test_setup_broker_unit_writes_the_unit_of_this_config(tmp_path: Path) -> None:
    import subprocess

    config = tmp_path / "broker.toml"
    config.write_text('[storage]\ndata_dir = "data"\n')
    units = tmp_path / "units"
    argv = [sys.executable, "-m", "node_setup.cli", "setup", "broker-unit",
            "--config", str(config), "--unit-dir", str(units), "--mint-bridge", MB]  # fmt: skip
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    unit = (units / broker_unit.UNIT_NAME).read_text()
    assert f"\nExecStart={MB} broker serve --config {config}\n" in unit
    assert f"\nReadWritePaths={tmp_path / 'data'}\n" in unit
    assert "\nKillMode=control-group\n" in unit
    assert f"systemctl enable --now {broker_unit.UNIT_NAME}" in done.stdout
    config.write_text("[server]\n")
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 78
    assert "storage.data_dir is required" in done.stderr
