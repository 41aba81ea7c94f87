"""What a pulled job reports to the broker at its end: its result files, or why it was rejected.

Results are uploaded one by one from the work dir, each hashed while it is read and opened
without following a symlink out of the work dir; a file changed or replaced after collection
(a process the job left behind) is reported as skipped, not sent half-read. A rejected job
reports the most specific error class the bridge knows, so the bridge raises the same error.

Never: read a file outside the work dir, or go on uploading once the lease says to stop (the
caller's ``checkpoint`` runs before each file).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import Any

from bridge.core import outbound
from bridge.core.errors import (
    AuditFailed,
    BridgeError,
    CommandNotAllowed,
    InputRejected,
    JobRejected,
    ParameterInvalid,
    ProtocolError,
    SiteError,
    StagingError,
    TransferCorrupted,
)
from bridge.core.results import ResultFile, open_result_for_reading
from bridge.core.streams import sha256_stream
from bridge.site.agent_api import AgentApi, Lease
from bridge.site.outgoing import Outgoing, signature

log = logging.getLogger(__name__)

# Error kinds a rejected outcome may name (as ``error_kind``); the bridge raises the same error.
_REJECTION_KINDS = tuple(
    cls.__name__
    for cls in (
        CommandNotAllowed, ParameterInvalid, InputRejected, JobRejected, TransferCorrupted,
        ProtocolError, StagingError, AuditFailed, SiteError,
    )
)  # fmt: skip


def upload_results(
    api: AgentApi,
    lease: Lease,
    workdir: str,
    out: Outgoing,
    checkpoint: Callable[[], None],
    before_send: Callable[[str, int, str], None] | None = None,
) -> list[dict[str, Any]]:
    """Upload each result; returns what was sent, and adds what could not be to
    ``out.skipped``. A digest the egress check already computed is not computed again.

    ``before_send(name, size, sha256)`` runs once a file is hashed, before its first byte
    goes (the audit line); if it raises, nothing more is uploaded."""
    uploaded: list[dict[str, Any]] = []
    root_fd = os.open(workdir, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        for result in out.files:
            checkpoint()
            try:
                sha256 = _upload_one(api, lease, root_fd, result, out, before_send)
            except (StagingError, TransferCorrupted) as exc:
                # Unreadable, or changed or replaced after collection (a process the job left
                # behind): this one is not sent, the others and the outcome still are.
                log.warning("%s: result %s not sent: %s", lease.job_id, result.name, exc)
                out.skipped.append(
                    {"name": result.name, "reason": outbound.scrub(f"not sent: {exc.message}")}
                )
                continue
            uploaded.append(
                {
                    "name": result.name,
                    "size": result.size,
                    "sha256": sha256,
                    "mode": result.mode,
                }
            )
    finally:
        os.close(root_fd)
    return uploaded


def _upload_one(
    api: AgentApi,
    lease: Lease,
    root_fd: int,
    result: ResultFile,
    out: Outgoing,
    before_send: Callable[[str, int, str], None] | None,
) -> str:
    with open_result_for_reading(root_fd, result) as source:
        sha256 = out.sha256.get(result.name)
        if sha256 is None:
            sha256 = sha256_stream(source, result.size, result.name)
        elif signature(source.fileno()) != out.signatures.get(result.name):
            raise StagingError(f"{result.name} changed after it was checked")
        if before_send is not None:
            before_send(result.name, result.size, sha256)
        # Each PATCH is retried on its own and resumes from the broker's offset; the broker
        # checks the bytes against this digest, so a file changed meanwhile is refused there.
        api.upload_result(lease, result.name, source, result.size, sha256)
    return sha256


def rejection_outcome(exc: BridgeError) -> dict[str, Any]:
    """The outcome a job reports when the site rejected it, naming the error's kind."""
    # The most specific class the bridge knows (a SchedulerError is sent as SiteError).
    kind = next((c.__name__ for c in type(exc).__mro__ if c.__name__ in _REJECTION_KINDS), "")
    return {
        "state": "rejected",
        "exit_code": None,
        "signal": None,
        "reason": exc.message,
        "error_kind": kind or "SiteError",
    }
