"""`setup bridge-node` and `setup add-site` (broker sites, config edits, known_hosts pins)."""

from __future__ import annotations

import stat
from pathlib import Path

import paramiko
import pytest

from bridge.client.node_config import BrokerSite, SshSite, load_bridge_config
from bridge.core.errors import ConfigError, HostKeyRejected
from node_setup import bridge_setup, host_keys
from node_setup.bridge_setup import AddSiteOptions, BridgePaths, add_site, parse_host
from node_setup.changes import Action
from node_setup.errors import OverwriteRefused, SetupError
from node_setup.prompt import Unattended

TOKEN = "mbt_0123456789ab_Zm9yIHRlc3RzIG9ubHk"


@pytest.fixture
def paths(tmp_path: Path) -> BridgePaths:
    return BridgePaths(
        config=str(tmp_path / "cfg/bridge.toml"),
        key=str(tmp_path / "ssh/mint_bridge_ed25519"),
        known_hosts=str(tmp_path / "cfg/known_hosts"),
        ssh_config=str(tmp_path / "cfg/ssh_config"),
    )


def mode(path: str) -> int:
    return stat.S_IMODE(Path(path).stat().st_mode)


def test_bridge_node_gets_a_config_and_a_dedicated_key(paths: BridgePaths) -> None:
    out = Unattended(echo=False)
    bridge_setup.setup_bridge_node(paths, out)
    assert load_bridge_config(paths.config).sites == {}
    assert mode(paths.config) == 0o600
    assert mode(paths.key) == 0o600
    assert mode(paths.known_hosts) == 0o600
    key = paramiko.Ed25519Key.from_private_key_file(paths.key)
    public = Path(paths.key + ".pub").read_text().split()
    assert public[:2] == [key.get_name(), key.get_base64()]
    assert public[2].startswith("mint-bridge@")
    assert any(
        line.startswith("next: MInt's public key") and public[1] in line for line in out.lines
    )
    assert not any("PRIVATE" in line for line in out.lines)
    # A second run keeps the key and the config.
    before = Path(paths.key).read_bytes()
    steps = bridge_setup.setup_bridge_node(paths, Unattended(echo=False))
    assert {s.action for s in steps} == {Action.UNCHANGED}
    assert Path(paths.key).read_bytes() == before


def test_bridge_node_dry_run_writes_nothing(paths: BridgePaths, tmp_path: Path) -> None:
    bridge_setup.setup_bridge_node(paths, Unattended(echo=False), dry_run=True)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("site.example", (None, "site.example", 22)),
        ("site.example:2222", (None, "site.example", 2222)),
        ("mint@10.0.0.5:22", ("mint", "10.0.0.5", 22)),
        ("[2001:db8::1]:2200", (None, "2001:db8::1", 2200)),
    ],
)
def test_host_and_port(value: str, expected: tuple[str | None, str, int]) -> None:
    found = parse_host(value, "--ssh")
    assert (found.user, found.host, found.port) == expected


@pytest.mark.parametrize("value", ["", "a b", "host:0", "host:99999", "-oProxyCommand=x", "h;x"])
def test_bad_hosts_are_refused(value: str) -> None:
    with pytest.raises(SetupError):
        parse_host(value, "--ssh")


def token_file(tmp_path: Path, file_mode: int = 0o600) -> str:
    path = tmp_path / "client.token"
    path.write_text(TOKEN + "\n")
    path.chmod(file_mode)
    return str(path)


def test_add_broker_site(paths: BridgePaths, tmp_path: Path) -> None:
    options = AddSiteOptions(
        "rme-u-tokyo",
        broker="https://broker.example:8443",
        token_file=token_file(tmp_path),
        paths=paths,
    )
    out = Unattended(echo=False)
    add_site(options, out)
    site = load_bridge_config(paths.config).sites["rme-u-tokyo"]
    assert isinstance(site, BrokerSite)
    assert (site.url, site.token_file) == ("https://broker.example:8443", token_file(tmp_path))
    assert TOKEN not in "\n".join(out.lines)
    assert (
        Path(paths.config)
        .read_text()
        .endswith(
            '[sites.rme-u-tokyo]\nmethod = "broker"\nurl = "https://broker.example:8443"\n'
            f'token_file = "{token_file(tmp_path)}"\n'
        )
    )
    steps = add_site(options, Unattended(echo=False))  # the same again: nothing to do
    assert {s.action for s in steps} == {Action.UNCHANGED}


def test_a_readable_token_file_is_refused(paths: BridgePaths, tmp_path: Path) -> None:
    options = AddSiteOptions(
        "s", broker="https://b.example", token_file=token_file(tmp_path, 0o644), paths=paths
    )
    with pytest.raises(ConfigError, match="chmod 600"):
        add_site(options, Unattended(echo=False))
    assert not Path(paths.config).exists()


