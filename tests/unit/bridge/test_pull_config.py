"""Config for the pull path: a broker site in the bridge config, the [agent] table of a site."""

from __future__ import annotations

import socket
import textwrap
from pathlib import Path

import pytest

from bridge.client.node_config import BrokerSite, load_bridge_config
from bridge.core import defaults
from bridge.core.broker_endpoint import read_token
from bridge.core.errors import ConfigError
from bridge.site.config import load_site_config


def write(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return str(path)


# --- bridge config: method = "broker" -----------------------------------------------------


def test_broker_site_loads_with_defaults(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "bridge.toml",
        """
        [sites.rme]
        method = "broker"
        url = "https://broker.example.org:50443/"
        token_file = "~/.config/mint-bridge/broker.token"
        """,
    )
    site = load_bridge_config(path).sites["rme"]
    assert isinstance(site, BrokerSite)
    assert site.url == "https://broker.example.org:50443"
    assert site.token_file.endswith("/.config/mint-bridge/broker.token")
    assert not site.token_file.startswith("~")
    assert site.ca_bundle is None and site.allow_http is False
    assert site.poll_wait == defaults.BROKER_POLL_WAIT
    assert site.broker_site == "rme"


def test_broker_site_all_keys(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "bridge.toml",
        """
        [sites.local-broker]
        method = "broker"
        url = "http://127.0.0.1:8080"
        allow_http = true
        token_file = "/etc/mint/token"
        ca_bundle = "/etc/mint/ca.pem"
        poll_wait = 10
        read_timeout = "2m"
        broker_site = "rme-u-tokyo"
        reconnect_attempts = 3
        """,
    )
    site = load_bridge_config(path).sites["local-broker"]
    assert isinstance(site, BrokerSite)
    assert (site.url, site.allow_http, site.poll_wait) == ("http://127.0.0.1:8080", True, 10.0)
    assert site.read_timeout == 120.0
    assert (site.ca_bundle, site.broker_site, site.reconnect_attempts) == (
        "/etc/mint/ca.pem",
        "rme-u-tokyo",
        3,
    )


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ('url = "http://broker.example.org"\nallow_http = true', ["sites.b.url", "https://"]),
        ('url = "http://127.0.0.1:80"', ["sites.b.allow_http = true"]),
        ('url = "https://b.example.org"\npoll_wait = 51', ["sites.b.poll_wait"]),
        ('url = "https://b.example.org"\ntoken = "x"', ["unknown key 'token'"]),
        ('url = "https://b.example.org"\nread_timeout = 0.5',
         ["sites.b.read_timeout", "between 1 and 600 seconds", 'read_timeout = "60s"']),
        ('url = "https://b.example.org"\nread_timeout = "soon"', ["sites.b.read_timeout"]),
    ],
)
def test_broker_site_errors_name_the_key(tmp_path: Path, body: str, words: list[str]) -> None:
    path = write(
        tmp_path,
        "bridge.toml",
        f'[sites.b]\nmethod = "broker"\ntoken_file = "/t"\n{body}\n',
    )
    with pytest.raises(ConfigError) as caught:
        load_bridge_config(path)
    for word in words:
        assert word in caught.value.message
    assert path in caught.value.message


def test_broker_site_needs_a_token_file(tmp_path: Path) -> None:
    path = write(tmp_path, "bridge.toml", '[sites.b]\nmethod = "broker"\nurl = "https://b"\n')
    with pytest.raises(ConfigError, match=r"sites\.b\.token_file"):
        load_bridge_config(path)


# --- site config: [agent] ------------------------------------------------------------------

SITE = """
[site]
name = "rme"
work_base = "/tmp"

[commands.echo]
program = "/bin/echo"
"""


def test_site_without_agent_table(tmp_path: Path) -> None:
    assert load_site_config(write(tmp_path, "site.toml", SITE)).agent is None


def test_agent_table_defaults_and_relative_paths(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "site.toml",
        SITE + '[agent]\nurl = "https://broker.example.org"\ntoken_file = "agent.token"\n',
    )
    agent = load_site_config(path).agent
    assert agent is not None
    assert agent.url == "https://broker.example.org"
    assert agent.token_file == str(tmp_path / "agent.token")  # next to the site config
    assert agent.agent_id == socket.gethostname()
    assert agent.max_jobs == defaults.AGENT_MAX_JOBS
    assert agent.lease_renew == defaults.LEASE_WAIT
    assert agent.allow_http is False and agent.ca_bundle is None


