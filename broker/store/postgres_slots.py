"""Per-token long-poll slots shared by every broker instance on one PostgreSQL database.

Each instance counts its own long polls in memory (``broker.notify``); behind a load balancer
that spreads one token's polls over several instances, that alone would let the token hold
the limit on each. So a poll that is about to wait also holds a row here (``hold``), taken
only while fewer than the limit of that token's rows are live, and deletes it when it returns
(``end``). Two instances taking the token's last slot at once are serialised by a transaction
advisory lock keyed by the token, so the count and the insert cannot interleave.

A row carries the moment it lapses (the poll's own deadline plus ``defaults.POLL_SLOT_GRACE``, added
by the caller): an
instance killed with ``kill -9`` never deletes its rows, and they stop counting by then, so
its slots are free again at most one long-poll wait (``defaults.MAX_WAIT``) plus the grace
after the kill. Lapsed rows are deleted by later holds of the same token. A row holds a token
id (never a token) and times; this module never builds SQL from data.
"""

from __future__ import annotations

from broker.store.sql_tx import Tx

# Any constant: the advisory lock space of the slots (the token id is hashed into the key).
_LOCK_SPACE = 0x706F6C6C


def hold(tx: Tx, poll_id: str, token_id: str, limit: int, until: float, now: float) -> bool:
    """Take a slot of ``token_id`` for ``poll_id`` until ``until``; False when ``limit``
    live slots are held already (on any instance)."""
    tx.execute("SELECT pg_advisory_xact_lock(?, hashtext(?))", (_LOCK_SPACE, token_id))
    tx.execute("DELETE FROM poll_slots WHERE token_id = ? AND until < ?", (token_id, now))
    held = tx.execute(
        "INSERT INTO poll_slots (poll_id, token_id, until) SELECT ?, ?, ?"
        " WHERE (SELECT count(*) FROM poll_slots WHERE token_id = ?) < ?",
        (poll_id, token_id, until, token_id, limit),
    )
    return held.rowcount == 1


def end(tx: Tx, poll_id: str) -> None:
    tx.execute("DELETE FROM poll_slots WHERE poll_id = ?", (poll_id,))


def held(tx: Tx, token_id: str, now: float) -> int:
    """How many live slots ``token_id`` holds."""
    row = tx.execute("SELECT count(*) AS n FROM poll_slots WHERE token_id = ? AND until >= ?",
                     (token_id, now)).fetchone()  # fmt: skip
    return int(row["n"])
