"""Setup and health against real services: OpenSSH on loopback, the broker under gunicorn,
and a tiny file system for a full disk.

A site and a bridge node are set up from scratch in temporary HOMEs with the same commands an
admin runs; MInt's line in authorized_keys is then used by a real job, and refused from
another address. Health checks run against a healthy sshd, one whose host key changed, one
that stopped, and a listener that accepts and never answers.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from node_setup import authorized_keys as ak
from node_setup import host_keys
from tests.integration.conftest import ssh_masters, stop_ssh_masters
from tests.support.services import unavailable
from tests.support.sshd import Sshd, keygen, start_sshd_for_test
from tests.support.tls import make_ca

MINT_BRIDGE = str(Path(sys.executable).parent / "mint-bridge")


def cli(
    home: Path, *args: str, stdin: str = "", timeout: float = 90
) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, HOME=str(home))
    env.pop("MINT_BRIDGE_CONFIG", None)
    return subprocess.run(
        [sys.executable, "-m", "node_setup.cli", *args],
        input=stdin,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def health_json(home: Path, *args: str, timeout: float = 90) -> tuple[int, dict[str, Any]]:
    done = cli(home, "health", "--json", *args, timeout=timeout)
    return done.returncode, json.loads(done.stdout)


def checks_of(doc: dict[str, Any], target: str) -> dict[str, dict[str, Any]]:
    return {c["check"]: c for c in doc["checks"] if c["target"] == target}


def fingerprint_of(public_key_file: Path) -> str:
    out = subprocess.run(
        ["ssh-keygen", "-lf", str(public_key_file)], capture_output=True, text=True, check=True
    )
    return out.stdout.split()[1]


def sshd_or_skip(root: Path, site_config: Path) -> Sshd:
    return start_sshd_for_test(root, site_config)


@dataclass
class Deployment:
    site_home: Path
    bridge_home: Path
    sshd: Sshd
    site_config: Path
    work_base: Path
    bridge_config: Path
    key: Path

    def site_setup_args(self, *extra: str) -> list[str]:
        return [
            "setup",
            "site",
            "--site-id",
            "rme-u-tokyo",
            "--scheduler",
            "local",
            "--mint-ip",
            "127.0.0.1",
            "--mint-key",
            str(self.key) + ".pub",
            "--work-base",
            str(self.work_base),
            "--authorized-keys",
            str(self.sshd.authorized_keys),
            "--unit-dir",
            str(self.site_home / "units"),
            "--yes",
            *extra,
        ]


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    root = tmp_path_factory.mktemp("setup")
    site_home, bridge_home = root / "site-home", root / "bridge-home"
    site_home.mkdir()
    bridge_home.mkdir()
    site_config = site_home / ".config/mint-bridge/site.toml"
    # The fixture's sshd reads the authorized_keys that `setup site` edits.
    sshd = sshd_or_skip(root / "sshd", site_config)
    key = bridge_home / ".ssh/mint_bridge_ed25519"
    deployment = Deployment(
        site_home,
        bridge_home,
        sshd,
        site_config,
        root / "work",
        bridge_home / ".config/mint-bridge/bridge.toml",
        key,
    )
    try:
        done = cli(bridge_home, "setup", "bridge-node")
        assert done.returncode == 0, done.stderr
        done = cli(site_home, *deployment.site_setup_args())
        assert done.returncode == 0, done.stderr
        done = cli(
            bridge_home,
            "setup",
            "add-site",
            "rme-u-tokyo",
            "--ssh",
            f"127.0.0.1:{sshd.port}",
            "--fingerprint",
            fingerprint_of(sshd.host_key.with_suffix(".pub")),
        )
        assert done.returncode == 0, done.stderr
        yield deployment
    finally:
        sshd.stop()


# --- setup ------------------------------------------------------------------------------------


def test_the_line_in_authorized_keys_is_exactly_ours(deployment: Deployment) -> None:
    public = Path(str(deployment.key) + ".pub").read_text().strip()
    lines = deployment.sshd.authorized_keys.read_text().splitlines()
    ours = [line for line in lines if public in line]
    assert ours == [
        f'command="{MINT_BRIDGE} site serve-ssh --config {deployment.site_config}",'
        f'restrict,from="127.0.0.1" {public}'
    ]
    assert len(lines) == 2  # the fixture's own line is kept


def test_a_job_runs_through_the_new_line(deployment: Deployment, tmp_path: Path) -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "bridge.cli",
            "run",
            "--config",
            str(deployment.bridge_config),
            "--site",
            "rme-u-tokyo",
            "--command",
            "example",
            "-p",
            "message=set-up-in-5-minutes",
            "-o",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "result.txt").read_text() == "set-up-in-5-minutes\n"
    assert "wrote result.txt" in done.stdout


def test_the_key_only_runs_our_entry_and_only_from_mint(deployment: Deployment) -> None:
    sshd = deployment.sshd
    base = [
        "ssh",
        "-F",
        "/dev/null",
        "-i",
        str(deployment.key),
        "-p",
        str(sshd.port),
        "-o",
        f"UserKnownHostsFile={sshd.known_hosts}",
        "-o",
        "StrictHostKeyChecking=yes",
        "-o",
        "BatchMode=yes",
        "-o",
        "IdentitiesOnly=yes",
    ]
    shell = subprocess.run(
        [*base, "127.0.0.1", "cat", "/etc/passwd"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert shell.returncode == 77
    assert "refused command 'cat /etc/passwd'" in shell.stderr
    assert "root:" not in shell.stdout
    elsewhere = subprocess.run(
        [*base, "-b", "127.0.0.2", "127.0.0.1", "true"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert elsewhere.returncode == 255
    assert "Permission denied" in elsewhere.stderr


def test_a_second_site_setup_changes_nothing(deployment: Deployment) -> None:
    watched = [
        deployment.site_config,
        deployment.sshd.authorized_keys,
        deployment.site_home / "mint-site/programs/example.sh",
    ]
    before = {p: (p.read_bytes(), p.stat().st_mtime_ns, p.stat().st_mode) for p in watched}
    done = cli(deployment.site_home, *deployment.site_setup_args())
    assert done.returncode == 0, done.stderr
    assert {p: (p.read_bytes(), p.stat().st_mtime_ns, p.stat().st_mode) for p in watched} == before
    changes = [ln for ln in done.stdout.splitlines() if ln.startswith(("create", "change"))]
    assert changes == []


def test_dry_run_with_other_values_touches_nothing(deployment: Deployment) -> None:
    before = {p: p.read_bytes() for p in deployment.site_home.rglob("*") if p.is_file()}
    keys = deployment.sshd.authorized_keys.read_bytes()
    done = cli(
        deployment.site_home,
        *[a if a != "127.0.0.1" else "127.0.0.9" for a in deployment.site_setup_args()],
        "--dry-run",
        "--force",
    )
    assert done.returncode == 0, done.stderr
    assert 'from="127.0.0.9"' in done.stdout
    assert done.stdout.splitlines()[-1] == "dry run: nothing was changed"
    assert deployment.sshd.authorized_keys.read_bytes() == keys
    assert {p: p.read_bytes() for p in deployment.site_home.rglob("*") if p.is_file()} == before


def test_site_setup_keeps_an_edited_config_and_refuses_the_admins_key_line(
    tmp_path: Path, deployment: Deployment
) -> None:
    home = tmp_path / "home"
    home.mkdir()
    args = [
        "setup",
        "site",
        "--site-id",
        "s",
        "--scheduler",
        "local",
        "--mint-ip",
        "127.0.0.1",
        "--mint-key",
        str(deployment.key) + ".pub",
        "--work-base",
        str(tmp_path / "w"),
        "--unit-dir",
        str(home / "units"),
        "--yes",
    ]
    assert cli(home, *args).returncode == 0
    config = home / ".config/mint-bridge/site.toml"
    config.write_text(config.read_text().replace('retention = "7d"', 'retention = "30d"'))
    edited = config.read_bytes()
    done = cli(home, *args)
    assert done.returncode == 0, done.stderr  # the admin's edit is theirs: kept
    assert config.read_bytes() == edited
    assert f"unchanged: file {config} (0600)" in done.stdout.splitlines()
    # A line of the admin's for MInt's key (another command) is only replaced with --force.
    authorized = home / ".ssh/authorized_keys"
    pub = str(deployment.key) + ".pub"
    admins = f'command="/usr/bin/true",restrict {Path(pub).read_text().strip()}\n'
    authorized.write_text(admins)
    done = cli(home, *args)
    assert done.returncode == 73
    assert authorized.read_text() == admins
    assert any(line.startswith('    -command="/usr/bin/true"') for line in done.stdout.splitlines())
    assert "rerun with --force" in done.stderr
    assert cli(home, *args, "--force").returncode == 0
    assert 'retention = "7d"' in config.read_text()  # --force writes a new config


def test_setup_prints_the_host_key_of_the_sshd_on_its_port_and_add_site_takes_it(
    deployment: Deployment, tmp_path: Path
) -> None:
    port = deployment.sshd.port
    done = cli(deployment.site_home, *deployment.site_setup_args("--ssh-port", str(port)))
    assert done.returncode == 0, done.stderr
    served = fingerprint_of(deployment.sshd.host_key.with_suffix(".pub"))
    system = [fingerprint_of(p) for p in Path("/etc/ssh").glob("ssh_host_*_key.pub")]
    assert served not in system  # the fixture's own key: /etc/ssh would print another
    assert f"ssh-ed25519 {served}; as the sshd on port {port} offers them" in done.stdout
    runs = [ln for ln in done.stdout.splitlines() if "MInt's admin then runs:" in ln]
    assert len(runs) == 1
    printed = runs[0].split("MInt's admin then runs: mint-bridge ", 1)[1].split()
    assert printed == [
        "setup", "add-site", "rme-u-tokyo", "--ssh", f"HOST:{port}", "--fingerprint", served,
    ]  # fmt: skip
    # The printed command, with the host filled in, works first time on a new bridge node.
    bridge = tmp_path / "bridge"
    bridge.mkdir()
    assert cli(bridge, "setup", "bridge-node").returncode == 0
    argv = [a.replace("HOST", "127.0.0.1") for a in printed]
    added = cli(bridge, *argv)
    assert added.returncode == 0, added.stderr
    known = (bridge / ".config/mint-bridge/known_hosts").read_text().split()
    host_pub = deployment.sshd.host_key.with_suffix(".pub").read_text().split()
    assert known == [f"[127.0.0.1]:{port}", host_pub[0], host_pub[1]]


def test_host_key_pin_refuses_a_wrong_fingerprint(deployment: Deployment, tmp_path: Path) -> None:
    other = tmp_path / "other_host_key"
    keygen(other, "impostor")
    known = deployment.bridge_home / ".config/mint-bridge/known_hosts"
    before = (known.read_bytes(), deployment.bridge_config.read_bytes())
    done = cli(
        deployment.bridge_home,
        "setup",
        "add-site",
        "second",
        "--ssh",
        f"127.0.0.1:{deployment.sshd.port}",
        "--fingerprint",
        fingerprint_of(other.with_suffix(".pub")),
    )
    assert done.returncode == 79
    assert "no host key of 127.0.0.1" in done.stderr
    assert "nothing was pinned" in done.stderr
    assert (known.read_bytes(), deployment.bridge_config.read_bytes()) == before


def test_add_site_through_a_jump_host(deployment: Deployment, tmp_path: Path) -> None:
    jump = sshd_or_skip(tmp_path / "jump", deployment.site_config)
    try:
        home = tmp_path / "bridge"
        shutil.copytree(deployment.bridge_home, home)
        public = Path(str(deployment.key) + ".pub").read_text().strip()
        # What a jump host's admin grants: forwarding to the site only, no shell.
        jump.authorize(
            f'restrict,port-forwarding,permitopen="127.0.0.1:{deployment.sshd.port}",'
            f'command="/bin/false",from="127.0.0.1" {public}'
        )
        done = cli(
            home,
            "setup",
            "add-site",
            "via-jump",
            "--ssh",
            f"127.0.0.1:{deployment.sshd.port}",
            "--jump",
            f"127.0.0.1:{jump.port}",
            "--fingerprint",
            fingerprint_of(deployment.sshd.host_key.with_suffix(".pub")),
            "--jump-fingerprint",
            fingerprint_of(jump.host_key.with_suffix(".pub")),
        )
        assert done.returncode == 0, done.stderr
        ssh_config = (home / ".config/mint-bridge/ssh_config").read_text()
        assert f"Host via-jump-jump\n    HostName 127.0.0.1\n    Port {jump.port}\n" in ssh_config
        assert "    ProxyJump via-jump-jump\n" in ssh_config
        known = (home / ".config/mint-bridge/known_hosts").read_text().splitlines()
        assert [line.split()[0] for line in known] == [
            f"[127.0.0.1]:{deployment.sshd.port}",
            f"[127.0.0.1]:{jump.port}",
        ]
        code, doc = health_json(home, "--site", "via-jump")
        assert code == 0, doc
        tcp = checks_of(doc, "via-jump")["ssh.tcp"]
        assert tcp["message"] == f"connected to 127.0.0.1:{jump.port} (jump host via-jump-jump)"
        run = subprocess.run(
            [
                sys.executable,
                "-m",
                "bridge.cli",
                "run",
                "--config",
                str(home / ".config/mint-bridge/bridge.toml"),
                "--site",
                "via-jump",
                "--command",
                "example",
                "-p",
                "message=jumped",
                "-o",
                str(tmp_path),
            ],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
            env=dict(os.environ, HOME=str(home)),
        )
        assert run.returncode == 0, run.stderr
        assert (tmp_path / "result.txt").read_text() == "jumped\n"
    finally:
        jump.stop()


# --- health over SSH ----------------------------------------------------------------------------


def test_health_of_a_good_site(deployment: Deployment) -> None:
    code, doc = health_json(deployment.bridge_home, "--site", "rme-u-tokyo")
    assert code == 0, doc
    assert (doc["status"], doc["exit_code"]) == ("ok", 0)
    found = checks_of(doc, "rme-u-tokyo")
    # add-site chose the OpenSSH client (ssh is on PATH), so its own checks follow.
    assert list(found) == [
        "ssh.dns", "ssh.tcp", "ssh.host_key", "ssh.auth", "ssh.hello", "ssh.rtt",
        "ssh.job_cost", "ssh.openssh.binary", "ssh.openssh.control_dir", "ssh.openssh.hello",
    ]  # fmt: skip
    assert all(c["status"] == "ok" for c in found.values()), found
    assert found["ssh.host_key"]["value"] == fingerprint_of(
        deployment.sshd.host_key.with_suffix(".pub")
    )
    assert found["ssh.hello"]["value"] == "mint-bridge 0.1.0, commands (1): example"
    assert found["ssh.tcp"]["unit"] == found["ssh.rtt"]["unit"] == "ms"
    # A whole connection up to the hello costs more than one round trip inside it.
    assert found["ssh.job_cost"]["unit"] == "ms"
    assert found["ssh.job_cost"]["value"] > found["ssh.rtt"]["value"]
    assert checks_of(doc, "bridge")["bridge.config"]["status"] == "ok"


def test_health_of_a_changed_host_key_then_a_stopped_server(
    deployment: Deployment, tmp_path: Path
) -> None:
    # A server of our own: its key changes for real (regenerated, SIGHUP), then it stops.
    sshd = sshd_or_skip(tmp_path / "sshd", deployment.site_config)
    try:
        home = tmp_path / "bridge"
        home.mkdir()
        assert cli(home, "setup", "bridge-node").returncode == 0
        key = ak.parse_public_key((home / ".ssh/mint_bridge_ed25519.pub").read_text(), "pub")
        command = ak.forced_command(MINT_BRIDGE, str(deployment.site_config))
        sshd.authorize(ak.key_line(key, command, "127.0.0.1"))
        add = cli(
            home,
            "setup",
            "add-site",
            "s",
            "--ssh",
            f"127.0.0.1:{sshd.port}",
            "--fingerprint",
            fingerprint_of(sshd.host_key.with_suffix(".pub")),
        )
        assert add.returncode == 0, add.stderr
        code, doc = health_json(home, "--site", "s")
        assert code == 0, doc

        old = fingerprint_of(sshd.host_key.with_suffix(".pub"))
        sshd.host_key.unlink()
        sshd.host_key.with_suffix(".pub").unlink()
        keygen(sshd.host_key, "reinstalled")
        new = fingerprint_of(sshd.host_key.with_suffix(".pub"))
        sshd.proc.send_signal(signal.SIGHUP)  # sshd re-executes itself and reads the new key
        _wait_for_key(sshd.port, new)
        code, doc = health_json(home, "--site", "s")
        assert code == 2
        key_check = checks_of(doc, "s")["ssh.host_key"]
        assert key_check["status"] == "fail"
        assert key_check["value"] == new != old
        assert "mint-bridge setup pin-host-key s --fingerprint SHA256:..." in key_check["fix"]
        assert checks_of(doc, "s")["ssh.hello"]["status"] == "unknown"

        sshd.stop()
        code, doc = health_json(home, "--site", "s")
        assert code == 2
        tcp = checks_of(doc, "s")["ssh.tcp"]
        assert tcp["status"] == "fail"
        assert tcp["fix"].startswith(f"nothing listens on 127.0.0.1:{sshd.port}")
        assert "sshd is running" in tcp["fix"]
        table = cli(home, "health", "--site", "s")
        assert table.returncode == 2
        assert "FAIL" in table.stdout and "fix: nothing listens" in table.stdout
    finally:
        sshd.stop()


def _wait_for_key(port: int, fingerprint: str) -> None:
    """Until the restarted sshd offers the new key (bounded: about 10 s)."""
    connect = host_keys.tcp_socket("127.0.0.1", port, 2.0)
    for _ in range(100):
        with contextlib.suppress(Exception):
            key = host_keys.fetch_key(connect, "ssh-ed25519", 2.0)
            if key is not None and key.fingerprint == fingerprint:
                return
        threading.Event().wait(0.1)
    raise AssertionError("sshd did not pick up its new host key")


class SilentListener:
    """Accepts TCP connections and never sends a byte: a hung site."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.held: list[socket.socket] = []
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                conn, _ = self.sock.accept()
                self.held.append(conn)

    def close(self) -> None:
        self.sock.close()
        for conn in self.held:
            conn.close()


