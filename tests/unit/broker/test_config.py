"""broker.toml: defaults, units, relative paths, and errors naming the file and the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from bridge.core.broker_endpoint import is_loopback
from bridge.core.errors import ConfigError
from broker.config import load_config
from broker.edge_worker import EdgeWorker
from broker.serve import ACCESS_LOG_FORMAT, gunicorn_settings


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "broker.toml"
    path.write_text(text)
    return str(path)


def test_a_full_config_with_units_and_relative_paths(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, """
[server]
host = "0.0.0.0"
port = 8443
cert = "tls/broker.crt"
key = "/etc/ssl/broker.key"
threads = 300
[storage]
data_dir = "state"
[jobs]
lease_ttl = "90s"
queue_ttl = "2h"
retention = "3d"
[limits]
max_input_size = "10GiB"
"""))
    assert config.cert == str(tmp_path / "tls/broker.crt") and config.key == "/etc/ssl/broker.key"
    assert config.data_dir == str(tmp_path / "state")
    assert (config.lease_ttl, config.queue_ttl, config.retention) == (90, 7200, 3 * 86400)
    assert config.max_input_size == 10 << 30 and config.max_result_size is None
    settings = gunicorn_settings(config)
    assert settings["workers"] == 1 and settings["worker_class"] is EdgeWorker
    # gunicorn's own pool is the ordinary requests'; the long-poll pool is the worker's.
    assert settings["threads"] == 64 and config.threads == 300
    assert settings["worker_connections"] == 4096 and settings["certfile"] == config.cert
    assert settings["bind"] == ["0.0.0.0:8443"]


def test_access_log_never_records_query_strings_or_headers() -> None:
    for atom in ("%(r)s", "%(q)s", "%(u)s", "}i", "%(f)s", "%(a)s"):
        assert atom not in ACCESS_LOG_FORMAT


LOOP = '[storage]\ndata_dir = "d"\n[server]\ntls = false\nhost = "127.0.0.1"\n'


def test_the_connection_front_keys(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, LOOP + """threads = 100
request_threads = 8
handshake_timeout = "2s"
header_timeout = "1.5s"
max_connections = 200
max_connections_per_address = 20
[limits]
min_body_rate = "4KiB"
"""))
    assert (config.threads, config.request_threads) == (100, 8)
    assert (config.handshake_timeout, config.header_timeout) == (2.0, 1.5)
    assert (config.max_connections, config.max_connections_per_address) == (200, 20)
    assert config.min_body_rate == 4096
    settings = gunicorn_settings(config)
    assert (settings["threads"], settings["worker_connections"]) == (8, 200)
    defaults = load_config(write(tmp_path, LOOP))
    assert (defaults.handshake_timeout, defaults.header_timeout) == (10.0, 10.0)
    assert (defaults.max_connections, defaults.max_connections_per_address) == (4096, 256)


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ("[storage]\n", "storage.data_dir: is required"),
        ('[storage]\ndata_dir = "d"\n[server]\nport = "x"\ncert = "c"\nkey = "k"\n',
         "server.port: must be a int"),
        ('[storage]\ndata_dir = "d"\n', "server.cert: cert and key are required"),
        ('[storage]\ndata_dir = "d"\n[server]\ntls = false\n',
         "server.tls: tls = false is allowed"),
        ('[storage]\ndata_dir = "d"\n[jobs]\nlease_ttl = "soon"\n[server]\ntls = false\n'
         'host = "127.0.0.1"\n', "jobs.lease_ttl"),
        ('[storage]\ndata_dir = "d"\n[server]\ntls = false\nhost = "::1"\nthreds = 5\n',
         "unknown key 'threds'"),
        ('[storage]\ndata_dir = "d"\n[server]\ntls = false\nhost = "::1"\nthreads = 2\n',
         "server.threads"),
        ('[storag]\n', "unknown key 'storag'"),
        (LOOP + 'handshake_timeout = "0s"\n', "server.handshake_timeout: must be longer than 0"),
        (LOOP + 'header_timeout = "soon"\n', "server.header_timeout"),
        (LOOP + 'header_timeout = "2h"\n', "server.header_timeout: must be longer than 0 s and"),
        (LOOP + "request_threads = 0\n", "server.request_threads: must be between 1 and 4096"),
        (LOOP + "max_connections = 100\n", "server.max_connections: must be between 336 and"),
        (LOOP + "max_connections_per_address = 0\n",
         "server.max_connections_per_address: must be between 1 and 4096, not 0"),
        (LOOP + 'max_connections_per_address = "9"\n',
         "server.max_connections_per_address: must be a int"),
        (LOOP + '[limits]\nmin_body_rate = 0\n', "limits.min_body_rate: must be at least 1"),
        (LOOP + '[limits]\nbody_timeout = "0s"\n', "limits.body_timeout: must be longer"),
    ],
)  # fmt: skip
def test_errors_name_the_file_and_the_key(tmp_path: Path, text: str, where: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as raised:
        load_config(path)
    assert str(raised.value).startswith(path) and where in str(raised.value)


def test_plain_http_only_on_loopback(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, '[storage]\ndata_dir = "d"\n[server]\ntls = false\n'
                                         'host = "127.0.0.1"\n'))  # fmt: skip
    assert not config.tls and "certfile" not in gunicorn_settings(config)
    assert is_loopback("::1") and is_loopback("localhost") and is_loopback("127.0.0.2")
    assert not is_loopback("0.0.0.0") and not is_loopback("broker.example.org")


def test_the_commented_example_config_loads() -> None:
    example = Path(__file__).resolve().parents[3] / "examples" / "broker.toml"
    config = load_config(str(example))
    assert config.tls and config.port == 50443 and config.max_input_size is None


def test_logging_format_is_text_or_json(tmp_path: Path) -> None:
    base = '[server]\nhost = "127.0.0.1"\ntls = false\n[storage]\ndata_dir = "d"\n'
    assert load_config(write(tmp_path, base)).log_format == "text"
    config = load_config(write(tmp_path, base + '[logging]\nformat = "json"\n'))
    assert config.log_format == "json"
    assert gunicorn_settings(config)["logger_class"].__name__ == "JsonLogger"
    with pytest.raises(ConfigError, match=r"logging\.format: must be one of text, json"):
        load_config(write(tmp_path, base + '[logging]\nformat = "yaml"\n'))


def test_an_unknown_storage_key_is_named_not_ignored(tmp_path: Path) -> None:
    # A misspelt `store` once left the broker on SQLite in data_dir without a word.
    path = write(
        tmp_path,
        '[server]\nhost = "127.0.0.1"\ntls = false\n'
        '[storage]\ndata_dir = "d"\nstroe = "postgresql://mint@db.example.org/mint"\n',
    )
    with pytest.raises(ConfigError) as raised:
        load_config(path)
    said = str(raised.value)
    assert said.startswith(f"{path}: storage: unknown key 'stroe'; did you mean 'store'?")
