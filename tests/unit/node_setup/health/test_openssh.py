"""Health checks of a site with ``client = "openssh"`` that need no server: the ``ssh`` binary
(stand-in scripts on PATH), the control socket directory, and the fix for each failure."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from bridge.client.node_config import SshSite
from bridge.core.errors import (
    AuthenticationFailed,
    BridgeError,
    ConfigError,
    HostKeyRejected,
    SiteError,
    SiteUnreachable,
)
from node_setup.health import openssh
from node_setup.health.ping import HelloFailed
from node_setup.health.result import Check, Probe, Status
from node_setup.health.runner import Deadline


def site(tmp_path: Path, **kw: object) -> SshSite:
    values: dict[str, object] = dict(
        name="rme", host="site.example", port=2222, ssh_config=os.devnull, client="openssh",
        identity_file="/keys/mint_bridge_ed25519", control_dir=str(tmp_path / "cm"),
    )  # fmt: skip
    values.update(kw)
    return SshSite(**values)  # type: ignore[arg-type]


def only(probe: Probe) -> Check:
    [check] = probe.snapshot()
    return check


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("OpenSSH_9.2p1 Debian-2+deb12u10, OpenSSL 3.0.19 27 Jan 2026\n", (9, 2)),
        ("OpenSSH_7.3p1, OpenSSL 1.0.2j  26 Sep 2016", (7, 3)),
        ("OpenSSH_10.0p2 Ubuntu-5", (10, 0)),
        ("Dropbear v2022.83", None),
        ("", None),
    ],
)
def test_version_of_ssh(text: str, expected: tuple[int, int] | None) -> None:
    assert openssh.parse_version(text) == expected


# --- the ssh on PATH (a script that answers -V like the real one, on stderr) -------------------


def fake_ssh(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, says: str | None) -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    if says is not None:
        script = bin_dir / "ssh"
        script.write_text(f"#!/bin/sh\necho '{says}' >&2\n")
        script.chmod(0o755)
    monkeypatch.setenv("PATH", str(bin_dir))
    return bin_dir


def binary_check(tmp_path: Path) -> Check:
    probe = Probe("rme")
    openssh._binary(site(tmp_path), probe, Deadline(5))
    return only(probe)


def test_openssh_on_path_is_ok(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bin_dir = fake_ssh(tmp_path, monkeypatch, "OpenSSH_9.6p1, OpenSSL 3.0.13 30 Jan 2024")
    found = binary_check(tmp_path)
    assert (found.name, found.status) == ("ssh.openssh.binary", Status.OK)
    assert found.value == "OpenSSH_9.6p1, OpenSSL 3.0.13 30 Jan 2024"
    assert found.message == str(bin_dir / "ssh")


@pytest.mark.parametrize(
    ("says", "message", "fix"),
    [
        (None, "no ssh command on PATH", "openssh-client"),
        ("Dropbear v2022.83", "is not OpenSSH's client", "openssh-client"),
        ("OpenSSH_7.2p2 Ubuntu-4", "OpenSSH 7.2 lacks options", "OpenSSH 7.3 or newer"),
    ],
)
def test_missing_foreign_or_old_ssh_fails_with_a_fix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, says: str | None, message: str, fix: str
) -> None:
    fake_ssh(tmp_path, monkeypatch, says)
    found = binary_check(tmp_path)
    assert found.status is Status.FAIL
    assert message in found.message
    assert fix in found.fix and 'client = "paramiko" for site rme' in found.fix


# --- the control socket directory ----------------------------------------------------------------


def control_dir_check(where: SshSite) -> Check:
    probe = Probe("rme")
    openssh._control_dir(where, probe)
    return only(probe)


def test_control_dir_that_is_private_and_ours(tmp_path: Path) -> None:
    (tmp_path / "cm").mkdir(mode=0o700)
    with socket.socket(socket.AF_UNIX) as sock:  # what a shared connection leaves there
        sock.bind(str(tmp_path / "cm" / "0123abcd"))
        found = control_dir_check(site(tmp_path))
    assert (found.name, found.status, found.value) == (
        "ssh.openssh.control_dir", Status.OK, str(tmp_path / "cm"),
    )  # fmt: skip
    assert found.message == "0700, ours; control sockets: 1"


def test_missing_control_dir_is_fine_when_it_can_be_made(tmp_path: Path) -> None:
    found = control_dir_check(site(tmp_path, control_dir=str(tmp_path / "a/b/cm")))
    assert found.status is Status.OK
    assert "first connection creates it 0700" in found.message
    assert not (tmp_path / "a").exists()  # the check itself creates nothing


def test_control_dir_open_to_others_is_a_warning(tmp_path: Path) -> None:
    (tmp_path / "cm").mkdir()
    (tmp_path / "cm").chmod(0o755)
    found = control_dir_check(site(tmp_path))
    assert found.status is Status.WARN
    assert "mode 0755" in found.message
    assert found.fix == f"chmod 700 {tmp_path / 'cm'}"


def test_control_dir_that_is_a_file_or_under_one_fails(tmp_path: Path) -> None:
    (tmp_path / "cm").write_text("")
    found = control_dir_check(site(tmp_path))
    assert found.status is Status.FAIL and "is not a directory" in found.message
    assert found.fix == (
        f"remove {tmp_path / 'cm'} (the next connection makes it anew), or point control_dir "
        "of site rme at a directory of your own"
    )
    found = control_dir_check(site(tmp_path, control_dir=str(tmp_path / "cm/sub")))
    assert found.status is Status.FAIL and "cannot be created" in found.message
    assert found.fix == (
        f"mkdir -p -m 700 {tmp_path / 'cm/sub'}, or point control_dir of site rme at a "
        "directory of your own"
    )


@pytest.mark.skipif(os.getuid() != 0, reason="giving a directory away needs root")
def test_control_dir_of_another_user_fails(tmp_path: Path) -> None:
    (tmp_path / "cm").mkdir(mode=0o700)
    os.chown(tmp_path / "cm", 65534, 65534)
    found = control_dir_check(site(tmp_path))
    assert found.status is Status.FAIL
    assert "not to root: its owner could reach our connections" in found.message
    assert "point control_dir of site rme" in found.fix


def test_control_dir_is_not_checked_without_sharing(tmp_path: Path) -> None:
    found = control_dir_check(site(tmp_path, share_connection=False))
    assert (found.status, found.message) == (Status.OK, "not used: share_connection = false")


# --- what to do when hello through ssh fails -----------------------------------------------------


def wrapped(cause: BridgeError) -> HelloFailed:
    """As ``hello`` raises a transport failure of the ``ssh`` child."""
    try:
        raise HelloFailed(str(cause)) from cause
    except HelloFailed as exc:
        return exc


@pytest.mark.parametrize(
    ("error", "fix"),
    [
        (
            wrapped(HostKeyRejected("host key of site.example:2222 is not the one pinned")),
            "mint-bridge setup pin-host-key rme --fingerprint SHA256:...",
        ),
        (
            wrapped(AuthenticationFailed("site.example:2222 refused the key")),
            "(/keys/mint_bridge_ed25519.pub) and IP",
        ),
        (
            ConfigError("ssh cannot use its configuration", field="ssh_config"),
            f"see `ssh -G -F {os.devnull} site.example`",
        ),
        (
            ConfigError("SSH control directory /x is not owned by this user", field="control_dir"),
            "point control_dir of site rme",
        ),
        (wrapped(SiteUnreachable("cannot reach site.example:2222")), "`ssh -v -F"),
        (
            SiteError("the site entry refused the connection (exit 127): mb: not found"),
            "the installed path may have moved",
        ),
        (wrapped(BridgeError("the stream ended")), "check the site log"),
    ],
)
def test_each_failure_of_hello_names_its_fix(tmp_path: Path, error: BridgeError, fix: str) -> None:
    assert fix in openssh.hello_failure_fix(site(tmp_path), error)


# --- the order of the checks ---------------------------------------------------------------


def test_hello_is_not_tried_when_paramiko_found_no_session(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_ssh(tmp_path, monkeypatch, "OpenSSH_9.6p1")

    def no_such_host(*args: object, **kwargs: object) -> list[object]:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", no_such_host)
    probe = Probe("rme")
    openssh.check_openssh_site(site(tmp_path), probe, 5)
    found = {c.name: c for c in probe.snapshot()}
    assert list(found)[-3:] == [
        "ssh.openssh.binary",
        "ssh.openssh.control_dir",
        "ssh.openssh.hello",
    ]
    assert found["ssh.dns"].status is Status.FAIL
    assert (
        found["ssh.openssh.binary"].status is found["ssh.openssh.control_dir"].status is Status.OK
    )
    hello = found["ssh.openssh.hello"]
    assert hello.status is Status.UNKNOWN
    assert hello.message == (
        "not checked: the site is not reachable (as above: same host, same pinned key)"
    )