def test_all_sites_finish_within_the_timeout_when_one_hangs(
    deployment: Deployment, tmp_path: Path
) -> None:
    listener = SilentListener()
    try:
        config = tmp_path / "bridge.toml"
        config.write_text(
            deployment.bridge_config.read_text()
            + f'\n[sites.hung]\nhost = "127.0.0.1"\nport = {listener.port}\n'
            # A connect timeout far beyond the health timeout: only the deadline can end it.
            + f'connect_timeout = 3600\nknown_hosts = "{tmp_path / "none"}"\n'
        )
        # The subprocess bound is the test's only clock: without the deadline it would take
        # an hour; with it the run ends after about --timeout seconds.
        code, doc = health_json(
            deployment.bridge_home, "--all", "--config", str(config), "--timeout", "3", timeout=60
        )
        assert code == 2
        assert doc["targets"] == {"bridge": "ok", "rme-u-tokyo": "ok", "hung": "fail"}
        hung = [c for c in doc["checks"] if c["target"] == "hung"]
        assert [c["check"] for c in hung[:2]] == ["ssh.dns", "ssh.tcp"]
        assert hung[1]["status"] == "ok"  # it accepts connections...
        assert hung[2]["status"] == "fail"  # ... and never answers the handshake
        assert hung[2]["check"] == "ssh.host_key"
        # Which fires first (paramiko's handshake timeout or the run's deadline) may vary;
        # either way the step fails with a fix, and the later steps are not reached.
        assert "handshake" in hung[2]["message"] or "no answer within" in hung[2]["message"]
        assert hung[2]["fix"]
    finally:
        listener.close()


