"""The bridge node's config: sites, defaults and errors that name the key."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from bridge.client.node_config import (
    EXAMPLES_DIR,
    BridgeConfig,
    LocalSite,
    SshSite,
    default_config,
    find_config,
    load_bridge_config,
)
from bridge.core import defaults
from bridge.core.errors import ConfigError
from bridge.site.config import load_site_config


def write(tmp_path: Path, text: str, name: str = "bridge.toml") -> str:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return str(path)


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    directory = tmp_path / "home"
    directory.mkdir()
    monkeypatch.setenv("HOME", str(directory))
    monkeypatch.delenv("MINT_BRIDGE_CONFIG", raising=False)
    return directory


def test_ssh_and_local_sites_load(tmp_path: Path, home: Path) -> None:
    path = write(
        tmp_path,
        """
        [bridge]
        timeout = "2h"

        [sites.hpc]
        host = "hpc.example.org"
        client = "paramiko"
        user = "mint"
        port = 2222
        identity_file = "~/.ssh/id_mint"
        known_hosts = "~/.ssh/known_hosts_mint"
        ssh_config = "/etc/ssh/ssh_config"
        connect_timeout = 5
        keepalive = 30
        reconnect_attempts = 2

        [sites.alias]
        host = "kousoku"
        client = "paramiko"

        [sites.here]
        method = "local"
        site_config = "sites/site.toml"
        reconnect_attempts = 0

        [sites.abs]
        method = "local"
        site_config = "/etc/mint/site.toml"
        """,
    )
    config = load_bridge_config(path)
    assert config.path == path
    assert config.timeout == 7200.0
    assert sorted(config.sites) == ["abs", "alias", "here", "hpc"]
    assert config.sites["hpc"] == SshSite(
        name="hpc",
        host="hpc.example.org",
        user="mint",
        port=2222,
        identity_file=f"{home}/.ssh/id_mint",
        known_hosts=f"{home}/.ssh/known_hosts_mint",
        ssh_config="/etc/ssh/ssh_config",
        connect_timeout=5.0,
        keepalive=30,
        reconnect_attempts=2,
    )
    assert isinstance(config.sites["hpc"].connect_timeout, float)
    assert config.sites["alias"] == SshSite(
        name="alias",
        host="kousoku",
        user=None,
        port=None,
        identity_file=None,
        known_hosts=f"{home}/.ssh/known_hosts",
        ssh_config=f"{home}/.ssh/config",
        connect_timeout=defaults.SSH_CONNECT_TIMEOUT,
        keepalive=defaults.SSH_KEEPALIVE_SECONDS,
        reconnect_attempts=defaults.RECONNECT_ATTEMPTS,
    )
    assert config.sites["alias"].method == "ssh"
    assert config.sites["here"] == LocalSite(
        "here", str(tmp_path / "sites" / "site.toml"), reconnect_attempts=0
    )
    assert config.sites["here"].method == "local"
    assert config.sites["abs"] == LocalSite("abs", "/etc/mint/site.toml")


def test_empty_config_has_no_sites_and_no_timeout(tmp_path: Path) -> None:
    config = load_bridge_config(write(tmp_path, ""))
    assert config.sites == {}
    assert config.timeout is None
    with pytest.raises(ConfigError) as info:
        config.site("hpc")
    assert str(info.value) == f"site 'hpc' is not in {config.path}; known sites: none"
    assert info.value.field == "site"


def test_site_lookup_names_the_known_sites(tmp_path: Path) -> None:
    config = load_bridge_config(write(tmp_path, "[sites.b]\nhost = 'b'\n[sites.a]\nhost = 'a'\n"))
    assert config.site("a").name == "a"
    with pytest.raises(ConfigError) as info:
        config.site("c")
    assert str(info.value) == f"site 'c' is not in {config.path}; known sites: a, b"


SSH_KEYS = (
    "client, connect_timeout, connection_persist, control_dir, host, identity_file, keepalive, "
    "known_hosts, method, port, reconnect_attempts, share_connection, ssh_config, user"
)


@pytest.mark.parametrize(
    ("text", "key", "message"),
    [
        (
            "[site]\n",
            "top level",
            "unknown key 'site'; did you mean 'sites'? allowed keys are bridge, sites",
        ),
        (
            "[bridge]\nretries = 3\n",
            "bridge",
            "unknown key 'retries'; allowed keys are metrics_textfile, timeout",
        ),
        (
            "[bridge]\ntimeout = 'never'\n",
            "bridge.timeout",
            "'never' is not a duration; use seconds or a number with s/m/h/d/w, e.g. '30m'",
        ),
        (
            "[sites.a]\nhostname = 'x'\n",
            "sites.a",
            f"unknown key 'hostname'; did you mean 'host'? allowed keys are {SSH_KEYS}",
        ),
        ("[sites.a]\nuser = 'x'\n", "sites.a.host", "is required"),
        ("[sites.a]\nhost = 5\n", "sites.a.host", "must be a str, not int"),
        (
            "[sites.a]\nmethod = 'telnet'\n",
            "sites.a.method",
            "'telnet' is not a method; use 'ssh', 'local'",  # (the list of methods may grow)
        ),
        ("[sites.a]\nmethod = 5\n", "sites.a.method", "must be a str, not int"),
        (
            "[sites.a]\nhost = 'x'\nport = 70000\n",
            "sites.a.port",
            "must be a TCP port number (1-65535)",
        ),
        (
            "[sites.a]\nhost = 'x'\nport = 0\n",
            "sites.a.port",
            "must be a TCP port number (1-65535)",
        ),
        (
            "[sites.a]\nhost = 'x'\nport = '22'\n",
            "sites.a.port",
            "must be a TCP port number (1-65535)",
        ),
        (
            "[sites.a]\nhost = 'x'\nport = true\n",
            "sites.a.port",
            "must be a TCP port number (1-65535)",
        ),
        ("[sites.a]\nhost = 'x'\nuser = 5\n", "sites.a.user", "must be a str, not int"),
        (
            "[sites.a]\nhost = 'x'\nidentity_file = ['k']\n",
            "sites.a.identity_file",
            "must be a str, not list",
        ),
        (
            "[sites.a]\nhost = 'x'\nconnect_timeout = '5'\n",
            "sites.a.connect_timeout",
            "must be a float, not str",
        ),
        (
            "[sites.a]\nhost = 'x'\nkeepalive = 1.5\n",
            "sites.a.keepalive",
            "must be a int, not float",
        ),
        (
            "[sites.a]\nhost = 'x'\nreconnect_attempts = true\n",
            "sites.a.reconnect_attempts",
            "must be a int, not bool",
        ),
        (
            "[sites.a]\nhost = 'x'\nconnect_timeout = 0\n",
            "sites.a.connect_timeout",
            "must be a positive number of seconds",
        ),
        (
            "[sites.a]\nhost = 'x'\nconnect_timeout = -1.5\n",
            "sites.a.connect_timeout",
            "must be a positive number of seconds",
        ),
        (
            "[sites.a]\nhost = 'x'\nconnect_timeout = nan\n",
            "sites.a.connect_timeout",
            "must be a positive number of seconds",
        ),
        (
            "[sites.a]\nhost = 'x'\nkeepalive = -1\n",
            "sites.a.keepalive",
            "must not be negative (0 turns keepalives off)",
        ),
        (
            "[sites.a]\nhost = 'x'\nreconnect_attempts = -1\n",
            "sites.a.reconnect_attempts",
            "must not be negative",
        ),
        (
            "[sites.a]\nmethod = 'local'\nsite_config = 's'\nreconnect_attempts = -2\n",
            "sites.a.reconnect_attempts",
            "must not be negative",
        ),
        ("[sites.a]\nmethod = 'local'\n", "sites.a.site_config", "is required"),
        (
            "[sites.a]\nmethod = 'local'\nsite_config = 's.toml'\nhost = 'x'\n",
            "sites.a",
            "unknown key 'host'; allowed keys are method, reconnect_attempts, site_config",
        ),
        ("[sites]\na = 'host'\n", "sites.a", "must be a table"),
        ("sites = 1\n", "sites", "must be a table"),
    ],
)
def test_bad_configs_name_the_key(tmp_path: Path, text: str, key: str, message: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_bridge_config(path)
    if key.endswith(".method") and "is not a method" in message:
        assert str(info.value).startswith(f"{path}: {key}: {message}")
    else:
        assert str(info.value) == f"{path}: {key}: {message}"
    assert info.value.field == key


@pytest.mark.parametrize("name", ["bad name", "-x", "a/b", "x" * 65, "ok\n", "é"])
def test_bad_site_names(tmp_path: Path, name: str) -> None:
    path = write(tmp_path, f"[sites.{json.dumps(name)}]\nhost = 'x'\n")
    with pytest.raises(ConfigError) as info:
        load_bridge_config(path)
    assert str(info.value) == (
        f"{path}: sites.{name}: site names use letters, digits, '_', '.', '-'"
    )


def test_default_config_runs_the_kousoku_example() -> None:
    config = default_config()
    assert config.path == "(embedded default)"
    assert config.timeout is None
    assert list(config.sites) == ["local"]
    site = config.site("local")
    assert isinstance(site, LocalSite)
    expected = EXAMPLES_DIR / "kousoku" / "site.toml"
    assert site.site_config == str(expected)
    assert Path(site.site_config).is_file()
    loaded = load_site_config(site.site_config)
    assert "fatigue" in loaded.commands
    assert loaded.commands["fatigue"].inputs == (
        "yield_strength.dat",
        "tensile_strength.dat",
        "reduction_area.dat",
    )


def test_example_bridge_config_loads() -> None:
    path = EXAMPLES_DIR / "bridge.toml"
    if not path.exists():
        pytest.skip("no examples/bridge.toml")
    config = load_bridge_config(str(path))
    assert isinstance(config, BridgeConfig)
    assert sorted(config.sites) == ["local", "rme-u-tokyo", "rme-u-tokyo-openssh"]
    openssh = config.site("rme-u-tokyo-openssh")
    assert isinstance(openssh, SshSite) and openssh.client == "openssh"
    assert openssh.share_connection and openssh.connection_persist == 600


def test_find_config_order(tmp_path: Path, home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert find_config(None).path == "(embedded default)"

    user_config = home / ".config" / "mint-bridge" / "bridge.toml"
    user_config.parent.mkdir(parents=True)
    user_config.write_text("[sites.user]\nhost = 'u'\n")
    assert list(find_config(None).sites) == ["user"]

    env_path = write(tmp_path, "[sites.env]\nhost = 'e'\n", "env.toml")
    monkeypatch.setenv("MINT_BRIDGE_CONFIG", env_path)
    assert list(find_config(None).sites) == ["env"]

    explicit = write(tmp_path, "[sites.explicit]\nhost = 'x'\n", "explicit.toml")
    assert list(find_config(explicit).sites) == ["explicit"]

    missing = str(tmp_path / "missing.toml")
    with pytest.raises(ConfigError) as info:
        find_config(missing)
    assert str(info.value) == f"config file {missing} does not exist; create it or pass --config"


@pytest.mark.parametrize(("has_ssh", "expected"), [(True, "openssh"), (False, "paramiko")])
def test_default_client_is_openssh_where_ssh_exists(
    tmp_path: Path, home: Path, monkeypatch: pytest.MonkeyPatch, has_ssh: bool, expected: str
) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    if has_ssh:
        fake_ssh = bin_dir / "ssh"
        fake_ssh.write_text("#!/bin/sh\nexit 0\n")
        fake_ssh.chmod(0o755)
    monkeypatch.setenv("PATH", str(bin_dir))
    path = write(tmp_path, '[sites.hpc]\nhost = "hpc.example.org"\n')
    site = load_bridge_config(path).site("hpc")
    assert isinstance(site, SshSite) and site.client == expected
    if expected == "openssh":
        assert site.share_connection and site.control_dir


def test_explicit_paramiko_wins_over_an_ssh_binary(
    tmp_path: Path, home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write(tmp_path, '[sites.hpc]\nhost = "h"\nclient = "paramiko"\n')
    site = load_bridge_config(path).site("hpc")
    assert isinstance(site, SshSite) and site.client == "paramiko"
    with pytest.raises(ConfigError, match="control_dir"):
        load_bridge_config(write(tmp_path, '[sites.x]\nhost = "h"\nclient = "paramiko"\n'
                                           'control_dir = "/tmp/x"\n', "b2.toml"))
