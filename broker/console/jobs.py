"""The console's job list, job page and cancel button.

The list is a keyset page of ``Store.page_jobs`` (newest first, no OFFSET), so page 1,000 costs
what page 1 does with 100,000 jobs in the store. The job page shows the timeline of every state
change (``Store.job_events``), the end of each log, inputs and results with size and SHA-256,
the lease and agent. Only admins cancel; the cancel goes through the store, whose change wakes
the agent's lease poll like a cancel from the API.

Log text is shown as text (decoded with replacement characters, autoescaped): it came from the
site and may hold anything.
"""

from __future__ import annotations

import logging
from typing import Any

from flask import render_template, request, url_for
from werkzeug.wrappers import Response as BaseResponse

from broker import defaults
from broker.api_base import load_job
from broker.console import access
from broker.console.blueprint import bp
from broker.console.filters import cursor_of, filter_args, job_query
from broker.runtime import Broker, current
from broker.status import job_detail, job_row
from broker.store import LOG_STREAMS, JobRecord, State

log = logging.getLogger(__name__)


@bp.get("/jobs")
def jobs() -> str:
    broker = current()
    query = job_query(request.args)
    size = defaults.CONSOLE_PAGE_SIZE
    found = broker.store.page_jobs(query, size + 1)  # one more: is there a next page?
    page, more = found[:size], len(found) > size
    shown: dict[str, Any] = filter_args(request.args)
    next_url = url_for("console.jobs", **shown, before=cursor_of(page[-1])) if more else None
    now = broker.clock()
    return render_template(
        "jobs.html", page="jobs", rows=[job_row(job, now) for job in page], filters=shown,
        states=[s.value for s in State], next_url=next_url, first=query.before is None,
        first_url=url_for("console.jobs", **shown), names=_job_names(page),
    )  # fmt: skip


def _job_names(jobs: list[JobRecord]) -> dict[str, str]:
    """The name a client gave each job (its ``name`` metadata), if any."""
    return {job.job_id: job.spec.metadata["name"] for job in jobs if "name" in job.spec.metadata}


def log_tail(broker: Broker, job: JobRecord, stream: str) -> tuple[str, bool]:
    """The end of one log as text, and whether earlier bytes were left out."""
    held = job.logs.get(stream, 0)
    start = max(0, held - defaults.CONSOLE_LOG_TAIL)
    data = broker.files.read_range(job.job_id, "logs", stream, start, held - start)
    if start > 0:  # begin at a whole line, not in the middle of a character
        data = data.partition(b"\n")[2]
    return data.decode("utf-8", errors="replace"), start > 0


@bp.get("/jobs/<job_id>")
def job(job_id: str) -> str:
    broker = current()
    record = load_job(job_id)
    logs = {stream: log_tail(broker, record, stream) for stream in LOG_STREAMS}
    return render_template(
        "job.html", page="jobs", job=record, detail=job_detail(record),
        events=broker.store.job_events(job_id), logs=logs, now=broker.clock(),
        can_cancel=access.is_admin() and not record.state.is_final,
        name=record.spec.metadata.get("name"),
    )  # fmt: skip


@bp.post("/jobs/<job_id>/cancel")
@access.admin_only
def cancel(job_id: str) -> BaseResponse:
    broker = current()
    before = load_job(job_id)
    after = broker.store.cancel(job_id, broker.clock())
    if after.version != before.version:
        who = access.session()
        log.info("%s: cancel requested from the console by %s:%s (token %s); now %s",
                 job_id, who.scope, who.subject, who.token_id, after.state)  # fmt: skip
    response = BaseResponse(status=303)
    response.headers["Location"] = url_for("console.job", job_id=job_id)
    return response