# --- health of a site with the OpenSSH client -----------------------------------------------------


@dataclass
class OpenSshSite:
    home: Path
    control_dir: Path  # the default one, under the (short) HOME
    port: int

    def health(self) -> tuple[int, dict[str, Any]]:
        return health_json(self.home, "--site", "rme-os")


OPENSSH_CHECKS = ["ssh.openssh.binary", "ssh.openssh.control_dir", "ssh.openssh.hello"]


@pytest.fixture
def openssh_site(deployment: Deployment) -> Iterator[OpenSshSite]:
    """The bridge node's HOME, copied to a short path (the default control_dir must fit a unix
    socket path), with site ``rme-os`` added by ``setup add-site --client openssh``."""
    home = Path(tempfile.mkdtemp(prefix="mb-cm-"))
    control_dir = home / ".local/state/mint-bridge/ssh"
    try:
        shutil.copytree(deployment.bridge_home, home, dirs_exist_ok=True)
        done = cli(
            home,
            "setup",
            "add-site",
            "rme-os",
            "--ssh",
            f"127.0.0.1:{deployment.sshd.port}",
            "--fingerprint",
            fingerprint_of(deployment.sshd.host_key.with_suffix(".pub")),
            "--client",
            "openssh",
        )
        assert done.returncode == 0, done.stderr
        assert 'client = "openssh"' in (home / ".config/mint-bridge/bridge.toml").read_text()
        yield OpenSshSite(home, control_dir, deployment.sshd.port)
    finally:
        stop_ssh_masters(control_dir)
        shutil.rmtree(home, ignore_errors=True)


