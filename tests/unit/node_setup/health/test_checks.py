"""Health checks without external services: report, runner, site-side checks, broker TLS."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from unittest import mock

import pytest

from bridge.site.programs import program_problem
from node_setup.health import report
from node_setup.health.broker import check_broker
from node_setup.health.broker_access import BrokerTarget
from node_setup.health.result import Check, Probe, Status, worst
from node_setup.health.runner import run_all
from node_setup.health.site import SiteThresholds, Threshold, check_site_side, parse_threshold
from tests.support.net import free_port
from tests.support.tls import RecordingServer, make_ca

TOKEN = "mbt_0123456789ab_Zm9yIHRlc3RzIG9ubHk"


def by_name(checks: list[Check]) -> dict[str, Check]:
    return {c.name: c for c in checks}


# --- statuses, report, exit codes -------------------------------------------------------------


def check(status: Status, name: str = "x") -> Check:
    return Check("t", name, status)


@pytest.mark.parametrize(
    ("statuses", "expected"),
    [
        ([Status.OK], Status.OK),
        ([Status.OK, Status.WARN], Status.WARN),
        ([Status.WARN, Status.UNKNOWN], Status.UNKNOWN),
        ([Status.UNKNOWN, Status.FAIL, Status.WARN], Status.FAIL),
        ([], Status.UNKNOWN),
    ],
)
def test_overall_status_and_exit_code(statuses: list[Status], expected: Status) -> None:
    checks = [check(s) for s in statuses]
    assert worst(checks) is expected
    assert report.exit_code(checks) == {"ok": 0, "warn": 1, "fail": 2, "unknown": 3}[expected.label]


def test_json_document_fields() -> None:
    checks = [
        Check("bridge", "bridge.config", Status.OK, "/x/bridge.toml", "", "sites: 1"),
        Check("s1", "ssh.tcp", Status.FAIL, "h:22", "", "refused", "start sshd"),
    ]
    doc = json.loads(report.render_json(checks, 7.5))
    assert set(doc) == {
        "schema",
        "mint_bridge_version",
        "status",
        "exit_code",
        "checked_at",
        "timeout_s",
        "targets",
        "checks",
    }
    assert (doc["schema"], doc["status"], doc["exit_code"]) == ("mint-bridge.health/1", "fail", 2)
    assert doc["timeout_s"] == 7.5
    assert doc["targets"] == {"bridge": "ok", "s1": "fail"}
    assert doc["checks"][1] == {
        "target": "s1",
        "check": "ssh.tcp",
        "status": "fail",
        "value": "h:22",
        "unit": "",
        "message": "refused",
        "fix": "start sshd",
    }


def test_table_shows_value_and_the_fix_of_what_is_not_ok() -> None:
    checks = [
        Check("site", "site.disk_free", Status.OK, 5 * 2**30, "B", "fine"),
        Check("site", "site.inodes", Status.WARN, 12, "inodes", "few left", "remove files"),
    ]
    lines = report.render_table(checks).splitlines()
    assert lines[0].split() == ["STATUS", "TARGET", "CHECK", "VALUE"]
    assert lines[1].split() == ["ok", "site", "site.disk_free", "5.0", "GiB"]
    assert lines[2].split() == ["WARN", "site", "site.inodes", "12", "inodes"]
    assert lines[3].strip() == "why: few left"
    assert lines[4].strip() == "fix: remove files"
    assert lines[5] == "overall: WARN (exit 1); 2 checks: 1 ok, 1 warn"


# --- runner -----------------------------------------------------------------------------------


def test_runner_reports_a_hung_target_and_keeps_the_others() -> None:
    release = threading.Event()

    def hangs(probe: Probe) -> None:
        probe.ok("a.first", 1)
        probe.start("a.second", "the thing hangs: restart it")
        release.wait(60)

    def fine(probe: Probe) -> None:
        probe.ok("b.only", 2)

    def broken(probe: Probe) -> None:
        probe.start("c.step")
        raise RuntimeError("boom")

    try:
        checks = run_all({"a": hangs, "b": fine, "c": broken}, timeout=0.5)
    finally:
        release.set()
    assert [(c.target, c.name, c.status) for c in checks] == [
        ("a", "a.first", Status.OK),
        ("a", "a.second", Status.FAIL),
        ("b", "b.only", Status.OK),
        ("c", "c.step", Status.UNKNOWN),
    ]
    assert checks[1].message == "no answer within 0.5 s"
    assert checks[1].fix == "the thing hangs: restart it"
    assert "boom" in checks[3].message


# --- site side --------------------------------------------------------------------------------


def write_site(tmp_path: Path, commands: str, retention: str = "1h") -> Path:
    work = tmp_path / "work"
    work.mkdir(exist_ok=True)
    config = tmp_path / "site.toml"
    config.write_text(
        f'[site]\nname = "t"\nwork_base = "{work}"\nretention = "{retention}"\n{commands}'
    )
    return config


def program(path: Path, text: str = "#!/bin/sh\nexit 0\n", mode: int = 0o755) -> Path:
    path.write_text(text)
    path.chmod(mode)
    return path


def site_checks(config: Path, **kwargs: object) -> dict[str, Check]:
    probe = Probe("site")
    # site.login_shell runs the account's shell, which reads ~/.bashrc: a bare home keeps it quick.
    with mock.patch.dict(os.environ, HOME=str(config.parent)):
        check_site_side(str(config), probe, 10, **kwargs)  # type: ignore[arg-type]
    return by_name(probe.snapshot())


def test_programs_must_exist_and_be_executable(tmp_path: Path) -> None:
    good = program(tmp_path / "good.sh")
    plain = program(tmp_path / "plain.sh", mode=0o644)
    orphan = program(tmp_path / "orphan.sh", "#!/nonexistent/python3\n")
    config = write_site(
        tmp_path,
        "".join(
            f'[commands.{n}]\nprogram = "{p}"\n'
            for n, p in (
                ("good", good),
                ("plain", plain),
                ("orphan", orphan),
                ("gone", tmp_path / "gone"),
            )
        ),
    )
    found = site_checks(config)
    assert found["site.config"].status is Status.OK
    assert found["site.program.good"].status is Status.OK
    assert found["site.program.plain"].status is Status.FAIL
    assert "not executable (mode 0644" in found["site.program.plain"].message
    assert found["site.program.orphan"].status is Status.FAIL
    assert "/nonexistent/python3" in found["site.program.orphan"].message
    assert found["site.program.gone"].message == "does not exist"
    assert f"commands.gone.program in {config}" in found["site.program.gone"].fix


def test_an_invalid_site_config_fails_with_the_key(tmp_path: Path) -> None:
    config = write_site(tmp_path, '[commands.x]\nprogram = "/bin/true"\nscheduler = "lsf"\n')
    found = site_checks(config)
    assert list(found) == ["site.config"]
    assert found["site.config"].status is Status.FAIL
    assert "commands.x.scheduler" in found["site.config"].message


def test_a_site_config_that_does_not_parse_gets_a_fix_for_what_is_wrong(tmp_path: Path) -> None:
    broken = tmp_path / "site.toml"
    broken.write_text('[site]\nname = "s"\nwork_base = \n')
    found = site_checks(broken)["site.config"]
    assert found.status is Status.FAIL
    assert found.fix == f"correct the TOML syntax in {broken} at the line the message names"
    missing = tmp_path / "none" / "site.toml"
    found = site_checks(missing)["site.config"]
    assert found.fix == f"create {missing} or pass --config"
    unreadable = tmp_path / "dir.toml"
    unreadable.mkdir()  # a directory: open() fails with an OSError other than not-found
    found = site_checks(unreadable)["site.config"]
    assert found.fix == f"make {unreadable} readable by this account"


def test_scheduler_commands_must_answer(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    good = program(tmp_path / "run.sh")
    config = write_site(
        tmp_path,
        f'[commands.x]\nprogram = "{good}"\nscheduler = "slurm"\n'
        f'[commands.y]\nprogram = "{good}"\nscheduler = "pbspro"\n',
    )
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    monkeypatch.setenv("PATH", str(bin_dir))
    found = site_checks(config)
    assert found["site.scheduler.slurm"].status is Status.FAIL
    assert found["site.scheduler.slurm"].message.startswith("sinfo is not on PATH")
    assert "install the slurm client commands" in found["site.scheduler.slurm"].fix
    program(bin_dir / "sinfo", "#!/bin/sh\nprintf 'idle\\nidle\\ndown*\\n'\n")
    program(bin_dir / "qstat", "#!/bin/sh\necho 'cannot connect to server' >&2\nexit 2\n")
    found = site_checks(config)
    assert found["site.scheduler.slurm"].status is Status.OK
    assert found["site.scheduler.slurm"].value == "1 down, 2 idle"
    assert found["site.scheduler.pbspro"].status is Status.FAIL
    assert found["site.scheduler.pbspro"].value == 2
    assert "cannot connect to server" in found["site.scheduler.pbspro"].message
    program(bin_dir / "sinfo", "#!/bin/sh\nprintf 'drained\\ndown*\\n'\n")
    assert site_checks(config)["site.scheduler.slurm"].status is Status.WARN


def test_stale_work_dirs_are_a_warning(tmp_path: Path) -> None:
    config = write_site(tmp_path, "", retention="1h")
    job = tmp_path / "work" / "5b1a0f7e-3c2d-4e5f-8a9b-0c1d2e3f4a5b"
    (job / ".mint-bridge").mkdir(parents=True)
    old = time.time() - 2 * 3600
    os.utime(job / ".mint-bridge", (old, old))
    (tmp_path / "work" / "not-ours").mkdir()
    found = site_checks(config)
    stale = found["site.stale_workdirs"]
    assert (stale.status, stale.value, stale.unit) == (Status.WARN, 1, "dirs")
    assert f"mint-bridge site cleanup --config {config}" in stale.fix
    assert job.exists()  # the check never removes anything


def test_disk_thresholds(tmp_path: Path) -> None:
    config = write_site(tmp_path, "")
    found = site_checks(config)
    assert found["site.disk_free"].status is Status.OK
    assert found["site.disk_free"].unit == "B"
    huge = SiteThresholds(disk_warn=Threshold(size=1 << 62), disk_fail=Threshold(size=1 << 61))
    found = site_checks(config, thresholds=huge)
    assert found["site.disk_free"].status is Status.FAIL
    only_warn = SiteThresholds(disk_warn=parse_threshold("100%"), disk_fail=parse_threshold("0%"))
    assert site_checks(config, thresholds=only_warn)["site.disk_free"].status is Status.WARN


def test_thresholds_parse() -> None:
    assert parse_threshold("10%") == Threshold(percent=10.0)
    assert parse_threshold("5GiB") == Threshold(size=5 << 30)
    assert Threshold(percent=10).crossed(free=9, total=100)
    assert not Threshold(percent=10).crossed(free=10, total=100)
    with pytest.raises(ValueError):
        parse_threshold("150%")


def test_missing_work_base_fails(tmp_path: Path) -> None:
    config = tmp_path / "site.toml"
    config.write_text(f'[site]\nname = "t"\nwork_base = "{tmp_path / "nope"}"\n')
    found = site_checks(config)
    assert found["site.work_base"].status is Status.FAIL
    assert "mkdir -m 700" in found["site.work_base"].fix
    assert "site.disk_free" not in found


def test_agent_is_checked_for_a_pull_site(tmp_path: Path) -> None:
    token = tmp_path / "agent.token"
    token.write_text(TOKEN)
    token.chmod(0o600)
    config = write_site(tmp_path, f'[agent]\nurl = "https://127.0.0.1:9"\ntoken_file = "{token}"\n')
    found = site_checks(config)
    assert found["site.agent"].status is Status.FAIL
    assert "systemctl enable --now mint-bridge-agent.service" in found["site.agent"].fix
    assert program_problem("/bin/sh") == ""


# --- SSH: name lookup fails (no real DNS traffic: the resolver is replaced) ---------------


def test_dns_failure_is_reported_with_a_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    from bridge.client.node_config import SshSite
    from node_setup.health.ssh import check_ssh_site

    def no_such_host(*args: object, **kwargs: object) -> list[object]:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", no_such_host)
    probe = Probe("s")
    check_ssh_site(SshSite(name="s", host="site.invalid", ssh_config="/dev/null"), probe, 5)
    found = by_name(probe.snapshot())
    assert found["ssh.dns"].status is Status.FAIL
    assert "site.invalid does not resolve" in found["ssh.dns"].message
    assert all(found[n].status is Status.UNKNOWN for n in ("ssh.host_key", "ssh.hello"))


# --- broker: the token never goes to a server whose certificate fails ----------------------------


def token_file(tmp_path: Path) -> str:
    path = tmp_path / "token"
    path.write_text(TOKEN + "\n")
    path.chmod(0o600)
    return str(path)


@pytest.mark.parametrize(
    ("before", "after", "tls", "expiry"),
    [
        (-1, 90, Status.OK, Status.OK),
        (-1, 20, Status.OK, Status.WARN),
        (-1, 3, Status.OK, Status.FAIL),
        (-30, -2, Status.FAIL, Status.FAIL),
    ],
)
def test_certificate_expiry(
    tmp_path: Path, before: float, after: float, tls: Status, expiry: Status
) -> None:
    ca, cert, key = make_ca(tmp_path, not_before_days=before, not_after_days=after)
    with RecordingServer(cert, key) as server:
        probe = Probe("broker")
        check_broker(BrokerTarget(server.url, token_file(tmp_path), str(ca)), probe, 10)
    found = by_name(probe.snapshot())
    assert found["broker.tls"].status is tls
    assert found["broker.cert_expiry"].status is expiry
    assert found["broker.cert_expiry"].unit == "days"
    assert isinstance(found["broker.cert_expiry"].value, float)
    assert (found["broker.cert_expiry"].value < 0) == (after < 0)
    if tls is Status.FAIL:
        assert "expired" in found["broker.tls"].message
        assert found["broker.token"].status is Status.UNKNOWN
        assert server.authorizations == []  # the token was never sent
    else:
        assert found["broker.token"].status is Status.FAIL  # this server knows no token
        assert server.authorizations == [f"Bearer {TOKEN}"]


def test_unknown_ca_fails_and_the_token_stays_home(tmp_path: Path) -> None:
    _, cert, key = make_ca(tmp_path)
    with RecordingServer(cert, key) as server:
        probe = Probe("broker")
        check_broker(BrokerTarget(server.url, token_file(tmp_path)), probe, 10)
    found = by_name(probe.snapshot())
    assert found["broker.tls"].status is Status.FAIL
    assert "ca_bundle" in found["broker.tls"].fix
    assert server.authorizations == []


def test_broker_not_listening(tmp_path: Path) -> None:
    port = free_port()
    probe = Probe("broker")
    check_broker(BrokerTarget(f"https://127.0.0.1:{port}", token_file(tmp_path)), probe, 5)
    found = by_name(probe.snapshot())
    assert found["broker.tls"].status is Status.FAIL
    assert "cannot connect" in found["broker.tls"].message


# --- the command line ---------------------------------------------------------------------------


def health_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "node_setup.cli", "health", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=env,
    )


def test_usage_errors_exit_unknown() -> None:
    assert health_cli("--no-such-flag").returncode == 3
    assert health_cli("--site", "a", "--all").returncode == 3
    assert health_cli("--timeout", "-1").returncode == 3


def test_cli_exit_code_and_json_for_the_site_side(tmp_path: Path) -> None:
    good = program(tmp_path / "run.sh")
    config = write_site(tmp_path, f'[commands.x]\nprogram = "{good}"\n')
    home = dict(os.environ, HOME=str(tmp_path))  # no ~/.bashrc to slow the login shell
    done = health_cli("--site-side", "--config", str(config), "--json", env=home)
    doc = json.loads(done.stdout)
    assert done.returncode == doc["exit_code"] == 0
    assert [c["check"] for c in doc["checks"]] == [
        "site.config",
        "site.program.x",
        "site.path_shim",
        "site.work_base",
        "site.disk_free",
        "site.inodes",
        "site.stale_workdirs",
        "site.login_shell",
    ]
    missing = health_cli("--site-side", "--config", str(tmp_path / "absent.toml"))
    assert missing.returncode == 2
    assert "FAIL" in missing.stdout and "does not exist" in missing.stdout


# --- site_ping on a schedule ------------------------------------------------------------------


def test_ping_schedule_reports_only_changes() -> None:
    from node_setup.health.ping import PingResult, PingSchedule

    answers = iter([True, False, False, True])
    changes: list[tuple[bool | None, bool]] = []

    def ping(name: str) -> PingResult:
        ok = next(answers)
        return PingResult(name, ok, 0.0, 0.01, None, "" if ok else "refused")

    def changed(old: PingResult | None, new: PingResult) -> None:
        changes.append((old.ok if old else None, new.ok))

    schedule = PingSchedule(ping, ["s"], 60, changed)
    for _ in range(4):
        schedule.run_once()
    assert changes == [(None, True), (True, False), (False, True)]
    assert schedule.latest["s"].ok


def test_ping_schedule_runs_in_the_background_until_stopped() -> None:
    from node_setup.health.ping import PingResult, PingSchedule

    pinged = threading.Event()

    def ping(name: str) -> PingResult:
        pinged.set()
        return PingResult(name, True, 0.0, 0.0)

    schedule = PingSchedule(ping, ["s"], 3600)
    schedule.start()
    try:
        assert pinged.wait(10)
    finally:
        schedule.stop(10)
    assert schedule.wait(0)  # stopped


def test_a_bridge_config_that_does_not_parse_gets_a_fix_for_what_is_wrong(tmp_path: Path) -> None:
    from node_setup.health.bridge_node import _config

    broken = tmp_path / "bridge.toml"
    broken.write_text("[sites.a\n")
    probe = Probe("bridge")
    assert _config(str(broken), probe) is None
    found = by_name(probe.snapshot())["bridge.config"]
    assert found.status is Status.FAIL
    assert found.fix == (
        f"correct the TOML syntax in {broken} at the line the message names"
        " (reference: examples/bridge.toml)"
    )
