"""broker_endpoint: the loopback-only http rule, what counts as loopback, the token file."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from bridge.core.broker_endpoint import (
    BrokerEndpoint,
    check_broker_url,
    endpoint_of,
    is_loopback,
    read_token,
)
from bridge.core.errors import ConfigError
from tests.support.scripted_http import TOKEN, write_token

# --- the http:// rule ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:8080", "http://127.9.8.7/", "http://[::1]:9000", "http://localhost"]
)
def test_http_allowed_for_loopback_when_configured(url: str) -> None:
    assert check_broker_url(url, True, "b.toml: sites.s") == url.rstrip("/")


@pytest.mark.parametrize("url", ["http://127.0.0.1:8080", "http://localhost:1"])
def test_http_to_loopback_needs_allow_http(url: str) -> None:
    with pytest.raises(ConfigError) as caught:
        check_broker_url(url, False, "b.toml: sites.s")
    assert "b.toml: sites.s.allow_http = true" in caught.value.message
    assert "https://" in caught.value.message


@pytest.mark.parametrize(
    "url",
    [
        "http://broker.example.org",
        "http://10.0.0.1:80",
        "http://[2001:db8::1]/",
        "http://localhost.example.org",
        "http://128.0.0.1",
    ],
)
def test_http_never_allowed_for_other_hosts(url: str) -> None:
    with pytest.raises(ConfigError) as caught:
        check_broker_url(url, True, "b.toml: sites.s")
    assert "b.toml: sites.s.url" in caught.value.message
    assert "use https://" in caught.value.message


@pytest.mark.parametrize(
    "url", ["ftp://broker", "broker.example.org", "https://u:p@broker", "https://b/?token=x"]
)
def test_other_url_mistakes_are_config_errors(url: str) -> None:
    with pytest.raises(ConfigError):
        check_broker_url(url, False, "w")


def test_https_is_always_fine() -> None:
    assert check_broker_url("https://broker.example.org:50443/", False, "w") == (
        "https://broker.example.org:50443"
    )
    assert not is_loopback("broker.example.org")
    assert is_loopback("127.0.0.2") and is_loopback("::1") and is_loopback("LOCALHOST")


# --- what counts as this machine ----------------------------------------------------------


@pytest.mark.parametrize(
    "host",
    [
        "127.0.0.1",
        "127.255.255.254",
        "127.0.0.2",
        "::1",
        "::1%lo",  # a zone does not make ::1 leave the machine
        "0:0:0:0:0:0:0:1",
        "::ffff:127.0.0.1",  # IPv4-mapped: a dual-stack socket sends it to 127.0.0.1
        "::ffff:7f00:5",
        "localhost",
        "LocalHost",
    ],
)
def test_loopback_hosts(host: str) -> None:
    assert is_loopback(host)


@pytest.mark.parametrize(
    "host",
    [
        "",
        "0.0.0.0",  # every interface: the network too
        "::",
        "128.0.0.1",
        "10.0.0.1",
        "::ffff:10.0.0.1",
        "::2",
        "broker.example.org",
        "localhost.",  # an absolute name skips /etc/hosts: DNS would decide where it goes
        "localhost.localdomain",  # only an /etc/hosts convention
        "localhost.example.org",
        "sub.localhost",
        "[::1]",  # URL syntax, not a host
        "127.1",  # short forms: the resolver's business, not an address we read
        " 127.0.0.1",
        "127.0.0.1 ",
    ],
)
def test_hosts_that_may_leave_the_machine(host: str) -> None:
    assert not is_loopback(host)


def test_the_broker_config_uses_the_same_loopback_rule(tmp_path: Path) -> None:
    from broker.config import load_config

    def plain_http_on(host: str) -> bool:
        path = tmp_path / "broker.toml"
        path.write_text(f'[storage]\ndata_dir = "d"\n[server]\ntls = false\nhost = "{host}"\n')
        try:
            load_config(str(path))
        except ConfigError:
            return False
        return True

    for host in ("127.0.0.1", "::1", "localhost", "::ffff:127.0.0.1"):
        assert plain_http_on(host), host
    for host in ("0.0.0.0", "localhost.", "localhost.localdomain", "[::1]"):
        assert not plain_http_on(host), host


@pytest.mark.parametrize("host", ["[::ffff:127.0.0.1]", "LOCALHOST", "127.0.0.9"])
def test_broker_urls_on_this_machine_may_use_http(host: str) -> None:
    url = f"http://{host}:8080"
    assert check_broker_url(url, True, "w") == url


@pytest.mark.parametrize("host", ["localhost.", "localhost.localdomain", "[::ffff:10.1.2.3]"])
def test_broker_urls_that_may_leave_the_machine_need_https(host: str) -> None:
    with pytest.raises(ConfigError, match="use https://"):
        check_broker_url(f"http://{host}:8080", True, "w")


# --- which endpoint a config section names -------------------------------------------------


@dataclass(frozen=True)
class Section:
    url: str = "https://broker.example.org"
    token_file: str = "/t"
    ca_bundle: str | None = "/ca.pem"
    allow_http: bool = False
    where: str = "site.toml: agent"
    urls: tuple[str, ...] = ()
    read_timeout: float = 60.0


def test_endpoint_of_a_config_section() -> None:
    assert endpoint_of(Section()) == BrokerEndpoint(
        "https://broker.example.org", "/t", "/ca.pem", False, "site.toml: agent"
    )
    assert endpoint_of(Section(where=""), "sites.s").where == "sites.s"
    assert endpoint_of(Section(where="")).where == "broker"
    assert endpoint_of(Section(read_timeout=2.0)).read_timeout == 2.0


# --- the token file ------------------------------------------------------------------------


def test_token_read_from_private_file(tmp_path: Path) -> None:
    assert read_token(str(write_token(tmp_path / "t", 0o600))) == TOKEN
    assert read_token(str(write_token(tmp_path / "r", 0o400))) == TOKEN


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644, 0o620, 0o601])
def test_token_file_open_to_others_is_refused(tmp_path: Path, mode: int) -> None:
    path = write_token(tmp_path / "token", mode)
    with pytest.raises(ConfigError) as caught:
        read_token(str(path), "site.toml: agent")
    message = caught.value.message
    assert f"chmod 600 {path}" in message
    assert "site.toml: agent.token_file" in message
    assert TOKEN not in message


def test_missing_or_malformed_token_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        read_token(str(tmp_path / "nope"))
    bad = write_token(tmp_path / "bad", 0o600, "two words-that-are-long-enough-to-count\n")
    with pytest.raises(ConfigError) as caught:
        read_token(str(bad))
    assert "words-that" not in caught.value.message