def test_health_of_a_site_with_the_openssh_client(
    openssh_site: OpenSshSite, tmp_path: Path
) -> None:
    code, doc = openssh_site.health()
    assert code == 0, doc
    found = checks_of(doc, "rme-os")
    assert list(found)[-3:] == OPENSSH_CHECKS
    assert list(found)[:6] == [
        "ssh.dns", "ssh.tcp", "ssh.host_key", "ssh.auth", "ssh.hello", "ssh.rtt",
    ]  # fmt: skip
    assert all(c["status"] == "ok" for c in found.values())
    assert found["ssh.openssh.binary"]["value"].startswith("OpenSSH_")
    assert found["ssh.openssh.control_dir"]["value"] == str(openssh_site.control_dir)
    assert "does not exist yet" in found["ssh.openssh.control_dir"]["message"]
    hello = found["ssh.openssh.hello"]
    assert hello["value"] == "mint-bridge 0.1.0, commands (1): example"
    # The client made the directory private, and the check left no connection behind.
    assert stat.S_IMODE(openssh_site.control_dir.stat().st_mode) == 0o700
    assert ssh_masters(openssh_site.control_dir) == []

    # A job leaves its shared connection open; the next check rides it.
    run = subprocess.run(
        [
            sys.executable, "-m", "bridge.cli", "run", "--site", "rme-os", "--command", "example",
            "-p", "message=over-openssh", "-o", str(tmp_path),
        ],
        capture_output=True, text=True, timeout=120, check=False,
        env=dict(os.environ, HOME=str(openssh_site.home)),
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert (tmp_path / "result.txt").read_text() == "over-openssh\n"
    assert len(ssh_masters(openssh_site.control_dir)) == 1
    code, doc = openssh_site.health()
    assert code == 0, doc
    found = checks_of(doc, "rme-os")
    assert found["ssh.openssh.control_dir"]["message"] == "0700, ours; control sockets: 1"
    assert found["ssh.openssh.hello"]["status"] == "ok"


def test_openssh_failures_name_their_fix(openssh_site: OpenSshSite, tmp_path: Path) -> None:
    # OpenSSH refuses an option paramiko ignores: only the OpenSSH check fails.
    ssh_config = openssh_site.home / ".ssh/config"
    ssh_config.write_text("Host *\n    NoSuchOption yes\n")
    code, doc = openssh_site.health()
    assert code == 2
    found = checks_of(doc, "rme-os")
    assert [n for n, c in found.items() if c["status"] != "ok"] == ["ssh.openssh.hello"]
    hello = found["ssh.openssh.hello"]
    assert hello["status"] == "fail"
    assert "Bad configuration option" in hello["message"]
    assert hello["fix"] == f"OpenSSH refuses the SSH config: see `ssh -G -F {ssh_config} 127.0.0.1`"
    ssh_config.unlink()

    # The site's host key changed: the pin check says how to re-pin for this client.
    known = openssh_site.home / ".config/mint-bridge/known_hosts"
    impostor = tmp_path / "impostor"
    keygen(impostor, "impostor")
    key_type, key = impostor.with_suffix(".pub").read_text().split()[:2]
    port = openssh_site.port
    known.write_text(f"[127.0.0.1]:{port} {key_type} {key}\n")
    code, doc = openssh_site.health()
    assert code == 2
    found = checks_of(doc, "rme-os")
    assert found["ssh.host_key"]["status"] == "fail"
    assert found["ssh.host_key"]["fix"].endswith(
        "mint-bridge setup pin-host-key rme-os --fingerprint SHA256:..."
    )
    assert found["ssh.openssh.hello"]["status"] == "unknown"
    assert found["ssh.openssh.hello"]["message"].startswith(
        "not checked: the host key is not trusted"
    )


def test_openssh_site_through_a_jump_host(
    openssh_site: OpenSshSite, deployment: Deployment, tmp_path: Path
) -> None:
    # OpenSSH gives a ProxyJump's own ssh none of our -o options: the jump's key is checked
    # with the pin that setup wrote into the jump's Host block.
    jump = sshd_or_skip(tmp_path / "jump", deployment.site_config)
    try:
        public = Path(str(deployment.key) + ".pub").read_text().strip()
        jump.authorize(
            f'restrict,port-forwarding,permitopen="127.0.0.1:{deployment.sshd.port}",'
            f'command="/bin/false",from="127.0.0.1" {public}'
        )
        done = cli(
            openssh_site.home, "setup", "add-site", "rme-os", "--force",
            "--ssh", f"127.0.0.1:{deployment.sshd.port}",
            "--fingerprint", fingerprint_of(deployment.sshd.host_key.with_suffix(".pub")),
            "--jump", f"127.0.0.1:{jump.port}",
            "--jump-fingerprint", fingerprint_of(jump.host_key.with_suffix(".pub")),
            "--client", "openssh",
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        code, doc = openssh_site.health()
        assert code == 0, doc
        assert checks_of(doc, "rme-os")["ssh.openssh.hello"]["status"] == "ok"
        # Without the pin in the jump's block, its ssh has no key to check against.
        ssh_config = openssh_site.home / ".config/mint-bridge/ssh_config"
        lines = ssh_config.read_text().splitlines()
        ssh_config.write_text("\n".join(x for x in lines if "KnownHostsFile" not in x) + "\n")
        code, doc = openssh_site.health()
        assert code == 2
        hello = checks_of(doc, "rme-os")["ssh.openssh.hello"]
        assert hello["status"] == "fail"
        assert hello["fix"].endswith(
            f"--jump 127.0.0.1:{jump.port} --jump-fingerprint SHA256:... --client openssh"
        )
    finally:
        jump.stop()


@pytest.mark.skipif(os.getuid() != 0, reason="giving a directory away needs root")
def test_a_control_dir_of_another_user_fails(openssh_site: OpenSshSite) -> None:
    openssh_site.control_dir.mkdir(mode=0o700, parents=True)
    os.chown(openssh_site.control_dir, 65534, 65534)  # nobody
    code, doc = openssh_site.health()
    assert code == 2
    found = checks_of(doc, "rme-os")
    check = found["ssh.openssh.control_dir"]
    assert check["status"] == "fail"
    assert "belongs to nobody, not to root" in check["message"]
    assert check["fix"] == (
        f"remove {openssh_site.control_dir} (the next connection makes it anew), or point "
        "control_dir of site rme-os at a directory of your own"
    )
    assert found["ssh.openssh.hello"]["status"] == "unknown"
    assert found["ssh.hello"]["status"] == "ok"  # paramiko needs no control socket
    assert ssh_masters(openssh_site.control_dir) == []


class Scripted:
    """An admin at a terminal who answers the confirmation with ``answer``."""

    interactive = True

    def __init__(self, answer: bool) -> None:
        self.answer = answer
        self.lines: list[str] = []
        self.questions: list[str] = []

    def ask(self, question: str, default: str | None = None, hidden: bool = False) -> str:
        raise AssertionError(f"unexpected question: {question}")

    def confirm(self, question: str, default: bool = True) -> bool:
        self.questions.append(question)
        return self.answer

    def echo(self, text: str = "") -> None:
        self.lines.append(text)


def test_interactive_pin_shows_the_fingerprint_and_asks(
    deployment: Deployment, tmp_path: Path
) -> None:
    from bridge.core.errors import HostKeyRejected
    from node_setup.bridge_setup import AddSiteOptions, BridgePaths, add_site

    paths = BridgePaths(
        config=str(tmp_path / "bridge.toml"),
        key=str(deployment.key),
        known_hosts=str(tmp_path / "known_hosts"),
        ssh_config=str(tmp_path / "ssh_config"),
    )
    options = AddSiteOptions("asked", ssh=f"127.0.0.1:{deployment.sshd.port}", paths=paths)
    expected = fingerprint_of(deployment.sshd.host_key.with_suffix(".pub"))
    no = Scripted(False)
    with pytest.raises(HostKeyRejected, match="not confirmed"):
        add_site(options, no)
    assert f"host key of 127.0.0.1:{deployment.sshd.port}: ssh-ed25519 {expected}" in no.lines
    assert no.questions == [
        "Is this exactly the fingerprint the site admin gave you by another channel?"
    ]
    assert not (tmp_path / "known_hosts").exists() and not (tmp_path / "bridge.toml").exists()
    add_site(options, Scripted(True))
    assert (
        (tmp_path / "known_hosts")
        .read_text()
        .startswith(f"[127.0.0.1]:{deployment.sshd.port} ssh-ed25519 ")
    )


def test_site_ping_and_its_schedule(deployment: Deployment) -> None:
    from bridge.client.node_config import load_bridge_config
    from node_setup.health.ping import PingResult, PingSchedule, site_ping

    site = load_bridge_config(str(deployment.bridge_config)).sites["rme-u-tokyo"]
    result = site_ping(site, timeout=30)
    assert result.ok, result.error
    assert result.hello is not None
    assert (result.hello.commands, result.hello.protocol) == (("example",), 1)
    assert result.to_json()["commands"] == ["example"]
    seen: list[tuple[bool | None, bool]] = []

    def changed(old: PingResult | None, new: PingResult) -> None:
        seen.append((old.ok if old else None, new.ok))

    schedule = PingSchedule(lambda name: site_ping(site, 30), ["rme-u-tokyo"], 60, changed)
    schedule.run_once()
    schedule.run_once()
    assert seen == [(None, True)]  # reported once, not on every round


def test_health_watch_keeps_a_state_file(deployment: Deployment, tmp_path: Path) -> None:
    state = tmp_path / "state.json"
    env = dict(os.environ, HOME=str(deployment.bridge_home))
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "node_setup.cli",
            "health",
            "--watch",
            "1",
            "--state-file",
            str(state),
            "--site",
            "rme-u-tokyo",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        doc: dict[str, Any] = {}
        for _ in range(300):  # bounded: about 30 s
            with contextlib.suppress(OSError, ValueError):
                doc = json.loads(state.read_text())
                if doc.get("sites"):
                    break
            threading.Event().wait(0.1)
        assert doc["sites"]["rme-u-tokyo"]["ok"] is True
        assert doc["sites"]["rme-u-tokyo"]["commands"] == ["example"]
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert " rme-u-tokyo: up (0.1.0, " in out


# --- health at the site -------------------------------------------------------------------------


def test_site_side_health_after_setup(deployment: Deployment) -> None:
    code, doc = health_json(deployment.site_home, "--site-side")
    assert code == 0, doc
    found = checks_of(doc, "site")
    assert found["site.config"]["value"] == str(deployment.site_config)
    assert found["site.program.example"]["status"] == "ok"
    assert "site.agent" not in found  # an SSH site has no agent
    assert found["site.login_shell"]["status"] == "ok"  # no ~/.bashrc in the site's HOME


def write_site(tmp_path: Path, work: Path, scheduler: str = "local") -> Path:
    program = tmp_path / "prog.sh"
    program.write_text("#!/bin/sh\nexit 0\n")
    program.chmod(0o755)
    config = tmp_path / "site.toml"
    config.write_text(
        f'[site]\nname = "t"\nwork_base = "{work}"\n'
        f'[commands.x]\nprogram = "{program}"\nscheduler = "{scheduler}"\n'
    )
    return config


def test_a_slow_bashrc_warns_and_the_advice_fixes_it(tmp_path: Path) -> None:
    if os.path.basename(pwd.getpwuid(os.getuid()).pw_shell) != "bash":
        pytest.skip("the account's login shell is not bash")
    (tmp_path / "work").mkdir()
    config = write_site(tmp_path, tmp_path / "work")
    bashrc = tmp_path / ".bashrc"  # HOME is tmp_path
    bashrc.write_text("sleep 0.3\n")
    code, doc = health_json(tmp_path, "--site-side", "--config", str(config))
    shell = checks_of(doc, "site")["site.login_shell"]
    assert (code, shell["status"], shell["unit"]) == (1, "warn", "s")
    assert 0.3 <= shell["value"] < 3
    assert shell["message"].startswith(f"every SSH job waits {shell['value']:g} s for ")
    assert "case $- in *i*) ;; *) return;; esac" in shell["fix"]
    bashrc.write_text("case $- in *i*) ;; *) return;; esac\nsleep 0.3\n")
    code, doc = health_json(tmp_path, "--site-side", "--config", str(config))
    assert (code, checks_of(doc, "site")["site.login_shell"]["status"]) == (0, "ok")


def test_a_site_whose_scheduler_is_missing(tmp_path: Path) -> None:
    (tmp_path / "work").mkdir()
    config = write_site(tmp_path, tmp_path / "work", scheduler="slurm")
    env = dict(os.environ, PATH=str(tmp_path / "empty-bin"))
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "node_setup.cli",
            "health",
            "--site-side",
            "--config",
            str(config),
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )
    doc = json.loads(done.stdout)
    assert done.returncode == 2
    scheduler = checks_of(doc, "site")["site.scheduler.slurm"]
    assert scheduler["status"] == "fail"
    assert scheduler["value"] == "sinfo"
    assert scheduler["fix"].startswith(
        "install the slurm client commands or add their directory to PATH"
    )


@contextlib.contextmanager
def tiny_filesystem(path: Path, options: str) -> Iterator[bool]:
    """A size-limited tmpfs at ``path`` (needs root); yields False where it cannot mount."""
    path.mkdir()
    mount = shutil.which("mount")
    done = subprocess.run(
        [mount or "mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)],
        capture_output=True,
        timeout=30,
        check=False,
    )
    try:
        yield done.returncode == 0
    finally:
        if done.returncode == 0:
            subprocess.run(["umount", str(path)], capture_output=True, timeout=30, check=False)


def _fill(directory: Path) -> None:
    with contextlib.suppress(OSError), open(directory / "filler", "wb") as handle:
        while True:
            handle.write(b"\0" * 65536)
            handle.flush()


def test_a_full_disk_fails(tmp_path: Path) -> None:
    work = tmp_path / "work"
    with tiny_filesystem(work, "size=1m,mode=0700") as mounted:
        config = write_site(tmp_path, work)
        limits = ["--disk-warn", "50%", "--disk-fail", "10%"]
        if not mounted:
            # No tmpfs here (not root): the same verdict from a threshold above the free space.
            limits = ["--disk-warn", "100%", "--disk-fail", "100%"]
        else:
            code, doc = health_json(tmp_path, "--site-side", "--config", str(config), *limits)
            assert checks_of(doc, "site")["site.disk_free"]["status"] == "ok"
            _fill(work)
        code, doc = health_json(tmp_path, "--site-side", "--config", str(config), *limits)
        disk = checks_of(doc, "site")["site.disk_free"]
        assert code == 2
        assert disk["status"] == "fail"
        assert disk["unit"] == "B" and isinstance(disk["value"], int)
        assert "free space in" in disk["fix"]


def test_a_full_inode_table_fails(tmp_path: Path) -> None:
    work = tmp_path / "work"
    with tiny_filesystem(work, "size=4m,nr_inodes=64,mode=0700") as mounted:
        if not mounted:
            pytest.skip("cannot mount a tmpfs here (needs root); the disk test covers thresholds")
        config = write_site(tmp_path, work)
        with contextlib.suppress(OSError):
            for index in range(1000):
                (work / f"f{index}").write_bytes(b"")
        code, doc = health_json(tmp_path, "--site-side", "--config", str(config))
        inodes = checks_of(doc, "site")["site.inodes"]
        assert code == 2
        assert (inodes["status"], inodes["value"], inodes["unit"]) == ("fail", 0, "inodes")


# --- health of the broker -------------------------------------------------------------------------


@dataclass
class BrokerEnv:
    broker: Any  # tests.support.broker.BrokerProcess
    root: Path
    tokens: dict[str, Path]

    def restart_with_certificate(self, name: str, not_after_days: float) -> None:
        """Serve a certificate of the given validity (negative: expired) from now on."""
        self.broker.stop()
        ca, cert, key = make_ca(
            self.root / name,
            not_after_days=not_after_days,
            not_before_days=min(-1.0, not_after_days - 1),
        )
        shutil.copyfile(cert, self.broker.root / "server.pem")
        shutil.copyfile(key, self.broker.root / "server.key")
        self.broker.ca_bundle = ca
        if not_after_days > 0:
            self.broker.start()
            return
        # The fixture's readiness check verifies the certificate; an expired one never passes.
        self.broker.proc = subprocess.Popen(
            [sys.executable, "-m", "broker.cli", "serve", "--config", str(self.broker.config_path)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        for _ in range(300):  # bounded: about 30 s
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.broker.port), timeout=1),
            ):
                return
            threading.Event().wait(0.1)
        raise AssertionError("the broker did not listen again")

    def health(self, scope: str, *args: str) -> tuple[int, dict[str, Any]]:
        return health_json(
            self.root,
            "--broker",
            "--broker-url",
            self.broker.url,
            "--token-file",
            str(self.tokens[scope]),
            "--ca-file",
            str(self.broker.ca_bundle),
            *args,
        )

    def client(self, method: str, path: str, scope: str = "client", **kw: Any) -> Any:
        import requests

        token = self.tokens[scope].read_text().strip()
        answer = requests.request(
            method,
            self.broker.url + path,
            headers={"Authorization": f"Bearer {token}"},
            verify=str(self.broker.ca_bundle),
            timeout=30,
            **kw,
        )
        assert answer.status_code < 300, answer.text
        return answer


@pytest.fixture(scope="module")
def broker_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerEnv]:
    from tests.support.broker import BrokerUnavailable, start_broker

    root = tmp_path_factory.mktemp("broker-health")
    try:
        broker = start_broker(root / "broker")
    except (BrokerUnavailable, OSError) as exc:
        unavailable(f"cannot start the broker: {exc}")
        raise
    try:
        tokens: dict[str, Path] = {}
        for scope, subject in (("admin", None), ("client", "ssh-node01"), ("site", "rme-pull")):
            path = root / f"{scope}.token"
            path.write_text(broker.token(scope, subject) + "\n")
            path.chmod(0o600)
            tokens[scope] = path
        env = BrokerEnv(broker, root, tokens)
        env.restart_with_certificate("long-lived", 90)
        yield env
    finally:
        broker.stop()


