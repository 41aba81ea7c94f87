"""What the views of every API area share: JSON bodies, job lookup, long polls, answers.

A long poll registers with the notifier before it looks at the store and is woken by the
commit that changes what it waits for (``broker.notify``); it never polls the store on a
timer. Every few seconds it asks the kernel whether its client is still connected
(``broker.delivery``), so a poll whose client went away ends and frees its thread and its
place in the token's long-poll count. Nothing here decides who may see a job: each area checks
that with the loaded job.
"""

from __future__ import annotations

import contextlib
import logging
import uuid
from collections.abc import Callable, Collection, Iterable, Iterator
from typing import Any, TypeVar

from flask import Response, jsonify, request

from bridge.core.errors import BridgeError
from bridge.core.job import check_job_id
from broker import auth, defaults
from broker.delivery import client_connected
from broker.errors import NotFound, RateLimited, StoreError, TooLarge
from broker.notify import Waiter
from broker.runtime import current
from broker.store import JobRecord
from broker.transfers import read_small_body
from broker.validation import parse_json

T = TypeVar("T")

log = logging.getLogger(__name__)


def json_body(*, required: bool = True) -> dict[str, Any]:
    """The request's JSON object, read with a size limit (a control body is small)."""
    limit = current().config.max_json_size
    length = request.content_length
    if length is not None and length > limit:
        raise TooLarge(f"the JSON body has {length} bytes; the limit is {limit}")
    raw = read_small_body(limit, current().config.body_timeout)
    if len(raw) > limit:
        raise TooLarge(f"the JSON body is larger than the limit of {limit} bytes")
    return parse_json(raw, required=required)


def load_job(job_id: str) -> JobRecord:
    try:
        check_job_id(job_id)
    except BridgeError:
        raise NotFound(f"no job {job_id!r:.60}: job ids are UUID4s") from None
    job = current().store.get_job(job_id)
    if job is None:
        raise NotFound(f"no job {job_id} (never created, or deleted after its retention)")
    return job


def wait_for(
    keys: Iterable[str],
    seconds: float,
    check: Callable[[], T | None],
    commands: Collection[str] | None = None,
    others: Collection[str] | None = None,
) -> T | None:
    """``check()`` as soon as it returns something, else None after ``seconds`` or once the
    client has closed its connection; ``commands``, ``others``: the site work that wakes it
    (``broker.notify.Waiter.takes``)."""
    found = check()
    if found is not None or seconds <= 0:
        return found
    broker = current()
    owner = auth.current().token_id
    with broker.notifier.listen(keys, owner, seconds, commands, others) as waiter, \
            _slot_on_every_instance(owner, seconds):
        while True:
            waiter.rearm()
            found = check()
            waiter.looked()
            if found is not None or not _changed(waiter):
                return found


@contextlib.contextmanager
def _slot_on_every_instance(owner: str, seconds: float) -> Iterator[None]:
    """Count the poll against its token's limit on all instances of a shared store (429 once
    the token holds it anywhere); one instance's own count is ``broker.notify``'s."""
    broker = current()
    limit, now, poll_id = broker.config.long_polls_per_token, broker.clock(), uuid.uuid4().hex
    until = now + seconds + defaults.POLL_SLOT_GRACE
    if not broker.store.hold_poll(poll_id, owner, limit, until, now):
        raise RateLimited(f"this token already holds {limit} long polls on the broker's "
                          "instances together; wait for one to return before starting another",
                          retry_after=1)  # fmt: skip
    try:
        yield
    finally:
        try:
            broker.store.end_poll(poll_id)
        except StoreError as exc:  # the row lapses by itself at ``until``
            log.warning("long poll %s of token %s: its slot stays until it lapses: %s",
                        poll_id, owner, exc)  # fmt: skip


def _changed(waiter: Waiter) -> bool:
    """Wait for a change; False at the deadline or when nobody waits for the answer anymore."""
    while not waiter.wait(defaults.CONNECTION_CHECK):
        if waiter.remaining() <= 0 or not client_connected():
            return False
    return True


def document(job: JobRecord, status: int = 200) -> Response:
    response = jsonify(job.document())
    response.status_code = status
    response.headers["Cache-Control"] = "no-store"
    return response


def answer(body: dict[str, Any], status: int = 200) -> Response:
    response = jsonify(body)
    response.status_code = status
    response.headers["Cache-Control"] = "no-store"
    return response


def empty(status: int, headers: dict[str, str] | None = None) -> Response:
    response = Response(status=status, headers=headers or {})
    response.headers["Cache-Control"] = "no-store"
    return response
