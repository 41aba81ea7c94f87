"""The probe as health checks, through the local site entry (a real child process), and the
``hello`` listing that keeps the built-in probe apart from the site's commands."""

from __future__ import annotations

from pathlib import Path

from bridge.client.node_config import LocalSite
from bridge.client.probe import STEPS, probe_site
from bridge.core.probe import PROBE_COMMAND
from node_setup.health.job_probe import check_probe
from node_setup.health.ping import _parse
from node_setup.health.result import Probe, Status
from tests.support.site_toml import write_site_toml


def local_site(tmp_path: Path, program: str = "/bin/true", **site: object) -> LocalSite:
    (tmp_path / "work").mkdir(exist_ok=True)
    path = write_site_toml(
        tmp_path / "site.toml",
        site={"name": "here", "work_base": tmp_path / "work", "log_file": tmp_path / "log",
              **site},
        commands={"solve": {"program": program}},
    )  # fmt: skip
    return LocalSite("here", str(path))


def test_a_probe_times_every_step_and_verifies_the_copy(tmp_path: Path) -> None:
    seen: list[str] = []
    result = probe_site(local_site(tmp_path), 10.0, on_step=seen.append)
    assert result.ok, result.error
    assert seen == list(STEPS) and list(result.seconds) == list(STEPS)
    assert result.report is not None and result.report.sha256 == result.sha256
    assert list((tmp_path / "work").iterdir()) == []


def test_health_warns_for_a_missing_program_with_its_path(tmp_path: Path) -> None:
    site = local_site(tmp_path, program="/opt/none/solver")
    probe = Probe("here")
    check_probe(site, probe, 10.0)
    checks = {c.name: c for c in probe.snapshot()}
    assert [checks[f"probe.{s}"].status for s in STEPS] == [Status.OK] * 5
    warned = checks["probe.program.solve"]
    assert warned.status is Status.WARN and warned.value == "/opt/none/solver"
    assert warned.message == "command solve: program /opt/none/solver does not exist"
    assert warned.fix == (
        f"install it, or fix commands.solve.program in {tmp_path / 'site.toml'} (at the site)"
    )


def test_health_fails_the_step_where_the_site_refused(tmp_path: Path) -> None:
    blocker = tmp_path / "blocker"
    blocker.write_text("")
    site = local_site(tmp_path, work_base=blocker / "work")
    probe = Probe("here")
    check_probe(site, probe, 10.0)
    checks = {c.name: c for c in probe.snapshot()}
    assert checks["probe.connect"].status is Status.OK
    failed = checks["probe.stage_in"]
    assert failed.status is Status.FAIL
    assert f"cannot create work dir {blocker / 'work'}/" in failed.message
    assert [checks[f"probe.{s}"].status for s in STEPS[2:]] == [Status.UNKNOWN] * 3


def test_health_warns_when_the_site_turned_probes_off(tmp_path: Path) -> None:
    probe = Probe("here")
    check_probe(local_site(tmp_path, allow_probe=False), probe, 10.0)
    (only,) = probe.snapshot()
    assert only.name == "probe" and only.status is Status.WARN
    assert "does not answer probes" in only.message


def test_hello_keeps_the_builtin_probe_apart() -> None:
    reply = {
        "version": "1", "protocol": 1, "site": "s",
        "commands": [{"name": "solve"}, {"name": PROBE_COMMAND, "builtin": True}],
    }  # fmt: skip
    hello = _parse(reply, 0.1)
    assert hello.commands == ("solve",) and hello.probe is True
    reply["commands"] = [{"name": "solve"}]
    assert _parse(reply, 0.1).probe is False
