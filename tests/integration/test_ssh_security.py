"""What MInt's key cannot do, and what the bridge refuses: host keys, shells, hostile streams."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from bridge.client.node_config import SshSite
from bridge.client.transports.paramiko_ssh import SshConnector
from bridge.core.errors import ExitCode
from bridge.core.job import new_job_id
from bridge.core.protocol import KIND_FILE, PROTOCOL_VERSION, FrameReader, FrameWriter
from tests.integration.conftest import SiteEnv, run_bridge
from tests.support.sites import PROGRAMS
from tests.support.sshd import Sshd, keygen


def write_bridge_config(
    path: Path, sshd: Sshd, known_hosts: Path, host: str = "site", client: str = "paramiko"
) -> Path:
    # paramiko's own messages are asserted here; tests/integration/test_openssh_client.py has
    # the OpenSSH client's.
    path.write_text(
        f"""
[sites.s]
host = "{host}"
client = "{client}"
ssh_config = "{sshd.ssh_config}"
known_hosts = "{known_hosts}"
identity_file = "{sshd.client_key}"
reconnect_attempts = 2
"""
    )
    return path


# --- the OpenSSH client with MInt's key ------------------------------------------------------


def test_openssh_client_cannot_run_other_commands(sshd: Sshd) -> None:
    proc = subprocess.run(sshd.ssh_argv("cat", "/etc/passwd"), capture_output=True, timeout=30)
    assert proc.returncode == 77
    assert b"root:" not in proc.stdout
    assert b"refused command 'cat /etc/passwd'" in proc.stderr


def test_openssh_client_gets_no_shell(sshd: Sshd) -> None:
    proc = subprocess.run(
        sshd.ssh_argv(options=("-T",)), input=b"id\n", capture_output=True, timeout=30
    )
    assert proc.returncode == 77
    assert b"uid=" not in proc.stdout
    assert b"interactive shells are not allowed" in proc.stderr


def test_scp_with_the_key_writes_nothing(sshd: Sshd, tmp_path: Path) -> None:
    src = tmp_path / "f.txt"
    src.write_text("payload")
    target = tmp_path / "copied.txt"
    argv = ["scp", "-F", "/dev/null", "-i", str(sshd.client_key), "-P", str(sshd.port)]
    argv += ["-o", f"UserKnownHostsFile={sshd.known_hosts}", "-o", "BatchMode=yes"]
    proc = subprocess.run([*argv, str(src), f"127.0.0.1:{target}"], capture_output=True, timeout=30)
    assert proc.returncode != 0
    assert not target.exists()


def test_key_is_refused_from_another_address(sshd: Sshd) -> None:
    proc = subprocess.run(
        sshd.ssh_argv("mint-bridge-protocol", "1", options=("-b", "127.0.0.2")),
        capture_output=True,
        timeout=30,
    )
    assert proc.returncode == 255
    assert b"Permission denied" in proc.stderr


def test_site_logs_what_it_refused(sshd: Sshd, site_env: SiteEnv) -> None:
    subprocess.run(sshd.ssh_argv("uname", "-a"), capture_output=True, timeout=30)
    log = (site_env.root / "site.log").read_text()
    assert "refused: this key only runs mint-bridge jobs; refused command 'uname -a'" in log


# --- host key pinning ---------------------------------------------------------------------


def test_changed_host_key_is_refused(sshd: Sshd, tmp_path: Path) -> None:
    other = tmp_path / "other_host"
    keygen(other, "impostor")
    kind, key = other.with_suffix(".pub").read_text().split()[:2]
    known = tmp_path / "known_hosts"
    known.write_text(f"[127.0.0.1]:{sshd.port} {kind} {key}\n")
    config = write_bridge_config(tmp_path / "bridge.toml", sshd, known)
    proc = run_bridge(config, "--site", "s", "--command", "checksum", cwd=tmp_path)
    assert proc.returncode == ExitCode.HOST_KEY_REJECTED
    message = proc.stderr.decode()
    assert "does not match the key pinned in" in message
    assert "mint-bridge setup pin-host-key s --fingerprint SHA256:..." in message
    assert message.count("\n") == 2  # the job id line, then one line naming the fix
    assert message.startswith("mint-bridge: job ")


def test_unknown_host_key_is_refused(sshd: Sshd, tmp_path: Path) -> None:
    known = tmp_path / "empty_known_hosts"
    known.write_text("")
    config = write_bridge_config(tmp_path / "bridge.toml", sshd, known)
    proc = run_bridge(config, "--site", "s", "--command", "checksum", cwd=tmp_path)
    assert proc.returncode == ExitCode.HOST_KEY_REJECTED
    assert b"is not in" in proc.stderr and b"its host key cannot be verified" in proc.stderr


def test_unauthorized_key_is_refused(sshd: Sshd, tmp_path: Path) -> None:
    stranger = tmp_path / "stranger"
    keygen(stranger)
    config = tmp_path / "bridge.toml"
    write_bridge_config(config, sshd, sshd.known_hosts)
    text = config.read_text().replace(str(sshd.client_key), str(stranger))
    config.write_text(text)
    proc = run_bridge(config, "--site", "s", "--command", "checksum", cwd=tmp_path)
    assert proc.returncode == ExitCode.AUTH_FAILED
    assert b"refused the key" in proc.stderr


def test_unreachable_site(sshd: Sshd, tmp_path: Path) -> None:
    config = tmp_path / "bridge.toml"
    config.write_text(
        f"""
