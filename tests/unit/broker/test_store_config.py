"""Which store broker.toml selects: ``[storage] store`` URLs, their errors and passwords.

An error names the file and the key and never quotes the value (it may hold a password);
``shown`` (what logs and messages use) never holds a password either.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from bridge.core.errors import ConfigError
from broker.config import load_config
from broker.store.locations import POSTGRESQL, SQLITE, parse_store_url, read_password

BASE = '[server]\ntls = false\nhost = "127.0.0.1"\n[storage]\ndata_dir = "d"\n'


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "broker.toml"
    path.write_text(BASE + text)
    return str(path)


def test_without_store_the_default_is_sqlite_in_the_data_dir(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, ""))
    assert config.store.kind == SQLITE and config.store_location is None
    assert config.store.path == str(tmp_path / "d" / "broker.sqlite3") == config.database


def test_a_sqlite_url_names_its_file(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, f'store = "sqlite://{tmp_path}/x/b.sqlite3"\n'))
    assert config.store.kind == SQLITE and config.store.path == f"{tmp_path}/x/b.sqlite3"


def test_a_postgresql_url_with_a_password_file(tmp_path: Path) -> None:
    (tmp_path / "pw").write_text("s3cret\n")
    config = load_config(write(
        tmp_path, 'store = "postgresql://mint@db.example:5433/broker"\npassword_file = "pw"\n'
    ))  # fmt: skip
    assert config.store.kind == POSTGRESQL
    assert config.store.password_file == str(tmp_path / "pw")
    assert read_password(config.store) == "s3cret"
    assert config.store.shown == "postgresql://mint@db.example:5433/broker"


def test_shown_and_repr_never_hold_the_password() -> None:
    location = parse_store_url("postgres://mint:s3cret@db:5432/broker?sslmode=require")
    assert location.shown == "postgres://mint@db:5432/broker"
    assert "s3cret" not in repr(location)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('store = "mysql://u@h/db"', "storage.store: unknown kind of store"),
        ('store = "sqlite://relative.sqlite3"', "storage.store: a SQLite store is sqlite:///"),
        ('store = "postgresql://u:s3cret@h:5432/"', "storage.store: name the database"),
        ('store = "postgresql://u:s3cret@h:99999/db"', "storage.store: the port must be"),
        ("store = 5", "storage.store: must be a str"),
        ('password_file = "pw"', "storage.password_file: is only for a postgresql://"),
        ('store = "sqlite:///b.sqlite3"\npassword_file = "pw"',
         "storage.password_file: is only for a postgresql://"),
    ],
)  # fmt: skip
def test_a_bad_store_names_the_key_and_hides_the_value(
    tmp_path: Path, text: str, message: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, text + "\n"))
    assert message in str(caught.value) and "s3cret" not in str(caught.value)


def test_the_embedded_default_never_imports_psycopg(tmp_path: Path) -> None:
    config = write(tmp_path, "")
    code = (
        "import sys\n"
        "from broker.app import create_app\n"
        "from broker.config import load_config\n"
        f"create_app(load_config({config!r}))\n"
        "assert 'psycopg' not in sys.modules, 'psycopg was imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
