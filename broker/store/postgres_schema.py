"""The PostgreSQL backend's tables and their migration steps, applied only on request.

The same tables as SQLite's (``sqlite_schema``), numbered alike, in PostgreSQL's types: sizes
and offsets are BIGINT (files pass 2 GiB), times DOUBLE PRECISION (seconds, as everywhere in
the store), flags INTEGER 0/1 so the shared SQL (``sql_jobs``) reads the same on both.
``rowid`` is an identity column named like SQLite's implicit one: the shared SQL orders by it
to break ties of equal times, on both engines, in the order jobs were created.

``mint-bridge broker migrate`` applies the steps (``migrate``), under an advisory lock so two
runs at once apply each step once; a serving broker only checks (``check``). This module never
builds SQL from data.
"""

from __future__ import annotations

from broker.store import migrations
from broker.store.migrations import Migration
from broker.store.sql_tx import Tx

_JOBS = """
CREATE TABLE jobs (
    job_id TEXT PRIMARY KEY,
    rowid BIGINT GENERATED ALWAYS AS IDENTITY UNIQUE,
    client TEXT NOT NULL,
    site TEXT NOT NULL,
    command TEXT NOT NULL,
    params TEXT NOT NULL,
    metadata TEXT NOT NULL,
    walltime_limit DOUBLE PRECISION,
    state TEXT NOT NULL,
    version BIGINT NOT NULL,
    outcome TEXT,
    skipped TEXT NOT NULL DEFAULT '[]',
    stdout_size BIGINT NOT NULL DEFAULT 0,
    stderr_size BIGINT NOT NULL DEFAULT 0,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    agent_lost INTEGER NOT NULL DEFAULT 0,
    agent_id TEXT,
    native_id TEXT,
    lease_epoch BIGINT NOT NULL DEFAULT 0,
    lease_expires DOUBLE PRECISION,
    created_at DOUBLE PRECISION NOT NULL,
    updated_at DOUBLE PRECISION NOT NULL,
    queued_at DOUBLE PRECISION,
    finished_at DOUBLE PRECISION,
    acked INTEGER NOT NULL DEFAULT 0,
    results_deleted INTEGER NOT NULL DEFAULT 0
)
"""

_INPUTS = """
CREATE TABLE inputs (
    job_id TEXT NOT NULL REFERENCES jobs (job_id) ON DELETE CASCADE,
    position INTEGER NOT NULL,
    name TEXT NOT NULL,
    size BIGINT NOT NULL,
    sha256 TEXT NOT NULL,
    mode INTEGER NOT NULL,
    received BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (job_id, name)
)
"""

_RESULTS = """
CREATE TABLE results (
    job_id TEXT NOT NULL REFERENCES jobs (job_id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    size BIGINT NOT NULL,
    sha256 TEXT NOT NULL,
    received BIGINT NOT NULL DEFAULT 0,
    mode INTEGER NOT NULL DEFAULT 420,
    listed INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (job_id, name)
)
"""

_AGENTS = """
CREATE TABLE agents (
    site TEXT NOT NULL,
    agent_id TEXT NOT NULL,
    last_seen DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (site, agent_id)
)
"""

_TOKENS = """
CREATE TABLE tokens (
    token_id TEXT PRIMARY KEY,
    sha256 TEXT NOT NULL,
    scope TEXT NOT NULL,
    subject TEXT NOT NULL,
    created_at DOUBLE PRECISION NOT NULL,
    revoked_at DOUBLE PRECISION
)
"""

_LEGACY = """
CREATE TABLE legacy_jobs (
    job_id TEXT PRIMARY KEY REFERENCES jobs (job_id) ON DELETE CASCADE,
    calc_info TEXT NOT NULL,
    progress TEXT,
    status TEXT,
    poller TEXT,
    epoch BIGINT NOT NULL DEFAULT 0,
    result_types TEXT NOT NULL DEFAULT '{}'
)
"""

MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "jobs, inputs, results, agents, tokens, legacy_jobs",
        (
            _JOBS,
            "CREATE INDEX jobs_by_queue ON jobs (site, state, queued_at, rowid)",
            "CREATE INDEX jobs_by_client ON jobs (client, created_at)",
            "CREATE INDEX jobs_by_finish ON jobs (finished_at) WHERE finished_at IS NOT NULL",
            _INPUTS,
            _RESULTS,
            _AGENTS,
            _TOKENS,
            _LEGACY,
        ),
    ),
    Migration(
        2, "tokens.expires_at", ("ALTER TABLE tokens ADD COLUMN expires_at DOUBLE PRECISION",)
    ),
    Migration(
        3,
        "job_events, tokens.last_used, indexes for pages of jobs",
        (
            """
            CREATE TABLE job_events (
                seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                job_id TEXT NOT NULL REFERENCES jobs (job_id) ON DELETE CASCADE,
                at DOUBLE PRECISION NOT NULL,
                state TEXT NOT NULL,
                agent_id TEXT,
                note TEXT
            )
            """,
            "CREATE INDEX job_events_by_job ON job_events (job_id, seq)",
            "ALTER TABLE tokens ADD COLUMN last_used DOUBLE PRECISION",
            # Pages of jobs walk these newest first (keyset: created_at, job_id).
            "CREATE INDEX jobs_by_created ON jobs (created_at, job_id)",
            "CREATE INDEX jobs_by_state_created ON jobs (state, created_at, job_id)",
            "CREATE INDEX jobs_by_site_created ON jobs (site, created_at, job_id)",
        ),
    ),
    Migration(
        4,
        "poll_slots: per-token long polls counted across instances",
        (
            """
            CREATE TABLE poll_slots (
                poll_id TEXT PRIMARY KEY,
                token_id TEXT NOT NULL,
                until DOUBLE PRECISION NOT NULL
            )
            """,
            "CREATE INDEX poll_slots_by_token ON poll_slots (token_id, until)",
        ),
    ),
    Migration(
        5,
        "console_sessions: web console sessions every instance sees",
        (
            """
            CREATE TABLE console_sessions (
                session_hash TEXT PRIMARY KEY,
                token_id TEXT NOT NULL,
                scope TEXT NOT NULL,
                csrf TEXT NOT NULL,
                created_at DOUBLE PRECISION NOT NULL,
                used_at DOUBLE PRECISION NOT NULL,
                expires_at DOUBLE PRECISION NOT NULL
            )
            """,
            # Revoking a token ends its sessions; the oldest go first when there are too many.
            "CREATE INDEX console_sessions_by_token ON console_sessions (token_id)",
            "CREATE INDEX console_sessions_by_created ON console_sessions (created_at)",
        ),
    ),
)

SCHEMA_VERSION = migrations.latest(MIGRATIONS)

# Any constant: it names the lock `broker migrate` holds while it applies steps.
_MIGRATE_LOCK = 0x6D696E74


def found_version(tx: Tx) -> int:
    """The version recorded (0: a database without the broker's tables)."""
    row = tx.execute("SELECT to_regclass('schema_version') IS NOT NULL AS present").fetchone()
    return migrations.recorded_version(tx) if row is not None and row["present"] else 0


def migrate(tx: Tx, now: float, where: str) -> tuple[int, int]:
    """Apply the steps this database lacks; (version before, version after)."""
    tx.execute("SELECT pg_advisory_xact_lock(?)", (_MIGRATE_LOCK,))
    tx.execute(migrations.VERSION_TABLE)
    found = migrations.recorded_version(tx)
    migrations.apply(tx, migrations.pending(found, MIGRATIONS, where), now, where)
    return found, SCHEMA_VERSION


def check(tx: Tx, where: str, fix: str) -> None:
    migrations.require_current(found_version(tx), MIGRATIONS, where, fix)