def test_broker_health_with_admin_client_and_site_tokens(broker_env: BrokerEnv) -> None:
    job = broker_env.client(
        "POST",
        "/api/v1/jobs",
        json={"site": "rme-pull", "command": "x", "params": {}, "inputs": []},
    )
    broker_env.client("POST", f"/api/v1/jobs/{job.json()['job_id']}/submit")

    code, doc = broker_env.health("admin")
    found = checks_of(doc, "broker")
    assert code == 0, doc
    assert [
        found[n]["status"]
        for n in (
            "broker.tls",
            "broker.cert_expiry",
            "broker.reachable",
            "broker.clock_skew",
            "broker.token",
        )
    ] == ["ok"] * 5
    assert found["broker.token"]["value"] == "admin"
    assert found["broker.cert_expiry"]["value"] > 80
    queue = found["broker.queue.rme-pull"]
    assert queue["status"] == "ok" and queue["unit"] == "s"
    assert queue["message"].startswith("1 queued")

    code, doc = broker_env.health("client", "--scope", "client")
    assert code == 0, doc
    found = checks_of(doc, "broker")
    assert found["broker.token"]["value"] == "client"
    assert found["broker.queue.rme-pull"]["message"].startswith("1 queued")

    code, doc = broker_env.health("site", "--scope", "site")
    assert code == 0, doc
    assert checks_of(doc, "broker")["broker.token"]["value"] == "site"

    code, doc = broker_env.health("site", "--scope", "client")
    assert code == 2
    token = checks_of(doc, "broker")["broker.token"]
    assert (token["status"], token["value"]) == ("fail", "site")
    assert "use a client token" in token["fix"]


