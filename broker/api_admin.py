"""The admin API (``/api/v1/admin``): what an operator looks at. Admin tokens only.

Read-only, but for ``reload``: all jobs, queue depth and the oldest waiting job per site, and
when each agent was last seen; ``POST reload`` reads broker.toml's ``[legacy]`` section again.
It never shows a token or a token hash (``broker token list`` on the server does).
"""

from __future__ import annotations

from flask import Blueprint, Response, request

from broker import auth
from broker.api_base import answer, json_body
from broker.api_client import LIST_LIMIT
from broker.auth import SUBJECT_NAME
from broker.legacy.api_base import reload_from_file
from broker.runtime import current
from broker.store import Scope
from broker.validation import parse_no_fields, query_state, text

bp = Blueprint("admin_api", __name__, url_prefix="/api/v1/admin")
bp.before_request(
    auth.require(lambda: current().store, {Scope.ADMIN}, lambda: current().clock())
)


def _optional_name(key: str) -> str | None:
    value = request.args.get(key)
    return None if not value else text(value, key, 64, pattern=SUBJECT_NAME)


@bp.get("/jobs")
def all_jobs() -> Response:
    jobs = current().store.list_jobs(
        client=_optional_name("client"),
        site=_optional_name("site"),
        state=query_state(request.args),
        limit=LIST_LIMIT,
    )
    return answer({"jobs": [job.document() for job in jobs]})


@bp.get("/queues")
def queues() -> Response:
    broker = current()
    now = broker.clock()
    return answer({
        "sites": [
            {
                "site": stats.site,
                "queued": stats.queued,
                "claimed": stats.claimed,
                "running": stats.running,
                "oldest_queued_at": stats.oldest_queued_at,
                "oldest_wait": None if stats.oldest_queued_at is None
                else max(0.0, now - stats.oldest_queued_at),
            }
            for stats in broker.store.queue_stats()
        ],
        "long_polls": broker.notifier.waiting(),
    })  # fmt: skip


@bp.get("/agents")
def agents() -> Response:
    broker = current()
    now = broker.clock()
    return answer({
        "agents": [
            {"site": seen.site, "agent_id": seen.agent_id, "last_seen": seen.last_seen,
             "seconds_ago": max(0.0, now - seen.last_seen)}
            for seen in broker.store.agents_seen()
        ]
    })  # fmt: skip


@bp.post("/reload")
def reload() -> Response:
    """Put broker.toml's [legacy] section (switch, whitelist, limits) in force now."""
    parse_no_fields(json_body(required=False))
    return answer(reload_from_file())
