"""`setup site` against a temporary HOME: layout, config, MInt's line, the agent, dry runs."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from bridge.site.config import load_site_config
from node_setup import site_setup, systemd
from node_setup.changes import Action
from node_setup.detect import detect_schedulers
from node_setup.errors import InvalidKey, MissingValue, OverwriteRefused, SetupError
from node_setup.health import login_shell
from node_setup.prompt import Unattended
from node_setup.site_layout import SiteOptions
from node_setup.site_setup import setup_site
from tests.unit.node_setup.test_authorized_keys import ED, PUB

# A real command: systemd-analyze checks that the units' ExecStart is executable.
MINT_BRIDGE = str(Path(sys.executable).parent / "mint-bridge")
TOKEN = "mbt_0123456789ab_Zm9yIHRlc3RzIG9ubHk"


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    return home


@pytest.fixture
def mint_key(tmp_path: Path) -> Path:
    path = tmp_path / "mint.pub"
    path.write_text(PUB)
    return path


def ssh_options(home: Path, key: Path, **extra: object) -> SiteOptions:
    values: dict[str, object] = {
        "site_id": "rme-u-tokyo",
        "scheduler": "local",
        "mint_ip": "192.0.2.10",
        "mint_key": str(key),
        "work_base": str(home / "work"),
        "mint_bridge": MINT_BRIDGE,
        "unit_dir": str(home / "units"),  # never the machine's /etc/systemd/system
    }
    values.update(extra)
    return SiteOptions(**values)  # type: ignore[arg-type]


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def tree(root: Path) -> dict[str, tuple[int, bytes | None, int]]:
    """Every path under ``root`` with its mode, content and mtime: a change shows up."""
    found: dict[str, tuple[int, bytes | None, int]] = {}
    for path in sorted(root.rglob("*")):
        st = path.lstat()
        content = path.read_bytes() if path.is_file() else None
        found[str(path.relative_to(root))] = (st.st_mode, content, st.st_mtime_ns)
    return found


def test_full_site_setup_over_ssh(home: Path, mint_key: Path) -> None:
    result = setup_site(ssh_options(home, mint_key), Unattended(echo=False))
    assert result.applied
    config = home / ".config/mint-bridge/site.toml"
    for directory in (
        ".config/mint-bridge",
        "mint-site",
        "mint-site/programs",
        "mint-site/private",
        ".local/state/mint-bridge",
        "work",
        ".ssh",
    ):
        assert mode(home / directory) == 0o700, directory
    assert mode(config) == 0o600
    site = load_site_config(str(config))
    assert site.name == "rme-u-tokyo"
    assert site.work_base == str(home / "work")
    assert list(site.commands) == ["example"]
    assert site.commands["example"].program == str(home / "mint-site/programs/example.sh")
    assert mode(home / "mint-site/programs/example.sh") == 0o700
    assert site.agent is None
    authorized = home / ".ssh/authorized_keys"
    assert mode(authorized) == 0o600
    assert authorized.read_text().splitlines() == [
        f'command="{MINT_BRIDGE} site serve-ssh --config {config}",restrict,'
        f'from="192.0.2.10" ssh-ed25519 {ED} mint-bridge@ssh-node01'
    ]


def test_a_slow_login_shell_gets_a_line_of_advice(
    home: Path, mint_key: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    slow = tmp_path / "slowsh"
    slow.write_text('#!/bin/sh\n[ -n "$SSH_CLIENT" ] && sleep 0.2\nexit 0\n')
    slow.chmod(0o755)
    account = login_shell.Account("mint", str(slow), str(home))
    monkeypatch.setattr(login_shell, "this_account", lambda: account)
    out = Unattended(echo=False)
    result = setup_site(ssh_options(home, mint_key), out)
    advice = [n for n in result.notes if n.startswith("every SSH job waits 0.2")]
    assert len(advice) == 1 and "usermod -s /bin/sh mint" in advice[0]
    assert f"next: {advice[0]}" in out.lines
    fast = login_shell.Account("mint", "/bin/sh", str(home))
    monkeypatch.setattr(login_shell, "this_account", lambda: fast)
    result = setup_site(ssh_options(home, mint_key), Unattended(echo=False))
    assert not any("every SSH job" in n for n in result.notes)


def test_the_example_program_runs(home: Path, mint_key: Path, tmp_path: Path) -> None:
    setup_site(ssh_options(home, mint_key), Unattended(echo=False))
    workdir = tmp_path / "job"
    workdir.mkdir()
    proc = subprocess.run(
        [str(home / "mint-site/programs/example.sh"), "hello there"],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert proc.returncode == 0
    assert (workdir / "result.txt").read_text() == "hello there\n"


def test_second_run_changes_nothing(home: Path, mint_key: Path) -> None:
    setup_site(ssh_options(home, mint_key), Unattended(echo=False))
    before = tree(home)
    out = Unattended(echo=False)
    result = setup_site(ssh_options(home, mint_key), out)
    assert {step.action for step in result.steps} == {Action.UNCHANGED}
    assert tree(home) == before
    assert not any(line.startswith(("create", "change")) for line in out.lines)


def test_dry_run_touches_nothing(home: Path, mint_key: Path) -> None:
    out = Unattended(echo=False)
    result = setup_site(ssh_options(home, mint_key, dry_run=True), out)
    assert not result.applied
    assert list(home.iterdir()) == []
    assert out.lines[-1] == "dry run: nothing was changed"
    assert f"would create {home / '.ssh/authorized_keys'} (0600)" in out.lines
    assert f"would create directory {home / 'work'} (0700)" in out.lines
    # ... and on an existing site, a dry run with other values changes nothing either.
    setup_site(ssh_options(home, mint_key), Unattended(echo=False))
    before = tree(home)
    out = Unattended(echo=False)
    setup_site(ssh_options(home, mint_key, mint_ip="192.0.2.77", dry_run=True, force=True), out)
    assert tree(home) == before
    assert any(line.strip().startswith("+command=") and "192.0.2.77" in line for line in out.lines)


def agent_flags(home: Path) -> dict[str, object]:
    """An agent unit must name a real mint-bridge (systemd-analyze checks it): this one."""
    return {"mint_bridge": str(Path(sys.executable).parent / "mint-bridge"),
            "unit_dir": str(home / "units")}  # fmt: skip


def test_an_existing_config_is_updated_keeping_the_admins_commands(
    home: Path, mint_key: Path
) -> None:
    setup_site(ssh_options(home, mint_key), Unattended(echo=False))
    config = home / ".config/mint-bridge/site.toml"
    admins = (
        "\n# the admin's own command\n[commands.abaqus]\nprogram = \"/opt/abaqus/run\"  # v2024\n"
    )
    edited = config.read_text() + admins
    config.write_text(edited)
    program = home / "mint-site/programs/example.sh"
    program.write_text("#!/bin/sh\necho the admin's own example\n")
    out = Unattended(echo=False)
    result = setup_site(
        ssh_options(home, mint_key, method="broker", broker_url="https://broker.example.org",
                    token=TOKEN, **agent_flags(home)),
        out,
    )  # fmt: skip
    assert result.applied
    text = config.read_text()
    assert text.startswith(edited)  # every byte of the admin's file is kept, in order
    added = text[len(edited) :]
    assert "[agent]" in added and 'url = "https://broker.example.org"' in added
    assert program.read_text() == "#!/bin/sh\necho the admin's own example\n"
    assert f"change {config} (0600)" in out.lines
    assert '    +url = "https://broker.example.org"' in out.lines  # the diff is shown
    loaded = load_site_config(str(config))
    assert set(loaded.commands) == {"example", "abaqus"}
    assert loaded.agent is not None and loaded.agent.url == "https://broker.example.org"
    # A new URL changes just that key, in place; comments stay.
    setup_site(
        ssh_options(home, mint_key, method="broker", broker_url="https://b2.example.org",
                    token=TOKEN, **agent_flags(home)),
        Unattended(echo=False),
    )  # fmt: skip
    assert config.read_text() == text.replace(
        'url = "https://broker.example.org"', 'url = "https://b2.example.org"'
    )


def test_an_explicit_scheduler_leaves_existing_commands_and_says_so(
    home: Path, mint_key: Path
) -> None:
    setup_site(ssh_options(home, mint_key), Unattended(echo=False))
    config = home / ".config/mint-bridge/site.toml"
    before = config.read_text()
    result = setup_site(ssh_options(home, mint_key, scheduler="slurm"), Unattended(echo=False))
    assert config.read_text() == before
    assert any('set scheduler = "slurm"' in note for note in result.notes)
    setup_site(ssh_options(home, mint_key, scheduler="slurm", force=True), Unattended(echo=False))
    assert load_site_config(str(config)).commands["example"].scheduler == "slurm"


def test_a_config_of_another_site_or_broken_toml_is_refused(home: Path, mint_key: Path) -> None:
    setup_site(ssh_options(home, mint_key), Unattended(echo=False))
    config = home / ".config/mint-bridge/site.toml"
    with pytest.raises(SetupError, match="not 'other-site': pass --site-id rme-u-tokyo"):
        setup_site(ssh_options(home, mint_key, site_id="other-site"), Unattended(echo=False))
    config.write_text("[site\n")
    with pytest.raises(SetupError, match="is not valid TOML"):
        setup_site(ssh_options(home, mint_key), Unattended(echo=False))
    assert config.read_text() == "[site\n"


def test_a_new_mint_ip_updates_setups_own_line(home: Path, mint_key: Path) -> None:
    setup_site(ssh_options(home, mint_key), Unattended(echo=False))
    authorized = home / ".ssh/authorized_keys"
    with open(authorized, "a") as handle:
        handle.write("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIL9admin admin@laptop\n")
    out = Unattended(echo=False)
    setup_site(ssh_options(home, mint_key, mint_ip="192.0.2.11"), out)
    lines = authorized.read_text().splitlines()
    assert len(lines) == 2
    assert 'from="192.0.2.11"' in lines[0] and lines[1].endswith("admin@laptop")
    assert any(line.startswith("    +command=") and "192.0.2.11" in line for line in out.lines)


def test_the_admins_own_line_for_the_key_needs_force(home: Path, mint_key: Path) -> None:
    authorized = home / ".ssh/authorized_keys"
    authorized.parent.mkdir(mode=0o700)
    admins = f'command="/usr/local/bin/other",restrict {PUB.strip()}\n'
    authorized.write_text(admins)
    with pytest.raises(OverwriteRefused):
        setup_site(ssh_options(home, mint_key), Unattended(echo=False))
    assert authorized.read_text() == admins
    setup_site(ssh_options(home, mint_key, force=True), Unattended(echo=False))
    assert "site serve-ssh" in authorized.read_text()


def test_refuses_a_private_key_and_changes_nothing(home: Path, tmp_path: Path) -> None:
    private = tmp_path / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(private)], check=True)
    with pytest.raises(InvalidKey, match="PRIVATE key"):
        setup_site(ssh_options(home, private), Unattended(echo=False))
    assert list(home.iterdir()) == []


def test_unattended_setup_names_the_missing_flag(home: Path, mint_key: Path) -> None:
    with pytest.raises(MissingValue, match="--mint-ip"):
        setup_site(ssh_options(home, mint_key, mint_ip=None), Unattended(echo=False))
    with pytest.raises(MissingValue, match="--mint-key"):
        setup_site(ssh_options(home, mint_key, mint_key=None), Unattended(echo=False))
    assert list(home.iterdir()) == []


# --- broker method ----------------------------------------------------------------------------


def run_cli(home: Path, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, HOME=str(home))
    return subprocess.run(
        [sys.executable, "-m", "node_setup.cli", "setup", "site", *args],
        input=stdin,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_broker_site_stores_the_token_privately_and_writes_the_unit(home: Path) -> None:
    units = home / "units"
    argv = [
        "--site-id",
        "rme-u-tokyo",
        "--method",
        "broker",
        "--scheduler",
        "local",
        "--broker-url",
        "https://broker.example:8443",
        "--token-stdin",
        "--work-base",
        str(home / "work"),
        "--unit-dir",
        str(units),
        "--yes",
    ]
    proc = run_cli(home, *argv, stdin=TOKEN + "\n")
    assert proc.returncode == 0, proc.stderr
    assert TOKEN not in proc.stdout + proc.stderr
    token_file = home / ".config/mint-bridge/agent.token"
    assert token_file.read_text() == TOKEN + "\n"
    assert mode(token_file) == 0o600
    config = home / ".config/mint-bridge/site.toml"
    site = load_site_config(str(config))
    assert site.agent is not None
    assert (site.agent.url, site.agent.token_file) == (
        "https://broker.example:8443",
        str(token_file),
    )
    unit = (units / "mint-bridge-agent.service").read_text()
    lines = unit.splitlines()
    mint_bridge = str(Path(sys.executable).parent / "mint-bridge")
    assert f"ExecStart={mint_bridge} agent --config {config}" in lines
    for expected in (
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "PrivateTmp=false",
        f"ReadWritePaths={home / 'work'} {home / '.local/state/mint-bridge'}",
        "Restart=on-failure",
        "WantedBy=multi-user.target",
    ):
        assert expected in lines, expected
    assert TOKEN not in unit
    if shutil.which("systemd-analyze"):
        assert (
            "systemd-analyze verify: mint-bridge-agent.service, mint-bridge-cleanup.service, "
            "mint-bridge-cleanup.timer valid"
        ) in proc.stdout
        outcome = systemd.verify(str(units / "mint-bridge-agent.service"))
        assert outcome is not None and outcome.ok, outcome
    # Idempotent, token included.
    again = run_cli(home, *argv, stdin=TOKEN + "\n")
    assert again.returncode == 0
    assert not [ln for ln in again.stdout.splitlines() if ln.startswith(("create", "change"))]


def test_broker_token_is_never_taken_from_argv(home: Path) -> None:
    proc = run_cli(
        home,
        "--site-id",
        "x",
        "--method",
        "broker",
        "--broker-url",
        "https://b.example",
        "--token",
        TOKEN,
        "--yes",
    )
    assert proc.returncode == 2  # click: no such option
    assert not (home / ".config").exists()
    missing = run_cli(
        home,
        "--site-id",
        "x",
        "--method",
        "broker",
        "--broker-url",
        "https://b.example",
        "--yes",
        "--unit-dir",
        str(home / "u"),
    )
    assert missing.returncode == 64
    assert "with --token-stdin or name a file with --token-file" in missing.stderr


def test_plain_http_broker_is_refused(home: Path) -> None:
    proc = run_cli(
        home,
        "--site-id",
        "x",
        "--method",
        "broker",
        "--broker-url",
        "http://broker.example",
        "--token-stdin",
        "--yes",
        stdin=TOKEN,
    )
    assert proc.returncode == 78
    assert "https://" in proc.stderr
    assert not (home / ".config").exists()


def test_unit_quoting_follows_systemd_rules() -> None:
    assert systemd.quote_arg("/opt/mint-bridge") == "/opt/mint-bridge"
    assert systemd.quote_arg("/srv/my site.toml") == '"/srv/my site.toml"'
    assert systemd.quote_arg('/srv/"q"') == '"/srv/\\"q\\""'
    assert systemd.quote_arg("/srv/100%") == "/srv/100%%"
    assert systemd.quote_arg("/srv/$HOME") == '"/srv/$$HOME"'


def test_unit_with_odd_paths_still_verifies(tmp_path: Path) -> None:
    if not shutil.which("systemd-analyze"):
        pytest.skip("systemd-analyze is not installed; the unit's content is tested above")
    unit = systemd.AgentUnit(
        site_id="s",
        exec_argv=[str(Path(sys.executable)), "agent", "--config", "/srv/my site/100% $x.toml"],
        user="root",
        writable=["/tmp", "/srv/my site"],
    )
    path = tmp_path / systemd.UNIT_NAME
    path.write_text(unit.render())
    outcome = systemd.verify(str(path))
    assert outcome is not None and outcome.ok, outcome.problems


# --- detection --------------------------------------------------------------------------------


def fake_commands(directory: Path, *names: str, head: str = "#!/bin/sh\n") -> str:
    directory.mkdir(exist_ok=True)
    for name in names:
        path = directory / name
        path.write_text(head + "exit 0\n")
        path.chmod(0o755)
    return str(directory)


def test_detects_schedulers_from_path_only(tmp_path: Path) -> None:
    assert detect_schedulers(fake_commands(tmp_path / "s", "sbatch", "sinfo")) == ("slurm",)
    assert detect_schedulers(fake_commands(tmp_path / "p", "qsub", "qstat", "pbs_rsub")) == (
        "pbspro",
    )
    assert detect_schedulers(fake_commands(tmp_path / "t", "qsub", "qstat", "momctl")) == (
        "torque",
    )
    assert detect_schedulers(fake_commands(tmp_path / "q", "qsub", "qstat")) == (
        "torque",
        "pbspro",
    )
    wrapper = fake_commands(tmp_path / "w", "qsub", "qstat", head="#! /usr/bin/perl\n# Slurm\n")
    assert detect_schedulers(wrapper) == ()
    assert detect_schedulers(str(tmp_path / "empty")) == ()


def test_ambiguous_scheduler_is_asked_for() -> None:
    with pytest.raises(MissingValue, match="--scheduler"):
        site_setup.choose_scheduler(None, ("torque", "pbspro"), Unattended(echo=False))
    assert site_setup.choose_scheduler(None, ("slurm",), Unattended(echo=False)) == "slurm"
    assert site_setup.choose_scheduler(None, (), Unattended(echo=False)) == "local"