[sites.down]
host = "127.0.0.1"
port = 1
ssh_config = "/dev/null"
known_hosts = "{sshd.known_hosts}"
reconnect_attempts = 1
"""
    )
    proc = run_bridge(config, "--site", "down", "--command", "checksum", cwd=tmp_path)
    assert proc.returncode == ExitCode.SITE_UNREACHABLE
    assert b"cannot reach 127.0.0.1:1" in proc.stderr


# --- ~/.ssh/config: ProxyCommand and ProxyJump ----------------------------------------------


def test_proxy_command_from_ssh_config(sshd: Sshd, tmp_path: Path) -> None:
    marker = tmp_path / "relay.log"
    ssh_config = tmp_path / "ssh_config"
    ssh_config.write_text(
        f"Host viaproxy\n  HostName 127.0.0.1\n  Port {sshd.port}\n"
        f"  ProxyCommand {sys.executable} {PROGRAMS / 'relay.py'} %h %p {marker}\n"
    )
    config = write_bridge_config(tmp_path / "bridge.toml", sshd, sshd.known_hosts, "viaproxy")
    config.write_text(config.read_text().replace(str(sshd.ssh_config), str(ssh_config)))
    (tmp_path / "in.dat").write_bytes(b"through a proxy")
    proc = run_bridge(config, "--site", "s", "--command", "checksum", "-i", "in.dat", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr.decode()
    assert marker.read_text() == f"relayed to 127.0.0.1:{sshd.port}\n"
    assert "in.dat" in (tmp_path / "sums.txt").read_text()


@pytest.mark.parametrize("client", ["paramiko", "openssh"])
def test_proxy_jump_from_ssh_config(sshd: Sshd, tmp_path: Path, client: str) -> None:
    jump_key = tmp_path / "jump_key"
    keygen(jump_key, "jump")
    pub = jump_key.with_suffix(".pub").read_text().strip()
    sshd.authorize(
        f'restrict,port-forwarding,permitopen="127.0.0.1:{sshd.port}",command="/bin/false" {pub}'
    )
    ssh_config = tmp_path / "ssh_config"
    # OpenSSH starts the jump's ssh with -F and none of our -o options, so the jump's block
    # pins its key itself, as `mint-bridge setup add-site --jump` writes it.
    ssh_config.write_text(
        f"Host jumphost\n  HostName 127.0.0.1\n  Port {sshd.port}\n  IdentityFile {jump_key}\n"
        f"  UserKnownHostsFile {sshd.known_hosts}\n  GlobalKnownHostsFile none\n"
        f"  StrictHostKeyChecking yes\n  BatchMode yes\n\n"
        f"Host behind\n  HostName 127.0.0.1\n  Port {sshd.port}\n  ProxyJump jumphost\n"
    )
    config = write_bridge_config(
        tmp_path / "bridge.toml", sshd, sshd.known_hosts, "behind", client
    )
    config.write_text(config.read_text().replace(str(sshd.ssh_config), str(ssh_config)))
    (tmp_path / "in.dat").write_bytes(b"through a jump host")
    proc = run_bridge(config, "--site", "s", "--command", "checksum", "-i", "in.dat", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr.decode()
    fingerprint = subprocess.run(
        ["ssh-keygen", "-lf", str(jump_key.with_suffix(".pub"))], capture_output=True, text=True
    ).stdout.split()[1]
    assert "Accepted publickey for" in (sshd.root / "sshd.log").read_text()
    assert fingerprint in (sshd.root / "sshd.log").read_text()
    assert "in.dat" in (tmp_path / "sums.txt").read_text()


# --- a hostile or broken bridge speaking the protocol directly ---------------------------------


def raw_channel(sshd: Sshd):  # type: ignore[no-untyped-def]
    site = SshSite(
        name="raw",
        host="site",
        ssh_config=str(sshd.ssh_config),
        known_hosts=str(sshd.known_hosts),
    )
    connection = SshConnector(site).connect()
    channel = connection.open_channel(timeout=30)
    return connection, channel, FrameReader(channel), FrameWriter(channel)


def submit(writer: FrameWriter, inputs: list[dict[str, object]], job_id: str | None = None) -> str:
    job_id = job_id or new_job_id()
    writer.write_json(
        {
            "op": "submit",
            "protocol": PROTOCOL_VERSION,
            "request": {"job_id": job_id, "command": "checksum", "params": {}, "inputs": inputs},
        }
    )
    return job_id


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("../evil", "path separator"),
        ("/etc/passwd", "path separator"),
        ("..", "names a directory"),
        ("a\x00b", "NUL or control character"),
        ("-rf", "starts with '-'"),
    ],
)
def test_hostile_input_names_are_refused(
    sshd: Sshd, site_env: SiteEnv, name: str, message: str
) -> None:
    before = set(os.listdir(site_env.work_base))
    connection, _channel, reader, writer = raw_channel(sshd)
    try:
        submit(writer, [{"name": name, "size": 4}])
        reply = reader.read_json()
    finally:
        connection.close()
    assert reply["error"]["kind"] == "InputRejected"
    assert message in reply["error"]["message"]
    assert set(os.listdir(site_env.work_base)) == before
    assert not (site_env.work_base.parent / "evil").exists()


def test_corrupted_input_is_refused_and_job_never_starts(sshd: Sshd, site_env: SiteEnv) -> None:
    connection, _channel, reader, writer = raw_channel(sshd)
    try:
        job_id = submit(writer, [{"name": "x.dat", "size": 5}])
        assert reader.read_json() == {"ready": True}
        writer.write_json({"file": "x.dat", "size": 5, "mode": 0o644})
        writer.write_frame(KIND_FILE, b"hello")
        writer.write_frame(KIND_FILE, b"")
        writer.write_json({"sha256": "0" * 64})
        reply = reader.read_json()
    finally:
        connection.close()
    assert reply["error"]["kind"] == "TransferCorrupted"
    workdir = site_env.work_base / job_id
    assert sorted(os.listdir(workdir)) == [".mint-bridge"]
    assert not (workdir / ".mint-bridge" / "native_id").exists()


def test_truncated_input_stream_leaves_nothing_started(sshd: Sshd, site_env: SiteEnv) -> None:
    connection, _channel, reader, writer = raw_channel(sshd)
    job_id = submit(writer, [{"name": "x.dat", "size": 1000}])
    assert reader.read_json() == {"ready": True}
    writer.write_json({"file": "x.dat", "size": 1000, "mode": 0o644})
    writer.write_frame(KIND_FILE, b"a" * 100)
    connection.close()  # the bridge dies mid-transfer
    workdir = site_env.work_base / job_id
    import time

    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(
        not n.startswith(".mint-bridge") for n in os.listdir(workdir)
    ):
        time.sleep(0.05)
    time.sleep(0.3)
    assert sorted(os.listdir(workdir)) == [".mint-bridge"]
    assert not (workdir / ".mint-bridge" / "native_id").exists()


def test_protocol_version_mismatch_is_explained(sshd: Sshd) -> None:
    connection, _channel, reader, writer = raw_channel(sshd)
    try:
        writer.write_json({"op": "hello", "protocol": 99})
        reply = reader.read_json()
    finally:
        connection.close()
    assert "install the same mint-bridge version on both ends" in reply["error"]["message"]


def test_hello_lists_commands_without_programs(sshd: Sshd) -> None:
    connection, _channel, reader, writer = raw_channel(sshd)
    try:
        writer.write_json({"op": "hello", "protocol": PROTOCOL_VERSION})
        reply = reader.read_json()
    finally:
        connection.close()
    assert reply["site"] == "test-site"
    names = {c["name"] for c in reply["commands"]}
    assert {"checksum", "fail", "legacy"} <= names
    assert "testprog.py" not in str(reply)  # program paths stay at the site
