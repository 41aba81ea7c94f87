"""The broker's agent API as typed calls: claim, lease, inputs, logs, results, complete.

Every call that acts on a job carries the lease epoch (``Lease-Epoch``), so the broker refuses
a stale agent (``LeaseLost``) and a newer holder's work is never overwritten. One ``AgentApi``
per thread: each has its own HTTP session. Files move through ``bridge.core.broker_transfer``,
the same code (and the same checks) as the bridge's; this module never reads a file body itself.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, BinaryIO
from urllib.parse import quote

from bridge.core import broker_transfer, defaults
from bridge.core.broker_endpoint import endpoint_of
from bridge.core.broker_session import BrokerSession, answer_count, answer_json, answer_seconds
from bridge.core.errors import ProtocolError
from bridge.core.job import check_job_id
from bridge.core.streams import VerifiedFile
from bridge.site.config import AgentConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Lease:
    job_id: str
    epoch: int
    ttl: float


@dataclass(frozen=True)
class Claimed:
    doc: dict[str, Any]
    lease: Lease
    reattach: bool


@dataclass(frozen=True)
class LeaseState:
    ttl: float
    cancel_requested: bool


class AgentApi:
    def __init__(self, agent: AgentConfig, *, attempts: int = defaults.HTTP_ATTEMPTS) -> None:
        self.agent = agent
        self.session = BrokerSession(endpoint_of(agent), attempts=attempts)

    def close(self) -> None:
        self.session.close()

    def claim(self, wait: float, commands: list[str] | None = None) -> Claimed | None:
        """The next job of the site, waiting up to ``wait`` seconds; with ``commands``, only a
        job of one of these (the broker leaves the others to whoever runs them)."""
        body: dict[str, Any] = {"agent_id": self.agent.agent_id}
        if commands is not None:
            body["commands"] = commands
        response = self.session.request(
            "POST",
            "/api/v1/agent/claim",
            params={"wait": f"{wait:g}"},
            json=body,
            ok=(200, 204),
            timeout=self.session.long_poll_timeout(wait),
        )
        if response.status_code == 204:
            return None
        body = answer_json(response, "/api/v1/agent/claim")
        doc, lease = body.get("job"), body.get("lease")
        if not isinstance(doc, dict) or not isinstance(lease, dict):
            raise ProtocolError("broker answered a claim without a job and a lease")
        job_id = check_job_id(doc.get("job_id"))
        return Claimed(
            doc,
            Lease(
                job_id,
                answer_count(lease.get("epoch"), "epoch"),
                answer_seconds(lease.get("ttl"), "ttl"),
            ),
            bool(body.get("reattach")),
        )

    def release(self, lease: Lease) -> None:
        """Hand a held job back at once (this agent will not run it): the broker queues it
        again for another agent instead of waiting for the lease to lapse."""
        self.session.json("POST", f"{_job(lease)}/release", json={}, headers=_epoch(lease))

    def renew(
        self,
        lease: Lease,
        *,
        wait: float = 0,
        state: str | None = None,
        native_id: str | None = None,
    ) -> LeaseState:
        body: dict[str, str] = {}
        if state is not None:
            body["state"] = state
        if native_id is not None:
            body["native_id"] = native_id
        answer = self.session.json(
            "POST",
            f"{_job(lease)}/lease",
            params={"wait": f"{wait:g}"} if wait else None,
            json=body,
            headers=_epoch(lease),
            timeout=self.session.long_poll_timeout(wait),
        )
        return LeaseState(
            answer_seconds(answer.get("ttl"), "ttl"), bool(answer.get("cancel_requested"))
        )

    def download_input(self, lease: Lease, name: str, target: VerifiedFile) -> None:
        """Fetch one input into ``target`` and commit it; a cut resumes from what arrived."""
        path = f"{_job(lease)}/inputs/{quote(name, safe='')}"
        broker_transfer.download(self.session, path, target, headers=_epoch(lease))

    def append_log(self, lease: Lease, stream: str, offset: int, data: bytes) -> int:
        """Send log bytes that start at ``offset``; returns the broker's size of the log."""
        answer = self.session.json(
            "POST",
            f"{_job(lease)}/logs/{stream}",
            body=data,
            headers={
                **_epoch(lease),
                "Log-Offset": str(offset),
                "Content-Type": "application/octet-stream",
            },
        )
        return answer_count(answer.get("size"), "size")

    def upload_result(
        self, lease: Lease, name: str, source: BinaryIO, size: int, sha256: str
    ) -> None:
        """Upload one result from its open file, resuming from what the broker holds."""
        if size == 0:
            return  # the broker records an empty result when ``complete`` lists it
        path = f"{_job(lease)}/results/{quote(name, safe='/')}"
        broker_transfer.upload(
            self.session, path, source, size, f"result {name}", headers=_epoch(lease), sha256=sha256
        )

    def complete(
        self,
        lease: Lease,
        outcome: dict[str, Any],
        results: list[dict[str, Any]],
        skipped: list[dict[str, Any]],
    ) -> None:
        self.session.json(
            "POST",
            f"{_job(lease)}/complete",
            json={"outcome": outcome, "results": results, "skipped": skipped},
            headers=_epoch(lease),
        )


def _job(lease: Lease) -> str:
    return f"/api/v1/agent/jobs/{lease.job_id}"


def _epoch(lease: Lease) -> dict[str, str]:
    return {"Lease-Epoch": str(lease.epoch)}


__all__ = ["AgentApi", "Claimed", "Lease", "LeaseState"]
