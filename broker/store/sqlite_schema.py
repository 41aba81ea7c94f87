"""The SQLite backend's tables and their migration steps, applied as the database opens.

SQLite is the embedded default: a new data dir gets its tables on first open, and an existing
one is brought to this code's version in the same write transaction. A database newer than
this code is refused (``migrations.SchemaMismatch``). Besides ``schema_version``, the version
is kept in ``PRAGMA user_version``, which brokers before ``schema_version`` checked, so they
refuse a newer database too.

This module never builds SQL from data.
"""

from __future__ import annotations

from broker.store import migrations
from broker.store.migrations import Migration
from broker.store.sql_tx import Tx

_JOBS = """
CREATE TABLE IF NOT EXISTS jobs (
    job_id TEXT PRIMARY KEY,
    client TEXT NOT NULL,
    site TEXT NOT NULL,
    command TEXT NOT NULL,
    params TEXT NOT NULL,
    metadata TEXT NOT NULL,
    walltime_limit REAL,
    state TEXT NOT NULL,
    version INTEGER NOT NULL,
    outcome TEXT,
    skipped TEXT NOT NULL DEFAULT '[]',
    stdout_size INTEGER NOT NULL DEFAULT 0,
    stderr_size INTEGER NOT NULL DEFAULT 0,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    agent_lost INTEGER NOT NULL DEFAULT 0,
    agent_id TEXT,
    native_id TEXT,
    lease_epoch INTEGER NOT NULL DEFAULT 0,
    lease_expires REAL,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    queued_at REAL,
    finished_at REAL,
    acked INTEGER NOT NULL DEFAULT 0,
    results_deleted INTEGER NOT NULL DEFAULT 0
)
"""

_INPUTS = """
CREATE TABLE IF NOT EXISTS inputs (
    job_id TEXT NOT NULL REFERENCES jobs (job_id) ON DELETE CASCADE,
    position INTEGER NOT NULL,
    name TEXT NOT NULL,
    size INTEGER NOT NULL,
    sha256 TEXT NOT NULL,
    mode INTEGER NOT NULL,
    received INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (job_id, name)
)
"""

_RESULTS = """
CREATE TABLE IF NOT EXISTS results (
    job_id TEXT NOT NULL REFERENCES jobs (job_id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    size INTEGER NOT NULL,
    sha256 TEXT NOT NULL,
    received INTEGER NOT NULL DEFAULT 0,
    mode INTEGER NOT NULL DEFAULT 420,
    listed INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (job_id, name)
)
"""

_AGENTS = """
CREATE TABLE IF NOT EXISTS agents (
    site TEXT NOT NULL,
    agent_id TEXT NOT NULL,
    last_seen REAL NOT NULL,
    PRIMARY KEY (site, agent_id)
)
"""

_TOKENS = """
CREATE TABLE IF NOT EXISTS tokens (
    token_id TEXT PRIMARY KEY,
    sha256 TEXT NOT NULL,
    scope TEXT NOT NULL,
    subject TEXT NOT NULL,
    created_at REAL NOT NULL,
    revoked_at REAL
)
"""

_LEGACY = """
CREATE TABLE IF NOT EXISTS legacy_jobs (
    job_id TEXT PRIMARY KEY REFERENCES jobs (job_id) ON DELETE CASCADE,
    calc_info TEXT NOT NULL,
    progress TEXT,
    status TEXT,
    poller TEXT,
    epoch INTEGER NOT NULL DEFAULT 0,
    result_types TEXT NOT NULL DEFAULT '{}'
)
"""

# Step 1 is the schema of the brokers before schema_version, written with IF NOT EXISTS: such
# a database (user_version 1, no schema_version) goes through it unchanged and gets it recorded.
MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "jobs, inputs, results, agents, tokens, legacy_jobs",
        (
            _JOBS,
            "CREATE INDEX IF NOT EXISTS jobs_by_queue ON jobs (site, state, queued_at)",
            "CREATE INDEX IF NOT EXISTS jobs_by_client ON jobs (client, created_at)",
            _INPUTS,
            _RESULTS,
            _AGENTS,
            _TOKENS,
            _LEGACY,
        ),
    ),
    Migration(2, "tokens.expires_at", ("ALTER TABLE tokens ADD COLUMN expires_at REAL",)),
    Migration(
        3,
        "job_events, tokens.last_used, indexes for pages of jobs",
        (
            """
            CREATE TABLE job_events (
                seq INTEGER PRIMARY KEY,
                job_id TEXT NOT NULL REFERENCES jobs (job_id) ON DELETE CASCADE,
                at REAL NOT NULL,
                state TEXT NOT NULL,
                agent_id TEXT,
                note TEXT
            )
            """,
            "CREATE INDEX job_events_by_job ON job_events (job_id, seq)",
            "ALTER TABLE tokens ADD COLUMN last_used REAL",
            # Pages of jobs walk these newest first (keyset: created_at, job_id).
            "CREATE INDEX jobs_by_created ON jobs (created_at, job_id)",
            "CREATE INDEX jobs_by_state_created ON jobs (state, created_at, job_id)",
            "CREATE INDEX jobs_by_site_created ON jobs (site, created_at, job_id)",
            "CREATE INDEX jobs_by_finish ON jobs (finished_at) WHERE finished_at IS NOT NULL",
        ),
    ),
    # Step 4 (poll_slots) is PostgreSQL's alone: one SQLite file is served by one instance,
    # which counts its long polls itself (``broker.notify``).
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
                created_at REAL NOT NULL,
                used_at REAL NOT NULL,
                expires_at REAL NOT NULL
            )
            """,
            # Revoking a token ends its sessions; the oldest go first when there are too many.
            "CREATE INDEX console_sessions_by_token ON console_sessions (token_id)",
            "CREATE INDEX console_sessions_by_created ON console_sessions (created_at)",
        ),
    ),
)

SCHEMA_VERSION = migrations.latest(MIGRATIONS)


def migrate(tx: Tx, now: float, where: str) -> tuple[int, int]:
    """Bring the database to ``SCHEMA_VERSION``, or refuse one that is newer: (version
    before, version after)."""
    tx.execute(migrations.VERSION_TABLE)
    recorded = migrations.recorded_version(tx)
    earlier = int(tx.execute("PRAGMA user_version").fetchone()[0])
    before = max(recorded, earlier)
    migrations.pending(before, MIGRATIONS, where)
    migrations.apply(tx, migrations.pending(recorded, MIGRATIONS, where), now, where)
    # A constant, not data: PRAGMA takes no parameters.
    tx.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
    return before, SCHEMA_VERSION
