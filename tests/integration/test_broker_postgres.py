"""A broker on a PostgreSQL store, end to end: gunicorn, a real agent, a real ``mint-bridge
run``; and ``broker migrate`` as an operator runs it (before the first start, repeated, and
refused on a schema newer than the broker).

PostgreSQL is a real server (``tests.support.postgres``); with CI=true it must start.
"""

from __future__ import annotations

import hashlib
import os
import uuid
from pathlib import Path

import psycopg
import pytest

from broker.store.postgres_schema import SCHEMA_VERSION
from tests.support.broker import BrokerUnavailable, start_broker
from tests.support.postgres import PostgresServer, postgres_server
from tests.support.pull import bridge_config, make_site, run_job, start_agent

__all__ = ["postgres_server"]  # a fixture used here by name


def test_a_broker_on_postgresql_runs_a_job_end_to_end(
    postgres_server: PostgresServer, tmp_path_factory: pytest.TempPathFactory, tmp_path: Path
) -> None:
    url = postgres_server.new_database()
    broker = start_broker(
        tmp_path_factory.mktemp("pg-broker"), storage=f'store = "{url}"', start=False
    )
    try:
        # Not migrated yet: the broker says what to run, and never serves.
        with pytest.raises(BrokerUnavailable, match="mint-bridge broker migrate"):
            broker.start()
        first, again = broker.cli("migrate"), broker.cli("migrate")
        migrated = f"schema version 0 -> {SCHEMA_VERSION}"
        assert first.returncode == 0 and migrated in first.stderr, first.stderr
        assert again.returncode == 0 and "nothing to migrate" in again.stderr, again.stderr
        broker.start()

        site = make_site(broker, tmp_path_factory.mktemp("pg-site") / "site", "pg-site")
        agent = start_agent(site.config("pg-agent"))
        token = tmp_path / "client.token"
        token.write_text(broker.token("client", "node01") + "\n")
        token.chmod(0o600)
        config = bridge_config(tmp_path / "bridge.toml", broker.url, broker.ca_bundle, token,
                               ["pg-site"])  # fmt: skip
        module = tmp_path / "module"
        module.mkdir()
        blob = os.urandom((1 << 20) + 3)
        (module / "in.bin").write_bytes(blob)
        job_id = str(uuid.uuid4())
        try:
            code, out, err = run_job(
                config, "--site", "pg-site", "--command", "checksum", "--job-id", job_id,
                "-i", "in.bin", "-o", "out", cwd=module,
            )  # fmt: skip
        finally:
            assert agent.stop() == 0, agent.text()
        assert code == 0, err
        assert "checked 1 files" in out
        sums = (module / "out/sums.txt").read_text()
        assert f"{hashlib.sha256(blob).hexdigest()}  in.bin" in sums
        with psycopg.connect(url) as conn:
            row = conn.execute("SELECT state FROM jobs WHERE job_id = %s", (job_id,)).fetchone()
        assert row == ("finished",)  # the job lived in PostgreSQL, not in a SQLite file
        assert not (broker.data_dir / "broker.sqlite3").exists()

        # A database a newer broker migrated: this one neither serves on it nor migrates it.
        broker.stop()
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("INSERT INTO schema_version VALUES (99, 'later', 0)")
        with pytest.raises(BrokerUnavailable, match="newer than this broker's"):
            broker.start()
        refused = broker.cli("migrate")
        assert refused.returncode != 0 and "newer than this broker's" in refused.stderr
    finally:
        broker.stop()
