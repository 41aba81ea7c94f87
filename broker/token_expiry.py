"""When tokens stop working: ``--expires`` as an operator types it, and how a token's expiry is
shown (``token list``) and counted (``/health``)."""

from __future__ import annotations

import datetime
import re
from collections.abc import Iterable
from typing import Any

from bridge.core.units import parse_duration
from broker.store import TokenRecord

# Tokens that expire within this many days are flagged in /health, so they are renewed in time.
EXPIRING_DAYS = 14
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}(T\d{2}:\d{2}(:\d{2})?)?Z?")


def parse_expires(value: str, now: float) -> float:
    """The epoch time ``value`` names: a duration from ``now`` (``30d``) or a UTC date."""
    text = value.strip()
    if _DATE.fullmatch(text):
        try:
            moment = datetime.datetime.fromisoformat(text.removesuffix("Z"))
        except ValueError as exc:
            raise ValueError(f"{value!r} is not a valid date: {exc}") from exc
        when = moment.replace(tzinfo=datetime.UTC).timestamp()
    else:
        try:
            seconds = parse_duration(text)
        except ValueError as exc:
            raise ValueError(f"{exc}; or give a UTC date such as 2027-01-31") from exc
        when = now + seconds
    if when <= now:
        raise ValueError(f"{value!r} is not in the future; give e.g. 30d or a later date")
    return when


def iso(moment: float) -> str:
    return datetime.datetime.fromtimestamp(moment, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def describe(record: TokenRecord, now: float) -> tuple[str, str]:
    """(state, expiry) for ``token list``: active, revoked or expired; when it expires."""
    expiry = f"expires {iso(record.expires_at)}" if record.expires_at is not None else "no expiry"
    if record.revoked:
        return "revoked", expiry
    if record.expired(now):
        return "expired", expiry.replace("expires", "expired")
    return "active", expiry


def health(tokens: Iterable[TokenRecord], now: float, days: int = EXPIRING_DAYS) -> dict[str, Any]:
    """Counts of unrevoked tokens that have expired or expire within ``days``."""
    ends = [t.expires_at for t in tokens if not t.revoked and t.expires_at is not None]
    expired = sum(1 for end in ends if end <= now)
    soon = sum(1 for end in ends if now < end <= now + days * 86400)
    return {"expired": expired, "expiring": soon, "expiring_within_days": days,
            "attention": bool(expired or soon)}  # fmt: skip