def test_a_different_entry_is_replaced_only_with_force(paths: BridgePaths, tmp_path: Path) -> None:
    first = AddSiteOptions(
        "s", broker="https://one.example", token_file=token_file(tmp_path), paths=paths
    )
    add_site(first, Unattended(echo=False))
    with open(paths.config, "a") as handle:
        handle.write('\n[sites.other]\nmethod = "local"\nsite_config = "/srv/site.toml"\n')
    second = AddSiteOptions(
        "s", broker="https://two.example", token_file=token_file(tmp_path), paths=paths
    )
    with pytest.raises(OverwriteRefused):
        add_site(second, Unattended(echo=False))
    assert "one.example" in Path(paths.config).read_text()
    second.force = True
    add_site(second, Unattended(echo=False))
    config = load_bridge_config(paths.config)
    assert sorted(config.sites) == ["other", "s"]
    site = config.sites["s"]
    assert isinstance(site, BrokerSite) and site.url == "https://two.example"
    assert "one.example" not in Path(paths.config).read_text()


def test_ssh_site_needs_a_fingerprint_when_unattended(paths: BridgePaths) -> None:
    options = AddSiteOptions("s", ssh="127.0.0.1:1", paths=paths)
    with pytest.raises(SetupError, match="--fingerprint is required"):
        add_site(options, Unattended(echo=False))


def test_fingerprint_format_is_checked() -> None:
    with pytest.raises(HostKeyRejected, match="not a SHA256 fingerprint"):
        host_keys.check_fingerprint("MD5:aa:bb")


# --- known_hosts pins ------------------------------------------------------------------------


def host_key() -> host_keys.HostKey:
    """A fresh ed25519 key, made in memory."""
    import io

    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    pem = (
        Ed25519PrivateKey.generate()
        .private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.OpenSSH,
            serialization.NoEncryption(),
        )
        .decode()
    )
    return host_keys.HostKey(paramiko.Ed25519Key.from_private_key(io.StringIO(pem)))


def test_pin_adds_replaces_and_keeps_others() -> None:
    key, newer = host_key(), host_key()
    other = "other.example ssh-ed25519 AAAAother\n@revoked [h.example]:2222 ssh-ed25519 AAAAold\n"
    pinned = host_keys.pin(other, "h.example", 2222, key)
    assert pinned.splitlines()[:2] == other.splitlines()
    assert pinned.splitlines()[2] == f"[h.example]:2222 ssh-ed25519 {key.base64}"
    assert host_keys.pin(pinned, "h.example", 2222, key) == pinned  # idempotent
    replaced = host_keys.pin(pinned, "h.example", 2222, newer)
    assert key.base64 not in replaced
    assert replaced.splitlines()[-1] == f"[h.example]:2222 ssh-ed25519 {newer.base64}"
    assert host_keys.pin("", "h.example", 22, key) == f"h.example ssh-ed25519 {key.base64}\n"


def test_pin_replaces_a_hashed_entry_of_the_same_host() -> None:
    key, newer = host_key(), host_key()
    hashed = paramiko.HostKeys.hash_host("[h.example]:2222")
    existing = f"{hashed} ssh-ed25519 {key.base64}\n"
    assert host_keys.pin(existing, "h.example", 2222, newer).splitlines() == [
        f"[h.example]:2222 ssh-ed25519 {newer.base64}"
    ]


def test_pinned_file_is_read_by_the_bridge(tmp_path: Path) -> None:
    key = host_key()
    known = tmp_path / "known_hosts"
    known.write_text(host_keys.pin("", "127.0.0.1", 2222, key))
    loaded = paramiko.HostKeys(str(known))
    assert loaded.lookup("[127.0.0.1]:2222")["ssh-ed25519"] == key.key
    site = SshSite(name="s", host="127.0.0.1", port=2222, known_hosts=str(known))
    assert site.known_hosts == str(known)


# --- the SSH client of a site ------------------------------------------------------------------


@pytest.fixture
def pinned(monkeypatch: pytest.MonkeyPatch) -> host_keys.HostKey:
    """Every host offers one key that matches the given fingerprint (no network)."""
    key = host_key()
    monkeypatch.setattr(host_keys, "find_matching_key", lambda *args: key)
    return key


