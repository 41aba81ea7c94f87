"""Fixtures of the broker's unit tests: a real PostgreSQL for the store suite's postgresql
backend (started once per session, only when a test asks for it)."""

from __future__ import annotations

from tests.support.postgres import postgres_server, postgres_url

__all__ = ["postgres_server", "postgres_url"]