def test_broker_site_of_the_bridge_config(broker_env: BrokerEnv, tmp_path: Path) -> None:
    home = tmp_path / "bridge"
    home.mkdir()
    added = cli(
        home,
        "setup",
        "add-site",
        "rme-pull",
        "--broker",
        broker_env.broker.url,
        "--token-file",
        str(broker_env.tokens["client"]),
        "--ca-bundle",
        str(broker_env.broker.ca_bundle),
    )
    assert added.returncode == 0, added.stderr
    code, doc = health_json(home, "--site", "rme-pull")
    assert code == 0, doc
    found = checks_of(doc, "rme-pull")
    assert found["broker.token"]["value"] == "client"
    assert "broker.queue.rme-pull" in found


def test_pull_site_side_checks_its_agent_and_broker(broker_env: BrokerEnv, tmp_path: Path) -> None:
    home = tmp_path / "site"
    home.mkdir()
    token = broker_env.tokens["site"].read_text().strip()
    setup = cli(
        home,
        "setup",
        "site",
        "--site-id",
        "rme-pull",
        "--method",
        "broker",
        "--scheduler",
        "local",
        "--broker-url",
        broker_env.broker.url,
        "--token-stdin",
        "--ca-bundle",
        str(broker_env.broker.ca_bundle),
        "--work-base",
        str(tmp_path / "w"),
        "--unit-dir",
        str(tmp_path / "units"),
        "--yes",
        stdin=token + "\n",
    )
    assert setup.returncode == 0, setup.stderr
    assert token not in setup.stdout + setup.stderr
    code, doc = health_json(home, "--site-side")
    assert code == 2
    assert checks_of(doc, "site")["site.agent"]["status"] == "fail"
    assert checks_of(doc, "broker")["broker.token"]["value"] == "site"

    config = home / ".config/mint-bridge/site.toml"
    agent = subprocess.Popen(
        [sys.executable, "-m", "bridge.site.agent", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=dict(os.environ, HOME=str(home)),
    )
    try:
        code, doc = health_json(home, "--site-side")
        assert code == 0, doc
        assert checks_of(doc, "site")["site.agent"]["value"] == agent.pid
        seen = None
        for _ in range(100):  # bounded: the agent's first claim arrives within a few seconds
            _, admin = broker_env.health("admin")
            seen = checks_of(admin, "broker").get("broker.agent.rme-pull")
            if seen is not None:
                break
            threading.Event().wait(0.2)
        assert seen is not None and seen["status"] == "ok"
    finally:
        agent.send_signal(signal.SIGTERM)
        agent.wait(timeout=30)


@pytest.mark.parametrize(
    ("days", "code", "expiry", "tls"),
    [(20, 1, "warn", "ok"), (3, 2, "fail", "ok"), (-2, 2, "fail", "fail")],
)
def test_broker_certificate_expiry(
    broker_env: BrokerEnv, days: float, code: int, expiry: str, tls: str
) -> None:
    try:
        broker_env.restart_with_certificate(f"days{days}", days)
        found_code, doc = broker_env.health("admin")
        found = checks_of(doc, "broker")
        assert found_code == code, doc
        assert found["broker.cert_expiry"]["status"] == expiry
        assert (found["broker.cert_expiry"]["value"] < 0) == (days < 0)
        assert found["broker.tls"]["status"] == tls
        if tls == "fail":
            assert "expired" in found["broker.tls"]["message"]
            assert found["broker.token"]["status"] == "unknown"  # the token was not sent
        else:
            assert "renew the certificate" in found["broker.cert_expiry"]["fix"]
    finally:
        broker_env.restart_with_certificate("long-lived-again", 90)