def test_ssh_site_with_the_openssh_client(paths: BridgePaths, pinned: host_keys.HostKey) -> None:
    options = AddSiteOptions(
        "rme", ssh="site.example:2222", fingerprint=pinned.fingerprint, client="openssh",
        paths=paths,
    )  # fmt: skip
    add_site(options, Unattended(echo=False))
    site = load_bridge_config(paths.config).sites["rme"]
    assert isinstance(site, SshSite)
    assert (site.client, site.host, site.port) == ("openssh", "site.example", 2222)
    assert site.share_connection  # the defaults of the OpenSSH client apply
    text = Path(paths.config).read_text()
    comment, line = text.splitlines()[-2:]
    assert line == 'client = "openssh"'
    assert comment.startswith("# the system's ssh") and "control_dir" in comment
    steps = add_site(options, Unattended(echo=False))  # the same again: nothing to do
    assert {s.action for s in steps} == {Action.UNCHANGED}


@pytest.mark.parametrize(("has_ssh", "expected"), [(True, "openssh"), (False, "paramiko")])
def test_openssh_is_the_default_where_ssh_exists(
    paths: BridgePaths,
    pinned: host_keys.HostKey,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    has_ssh: bool,
    expected: str,
) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    if has_ssh:
        (bin_dir / "ssh").write_text("#!/bin/sh\nexit 0\n")
        (bin_dir / "ssh").chmod(0o755)
    monkeypatch.setenv("PATH", str(bin_dir))
    add_site(
        AddSiteOptions("rme", ssh="site.example", fingerprint=pinned.fingerprint, paths=paths),
        Unattended(echo=False),
    )
    site = load_bridge_config(paths.config).sites["rme"]
    assert isinstance(site, SshSite) and site.client == expected
    written = Path(paths.config).read_text().split("[sites.rme]")[1]
    # openssh is written (kept if ssh goes away); paramiko by absence of ssh is not, so that
    # installing OpenSSH later gives the faster client.
    assert ('client = "openssh"' in written) == has_ssh
    assert ("client" in written) == has_ssh


def test_switching_the_client_needs_force(paths: BridgePaths, pinned: host_keys.HostKey) -> None:
    options = AddSiteOptions(
        "rme", ssh="site.example", fingerprint=pinned.fingerprint, paths=paths, client="paramiko"
    )
    add_site(options, Unattended(echo=False))
    assert 'client = "paramiko"' in Path(paths.config).read_text()
    options.client = "openssh"
    with pytest.raises(OverwriteRefused):
        add_site(options, Unattended(echo=False))
    options.force = True
    add_site(options, Unattended(echo=False))
    site = load_bridge_config(paths.config).sites["rme"]
    assert isinstance(site, SshSite) and site.client == "openssh"


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (dict(ssh="site.example", client="putty"), "--client 'putty'"),
        (dict(broker="https://b.example", client="openssh"), "only with --ssh"),
    ],
)
def test_client_choice_is_checked(
    paths: BridgePaths, tmp_path: Path, options: dict[str, str], message: str
) -> None:
    with pytest.raises(SetupError, match=message):
        add_site(
            AddSiteOptions("s", token_file=token_file(tmp_path), paths=paths, **options),
            Unattended(echo=False),
        )
    assert not Path(paths.config).exists()


class NoJumpChannels:
    """Stands in for the connection to the jump host (its key is checked by ``pinned``)."""

    def __init__(self, *args: object) -> None:
        pass

    def close(self) -> None:
        pass


def test_a_jump_host_block_pins_its_key_for_openssh(
    paths: BridgePaths, pinned: host_keys.HostKey, monkeypatch: pytest.MonkeyPatch
) -> None:
    # OpenSSH starts a ProxyJump's ssh with -F only: the pin must be in the jump's block.
    monkeypatch.setattr(bridge_setup, "JumpChannels", NoJumpChannels)
    options = AddSiteOptions(
        "rme", ssh="site.internal", jump="gw.example:2200", fingerprint=pinned.fingerprint,
        jump_fingerprint=pinned.fingerprint, client="openssh", paths=paths,
    )  # fmt: skip
    add_site(options, Unattended(echo=False))
    ssh_config = Path(paths.ssh_config).read_text()
    jump_block, site_block = ssh_config.split("\n\n")
    assert jump_block.startswith("Host rme-jump\n    HostName gw.example\n    Port 2200\n")
    assert f"    UserKnownHostsFile {paths.known_hosts}\n" in jump_block
    assert "    StrictHostKeyChecking yes\n" in jump_block
    assert "    BatchMode yes" in jump_block
    assert site_block.startswith("Host rme\n") and "KnownHosts" not in site_block
    site = load_bridge_config(paths.config).sites["rme"]
    assert isinstance(site, SshSite)
    assert (site.client, site.host, site.ssh_config) == ("openssh", "rme", paths.ssh_config)
