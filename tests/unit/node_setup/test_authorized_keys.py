"""MInt's authorized_keys line: key parsing, quoting, and an idempotent merge."""

from __future__ import annotations

import base64
import shlex
import struct

import pytest

from node_setup import authorized_keys as ak
from node_setup.errors import InvalidKey, SetupError


def blob(key_type: str, body: bytes = b"\x00" * 32) -> str:
    name = key_type.encode()
    raw = struct.pack(">I", len(name)) + name + struct.pack(">I", len(body)) + body
    return base64.b64encode(raw).decode()


ED = blob("ssh-ed25519")
PUB = f"ssh-ed25519 {ED} mint-bridge@ssh-node01\n"


def test_parses_one_public_key() -> None:
    key = ak.parse_public_key(PUB, "mint.pub")
    assert (key.type, key.blob, key.comment) == ("ssh-ed25519", ED, "mint-bridge@ssh-node01")
    assert key.fingerprint.startswith("SHA256:") and len(key.fingerprint) == 7 + 43


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        (
            "-----BEGIN OPENSSH PRIVATE KEY-----\nb3Blbn\n-----END OPENSSH PRIVATE KEY-----\n",
            "PRIVATE key",
        ),
        (PUB + PUB, "exactly one public key line, found 2"),
        ("", "exactly one public key line, found 0"),
        (f"ssh-dss {ED}\n", "not an OpenSSH public key"),
        (f'command="sh" ssh-ed25519 {ED}\n', "not an OpenSSH public key"),
        ("ssh-ed25519 not*base64\n", "not valid base64"),
        (f"ssh-rsa {ED}\n", "does not match its type ssh-rsa"),
    ],
)
def test_refuses_what_is_not_one_public_key(text: str, reason: str) -> None:
    with pytest.raises(InvalidKey, match=reason):
        ak.parse_public_key(text, "given.pub")


def test_line_has_the_documented_form() -> None:
    key = ak.parse_public_key(PUB, "mint.pub")
    command = ak.forced_command("/home/mint/venv/bin/mint-bridge", "/home/mint/site.toml")
    line = ak.key_line(key, command, "192.0.2.10")
    assert line == (
        'command="/home/mint/venv/bin/mint-bridge site serve-ssh --config /home/mint/site.toml",'
        f'restrict,from="192.0.2.10" ssh-ed25519 {ED} mint-bridge@ssh-node01'
    )


def _openssh_dequote(options: str) -> str:
    """What sshd's option parser makes of command="...": only \\" is an escape."""
    assert options.startswith('command="')
    out, i = [], len('command="')
    while options[i] != '"':
        if options[i] == "\\" and options[i + 1] == '"':
            i += 1
        out.append(options[i])
        i += 1
    return "".join(out)


@pytest.mark.parametrize(
    "config",
    ["/srv/my site/site.toml", "/srv/it's/site.toml", '/srv/quote"d/site.toml', "/srv/$HOME;x"],
)
def test_paths_reach_the_shell_intact(config: str) -> None:
    key = ak.parse_public_key(PUB, "mint.pub")
    line = ak.key_line(key, ak.forced_command("/opt/mb/bin/mint-bridge", config), "127.0.0.1")
    shell_text = _openssh_dequote(line)
    assert shlex.split(shell_text) == [
        "/opt/mb/bin/mint-bridge",
        "site",
        "serve-ssh",
        "--config",
        config,
    ]
    assert ak.key_blob(line) == ED


def test_line_breaks_in_paths_are_refused() -> None:
    with pytest.raises(SetupError, match="line break"):
        ak.forced_command("/opt/mint-bridge", "/srv/a\nb.toml")


@pytest.mark.parametrize(
    "value", ["192.0.2.10", "192.0.2.0/28", "2001:db8::1", "10.0.0.1, 10.0.0.2"]
)
def test_from_accepts_addresses_and_networks(value: str) -> None:
    assert ak.check_from(value) == value.replace(" ", "")


@pytest.mark.parametrize("value", ["ssh-node01", "*.example.org", '192.0.2.10" x', ""])
def test_from_refuses_names_and_junk(value: str) -> None:
    with pytest.raises(SetupError):
        ak.check_from(value)


def _line(ip: str) -> str:
    key = ak.parse_public_key(PUB, "mint.pub")
    return ak.key_line(key, ak.forced_command("/opt/mb", "/srv/site.toml"), ip)


def test_merge_appends_once_and_keeps_other_lines() -> None:
    key = ak.parse_public_key(PUB, "mint.pub")
    other = f"ssh-ed25519 {blob('ssh-ed25519', b'1' * 32)} admin@laptop"
    first, replaced = ak.merge(other + "\n", _line("192.0.2.10"), key)
    assert first == f"{other}\n{_line('192.0.2.10')}\n"
    assert not replaced
    again, replaced = ak.merge(first, _line("192.0.2.10"), key)
    assert again == first and not replaced


def test_merge_of_an_empty_file_without_newline() -> None:
    key = ak.parse_public_key(PUB, "mint.pub")
    assert ak.merge("", _line("192.0.2.10"), key) == (_line("192.0.2.10") + "\n", False)


def test_merge_replaces_the_same_key_in_place_and_drops_duplicates() -> None:
    key = ak.parse_public_key(PUB, "mint.pub")
    a = f"ssh-ed25519 {blob('ssh-ed25519', b'a' * 32)} a"
    b = f"ssh-ed25519 {blob('ssh-ed25519', b'b' * 32)} b"
    existing = "\n".join([a, _line("192.0.2.10"), b, f"ssh-ed25519 {ED} bare"]) + "\n"
    merged, replaced = ak.merge(existing, _line("192.0.2.99"), key)
    assert replaced
    assert merged.splitlines() == [a, _line("192.0.2.99"), b]


def test_key_blob_reads_options_with_quoted_spaces() -> None:
    line = f'command="echo a b",from="10.0.0.1" ssh-ed25519 {ED} c'
    assert ak.key_blob(line) == ED
    assert ak.key_blob("# ssh-ed25519 " + ED) is None
    assert ak.key_blob("") is None


def test_merge_updates_setups_own_line_without_force() -> None:
    key = ak.parse_public_key(PUB, "mint.pub")
    other = f"ssh-ed25519 {blob('ssh-ed25519', b'1' * 32)} admin@laptop"
    merged, replaced = ak.merge(f"{_line('192.0.2.10')}\n{other}\n", _line("192.0.2.99"), key)
    assert not replaced  # the old line was setup's own (same forced command)
    assert merged == f"{_line('192.0.2.99')}\n{other}\n"


def test_merge_of_the_admins_line_for_the_key_needs_force() -> None:
    key = ak.parse_public_key(PUB, "mint.pub")
    admins = f'command="/usr/local/bin/other",restrict ssh-ed25519 {ED} mine'
    merged, replaced = ak.merge(admins + "\n", _line("192.0.2.99"), key)
    assert replaced
    assert merged == _line("192.0.2.99") + "\n"
    bare, replaced = ak.merge(f"ssh-ed25519 {ED} bare\n", _line("192.0.2.99"), key)
    assert replaced and bare == _line("192.0.2.99") + "\n"
