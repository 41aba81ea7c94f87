"""The OpenSSH client backend's pure parts: its argv, its config keys, and how ssh's messages
(captured from OpenSSH 9.2p1, Debian 12) become our errors."""

from __future__ import annotations

import os
import subprocess
import textwrap
from dataclasses import replace
from pathlib import Path

import pytest

from bridge.client.node_config import SshSite, load_bridge_config
from bridge.client.transports.base import PROTOCOL_COMMAND
from bridge.client.transports.openssh import (
    OpenSshChannel,
    classify_failure,
    control_socket_name,
    openssh_argv,
    private_control_dir,
)
from bridge.core.errors import (
    AuthenticationFailed,
    ConfigError,
    HostKeyRejected,
    SiteError,
    SiteUnreachable,
    TransportError,
)

SITE = SshSite(
    name="rme", host="rme-u-tokyo", user="mint", port=2222, identity_file="/k/id",
    known_hosts="/k/known_hosts", ssh_config="/nonexistent/config", client="openssh",
    connection_persist=90.5, control_dir="/run/cm",
)  # fmt: skip


def options(argv: list[str]) -> dict[str, str]:
    pairs = [argv[i + 1] for i, arg in enumerate(argv) if arg == "-o"]
    return dict(pair.split("=", 1) for pair in pairs)


def test_argv_pins_host_keys_and_allows_nothing_else() -> None:
    argv = openssh_argv(SITE, "/run/cm")
    opts = options(argv)
    assert argv[0] == "ssh"
    assert argv[-3:] == ["--", "rme-u-tokyo", PROTOCOL_COMMAND]
    assert opts["StrictHostKeyChecking"] == "yes"
    assert opts["UserKnownHostsFile"] == "/k/known_hosts"
    assert opts["GlobalKnownHostsFile"] == "none"
    assert opts["UpdateHostKeys"] == "no"
    assert opts["BatchMode"] == "yes"
    for off in ("ForwardAgent", "ForwardX11", "PermitLocalCommand", "RequestTTY"):
        assert opts[off] == "no"
    assert opts["ClearAllForwardings"] == "yes"
    assert opts["IdentityAgent"] == "none"
    assert argv[argv.index("-i") : argv.index("-i") + 2] == ["-i", "/k/id"]
    assert opts["IdentitiesOnly"] == "yes"
    assert argv[argv.index("-l") : argv.index("-l") + 2] == ["-l", "mint"]
    assert argv[argv.index("-p") : argv.index("-p") + 2] == ["-p", "2222"]
    # A missing SSH config reads as empty, as with paramiko: the system-wide file is not read.
    assert argv[argv.index("-F") + 1] == os.devnull


def test_argv_shares_the_connection_through_the_control_dir() -> None:
    opts = options(openssh_argv(SITE, "/run/cm"))
    assert opts["ControlMaster"] == "auto"
    assert opts["ControlPath"] == f"/run/cm/{control_socket_name(SITE)}"
    assert opts["ControlPersist"] == "91"
    assert opts["Ciphers"].startswith("^aes128-gcm@openssh.com")


def test_sites_never_share_a_connection_with_another_key_or_config(tmp_path: Path) -> None:
    names = {
        control_socket_name(site)
        for site in (
            SITE,
            replace(SITE, name="rme-creep"),  # same account, another forced command
            replace(SITE, identity_file="/k/other"),
            replace(SITE, known_hosts="/k/other_known_hosts"),
            replace(SITE, user="other"),
        )
    }
    assert len(names) == 5
    assert all(len(name) == 24 for name in names)
    assert control_socket_name(replace(SITE)) == control_socket_name(SITE)
    config = tmp_path / "config"
    config.write_text("Host rme-u-tokyo\n  HostName 192.0.2.7\n")
    site = replace(SITE, ssh_config=str(config))
    before = control_socket_name(site)
    os.utime(config, ns=(1, 1))
    assert control_socket_name(site) != before, "an edited SSH config opens a new connection"


def test_argv_without_sharing_overrides_the_users_ssh_config() -> None:
    opts = options(openssh_argv(SITE, None))
    assert opts["ControlMaster"] == "no" and opts["ControlPath"] == "none"
    assert "ControlPersist" not in opts