def test_agent_table_all_keys(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "site.toml",
        SITE
        + """
[agent]
url = "http://[::1]:8443"
allow_http = true
token_file = "/etc/mint/agent.token"
ca_bundle = "ca.pem"
agent_id = "node-1.rme"
max_jobs = 8
lease_renew = "10s"
poll_wait = 30
read_timeout = 2
""",
    )
    agent = load_site_config(path).agent
    assert agent is not None
    assert agent.token_file == "/etc/mint/agent.token"
    assert agent.ca_bundle == str(tmp_path / "ca.pem")
    assert (agent.agent_id, agent.max_jobs, agent.lease_renew, agent.poll_wait) == (
        "node-1.rme",
        8,
        10.0,
        30.0,
    )
    assert agent.read_timeout == 2.0


@pytest.mark.parametrize(
    ("extra", "key"),
    [
        ('url = "http://broker.example.org"\nallow_http = true', "agent.url"),
        ('url = "http://localhost:1"', "agent.allow_http"),
        ('url = "https://b"\nagent_id = "-bad id"', "agent.agent_id"),
        ('url = "https://b"\nmax_jobs = 0', "agent.max_jobs"),
        ('url = "https://b"\nlease_renew = 60', "agent.lease_renew"),
        ('url = "https://b"\nread_timeout = 601', "agent.read_timeout"),
        ('url = "https://b"\nsecret = "x"', "unknown key 'secret'"),
    ],
)
def test_agent_table_errors_name_the_key(tmp_path: Path, extra: str, key: str) -> None:
    path = write(tmp_path, "site.toml", SITE + f'[agent]\ntoken_file = "t"\n{extra}\n')
    with pytest.raises(ConfigError) as caught:
        load_site_config(path)
    assert key in caught.value.message


def test_bridge_config_relative_token_file_is_next_to_the_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    conf_dir = tmp_path / "conf"
    conf_dir.mkdir()
    path = write(
        conf_dir,
        "bridge.toml",
        '[sites.rme]\nmethod = "broker"\nurl = "https://broker.example.org"\n'
        'token_file = "tokens/client.token"\nca_bundle = "ca.pem"\n',
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # the current directory must not matter
    site = load_bridge_config(path).sites["rme"]
    assert isinstance(site, BrokerSite)
    assert site.token_file == str(conf_dir / "tokens/client.token")
    assert site.ca_bundle == str(conf_dir / "ca.pem")
    with pytest.raises(ConfigError) as caught:
        read_token(site.token_file, "sites.rme")
    assert str(caught.value).startswith(
        f"sites.rme.token_file: token file {conf_dir / 'tokens/client.token'} does not exist "
        "(a relative token_file is taken from its config file's directory)"
    )


# --- several instances: urls = [...] --------------------------------------------------------


def test_broker_site_and_agent_take_several_urls(tmp_path: Path) -> None:
    urls = '["https://b1.example.org:50443/", "https://b2.example.org:50443"]'
    bridge = write(tmp_path, "bridge.toml",
                   f'[sites.b]\nmethod = "broker"\ntoken_file = "/t"\nurls = {urls}\n')  # fmt: skip
    site = load_bridge_config(bridge).sites["b"]
    assert isinstance(site, BrokerSite)
    assert site.urls == ("https://b1.example.org:50443", "https://b2.example.org:50443")
    assert site.url == "https://b1.example.org:50443"  # the first: what work dirs record
    agent = load_site_config(write(
        tmp_path, "site.toml", SITE + f'[agent]\ntoken_file = "t"\nurls = {urls}\n')).agent
    assert agent is not None and agent.urls == site.urls and agent.url == site.url


@pytest.mark.parametrize(
    ("extra", "words"),
    [
        ('url = "https://a"\nurls = ["https://b"]', "agent: set either url or urls"),
        ('urls = ["https://a", "http://b.example.org"]', "agent.urls[1]: plain http://"),
        ("urls = []", "agent.urls: must be a non-empty list"),
        ('urls = "https://a"', "agent.urls: must be a non-empty list"),
    ],
)
def test_agent_urls_errors_name_the_key(tmp_path: Path, extra: str, words: str) -> None:
    path = write(tmp_path, "site.toml", SITE + f'[agent]\ntoken_file = "t"\n{extra}\n')
    with pytest.raises(ConfigError) as caught:
        load_site_config(path)
    assert words in caught.value.message and path in caught.value.message