def test_argv_uses_an_existing_ssh_config(tmp_path: Path) -> None:
    config = tmp_path / "config"
    config.write_text("Host rme-u-tokyo\n  HostName 192.0.2.7\n")
    site = SshSite(name="rme", host="rme-u-tokyo", ssh_config=str(config), client="openssh")
    argv = openssh_argv(site, None)
    assert argv[argv.index("-F") + 1] == str(config)
    assert "-l" not in argv and "-p" not in argv and "-i" not in argv


# Messages as OpenSSH 9.2p1 prints them (captured on this project's test sshd; LogLevel=INFO
# adds banners to them, nothing else).
CHANGED = [
    "@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@",
    "@    WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED!     @",
    "Host key verification failed.",
]
UNKNOWN = [
    "No ED25519 host key is known for [127.0.0.1]:40227 and you have requested strict checking.",
    "Host key verification failed.",
]
DENIED = ["root@127.0.0.1: Permission denied (publickey)."]
REFUSED = ["ssh: connect to host 127.0.0.1 port 1: Connection refused"]
DNS = ["ssh: Could not resolve hostname nowhere.invalid: Name or service not known"]
BAD_OPTION = [
    "/root/.ssh/config: line 3: Bad configuration option: frobnicate",
    "/root/.ssh/config: terminating, 1 bad configuration options",
]
DROPPED = ["Connection to 127.0.0.1 closed by remote host."]


@pytest.mark.parametrize(
    ("code", "stderr", "kind", "words"),
    [
        (255, CHANGED, HostKeyRejected, "not the one pinned in /k/known_hosts"),
        (255, UNKNOWN, HostKeyRejected, "mint-bridge setup pin-host-key rme --fingerprint"),
        (255, DENIED, AuthenticationFailed, "refused the key /k/id"),
        (255, REFUSED, SiteUnreachable, "Connection refused"),
        (255, DNS, SiteUnreachable, "Could not resolve hostname"),
        (255, BAD_OPTION, ConfigError, "Bad configuration option: frobnicate"),
        (255, DROPPED, SiteUnreachable, "closed by remote host"),
        (255, [], SiteUnreachable, "connection to rme-u-tokyo:2222 ended with no message"),
        (77, ["mint-bridge: this key only runs mint-bridge jobs"], SiteError, "exit 77"),
    ],
)
def test_failures_become_our_errors(
    code: int, stderr: list[str], kind: type[Exception], words: str
) -> None:
    error = classify_failure(SITE, code, stderr)
    assert type(error) is kind
    assert words in str(error)
    assert "\n" not in str(error)


def test_transient_only_when_the_network_is_to_blame() -> None:
    assert classify_failure(SITE, 255, REFUSED).transient  # type: ignore[union-attr]
    assert not classify_failure(SITE, 255, UNKNOWN).transient  # type: ignore[union-attr]
    assert not classify_failure(SITE, 255, DENIED).transient  # type: ignore[union-attr]
    # The site entry killed mid-job: ssh exits 255 and says nothing; the job is re-attached.
    assert classify_failure(SITE, 255, []).transient  # type: ignore[union-attr]


def test_a_plain_end_of_stream_is_left_to_the_protocol() -> None:
    assert classify_failure(SITE, 0, []) is None
    assert classify_failure(SITE, -9, ["killed"]) is None


def test_control_dir_is_made_private(tmp_path: Path) -> None:
    loose = tmp_path / "cm"
    loose.mkdir(mode=0o777)
    loose.chmod(0o777)
    assert private_control_dir(str(loose)) == str(loose)
    assert loose.stat().st_mode & 0o777 == 0o700
    fresh = tmp_path / "new" / "cm"
    private_control_dir(str(fresh))
    assert fresh.stat().st_mode & 0o777 == 0o700


def test_control_dir_that_is_a_symlink_is_refused(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    with pytest.raises(ConfigError, match="not a directory owned by this user"):
        private_control_dir(str(tmp_path / "link"))


# --- config keys ---------------------------------------------------------------------------


def load(tmp_path: Path, body: str) -> SshSite:
    path = tmp_path / "bridge.toml"
    path.write_text("[sites.s]\n" + textwrap.dedent(body))
    site = load_bridge_config(str(path)).site("s")
    assert isinstance(site, SshSite)
    return site


def test_openssh_keys_load_with_defaults(tmp_path: Path) -> None:
    site = load(tmp_path, 'host = "h"\nclient = "openssh"\n')
    assert (site.client, site.share_connection, site.connection_persist) == ("openssh", True, 600)
    assert site.control_dir == os.path.expanduser("~/.local/state/mint-bridge/ssh")
    site = load(tmp_path, 'host = "h"\nclient = "openssh"\nconnection_persist = "2m"\n'
                'share_connection = false\ncontrol_dir = "/run/mb"\n')  # fmt: skip
    assert (site.share_connection, site.connection_persist, site.control_dir) == (
        False, 120.0, "/run/mb",
    )  # fmt: skip


@pytest.mark.parametrize(
    ("body", "key", "words"),
    [
        ('host = "h"\nclient = "putty"\n', "client", "use 'paramiko' or 'openssh'"),
        ('host = "h"\nclient = "paramiko"\nshare_connection = true\n', "share_connection",
         "only with client"),
        ('host = "h"\nclient = "openssh"\ncontrol_dir = "rel/dir"\n', "control_dir", "absolute"),
        (f'host = "h"\nclient = "openssh"\ncontrol_dir = "/{"d" * 70}"\n', "control_dir",
         "at most 64 bytes"),
        ('host = "h"\nclient = "openssh"\nconnection_persist = "soon"\n', "connection_persist",
         ""),
        ('host = "-oProxyCommand=touch /tmp/x"\n', "host", "not a host name"),
        ('host = "mint@h"\n', "host", "put the user in 'user'"),
        ('host = "h other"\n', "host", "not a host name"),
        ('host = "h"\nuser = "-l root"\n', "user", "plain user name"),
    ],
)  # fmt: skip
def test_bad_keys_name_the_key(tmp_path: Path, body: str, key: str, words: str) -> None:
    with pytest.raises(ConfigError, match=f"sites.s.{key}") as info:
        load(tmp_path, body)
    assert words in str(info.value)


# --- the channel over a child that stands in for ssh --------------------------------------------


def child(script: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        ["sh", "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )  # fmt: skip


def test_a_silent_site_trips_the_heartbeat_timeout() -> None:
    channel = OpenSshChannel(child("sleep 30"), SITE, timeout=0.2)
    with pytest.raises(TransportError, match="heartbeat timeout") as info:
        channel.recv(1024)
    assert info.value.transient
    assert channel.proc.poll() is None, "the timeout ended the wait, not the child's exit"
    channel.proc.kill()
    channel.close()


def test_ssh_failure_at_end_of_stream_becomes_our_error() -> None:
    proc = child('echo "mint@rme: Permission denied (publickey)." >&2; exit 255')
    channel = OpenSshChannel(proc, SITE, timeout=10)
    with pytest.raises(AuthenticationFailed, match="refused the key /k/id"):
        channel.recv(1024)
    channel.close()


def test_data_then_a_plain_end_of_stream() -> None:
    channel = OpenSshChannel(child("printf abc; cat >/dev/null"), SITE, timeout=10)
    assert channel.recv(1024) == b"abc"
    channel.send_all(b"ignored")
    channel.close()
    assert channel.proc.returncode == 0


def test_a_deep_home_falls_back_to_a_short_control_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    deep = "/home/" + "d" * 80
    monkeypatch.setenv("HOME", deep)
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    site = load(tmp_path, 'host = "h"\nclient = "openssh"\n')
    assert site.control_dir == f"/tmp/mint-bridge-ssh-{os.getuid()}"
    monkeypatch.setenv("XDG_RUNTIME_DIR", "/run/user/1000")
    assert load(tmp_path, 'host = "h"\nclient = "openssh"\n').control_dir == (
        "/run/user/1000/mint-bridge-ssh"
    )
    monkeypatch.setenv("HOME", "/home/mint")
    assert load(tmp_path, 'host = "h"\nclient = "openssh"\n').control_dir == (
        "/home/mint/.local/state/mint-bridge/ssh"
    )


def test_a_control_dir_made_by_another_user_is_refused(tmp_path: Path) -> None:
    if os.getuid() != 0:
        pytest.skip("needs root to give a directory to another user")
    planted = tmp_path / "planted"
    planted.mkdir(mode=0o700)
    os.chown(planted, 65534, 65534)
    with pytest.raises(ConfigError, match="not a directory owned by this user"):
        private_control_dir(str(planted))
