"""The broker's agent API as typed calls: claim, lease, inputs, logs, results, complete.

Every call that acts on a job carries the lease epoch (``Lease-Epoch``), so the broker refuses
a stale agent (``LeaseLost``) and a newer holder's work is never overwritten. One ``AgentApi``
per thread: each has its own HTTP session.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, BinaryIO
from urllib.parse import quote

from bridge.core import defaults
from bridge.core.broker_http import BrokerEndpoint, BrokerSession, iter_body
from bridge.core.errors import Conflict, JobUnknown, ProtocolError, SiteUnreachable
from bridge.core.job import check_job_id
from bridge.core.streams import FileSlice, VerifiedFile
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


def endpoint_of(agent: AgentConfig) -> BrokerEndpoint:
    return BrokerEndpoint(
        agent.url, agent.token_file, agent.ca_bundle, agent.allow_http, agent.where
    )


class AgentApi:
    def __init__(self, agent: AgentConfig, *, attempts: int = defaults.HTTP_ATTEMPTS) -> None:
        self.agent = agent
        self.session = BrokerSession(endpoint_of(agent), attempts=attempts)

    def close(self) -> None:
        self.session.close()

    def claim(self, wait: float) -> Claimed | None:
        response = self.session.request(
            "POST",
            "/api/v1/agent/claim",
            params={"wait": f"{wait:g}"},
            json={"agent_id": self.agent.agent_id},
            ok=(200, 204),
            timeout=wait + defaults.LONG_POLL_MARGIN,
        )
        if response.status_code == 204:
            return None
        body = _json(response)
        doc, lease = body.get("job"), body.get("lease")
        if not isinstance(doc, dict) or not isinstance(lease, dict):
            raise ProtocolError("broker answered a claim without a job and a lease")
        job_id = check_job_id(doc.get("job_id"))
        return Claimed(
            doc,
            Lease(job_id, _number(lease.get("epoch"), "epoch"), _number(lease.get("ttl"), "ttl")),
            bool(body.get("reattach")),
        )

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
            timeout=wait + defaults.LONG_POLL_MARGIN,
        )
        return LeaseState(
            float(_number(answer.get("ttl"), "ttl")), bool(answer.get("cancel_requested"))
        )

    def download_input(self, lease: Lease, name: str, target: VerifiedFile) -> None:
        """Fetch what ``target`` still lacks (``Range`` from its offset); a cut raises a
        transient error and ``self.session.retrying`` continues from the new offset."""
        headers = {**_epoch(lease)}
        if target.offset:
            headers["Range"] = f"bytes={target.offset}-"
        response = self.session.request(
            "GET",
            f"{_job(lease)}/inputs/{quote(name, safe='')}",
            headers=headers,
            ok=(200, 206),
            stream=True,
            retry=False,  # the caller's retry loop resumes from the new offset
        )
        skip = target.offset if response.status_code == 200 else 0  # Range ignored
        for chunk in iter_body(response, defaults.DOWNLOAD_CHUNK):
            if skip:
                dropped = min(skip, len(chunk))
                chunk, skip = chunk[dropped:], skip - dropped
            if chunk:
                target.write(chunk)
        if target.offset < target.size:  # cut short: the retry resumes from here
            raise SiteUnreachable(f"input {name} was cut at {target.offset} of {target.size}")

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
        return _number(answer.get("size"), "size")

    def upload_result(
        self, lease: Lease, name: str, source: BinaryIO, size: int, sha256: str
    ) -> None:
        """Upload one result from its open file, resuming from what the broker holds."""
        if size == 0:
            return  # the broker records an empty result when ``complete`` lists it
        path = f"{_job(lease)}/results/{quote(name, safe='/')}"
        self.session.retrying(f"{lease.job_id}: result {name}")(
            self._send_rest, lease, path, name, source, size, sha256
        )

    def _send_rest(
        self, lease: Lease, path: str, name: str, source: BinaryIO, size: int, sha256: str
    ) -> None:
        """Send what the broker lacks; after a cut the retry asks for the offset again."""
        declared = {**_epoch(lease), "Upload-Length": str(size), "Upload-SHA256": sha256}
        offset = self._result_offset(lease, path, size, sha256)
        restarted = False
        while offset < size:
            length = min(defaults.UPLOAD_CHUNK, size - offset)
            try:
                response = self.session.request(
                    "PATCH",
                    path,
                    body=FileSlice(source, offset, length, name),
                    headers={
                        **declared,
                        "Upload-Offset": str(offset),
                        "Content-Type": "application/offset+octet-stream",
                    },
                    ok=(200, 204),
                    retry=False,
                )
            except Conflict as exc:
                if exc.code == "offset_mismatch":
                    offset = exc.offset or 0
                    continue
                if exc.code == "conflict" and not restarted:  # an older declaration: replace
                    offset, restarted = 0, True
                    continue
                raise
            offset = _number(response.headers.get("Upload-Offset"), "Upload-Offset")

    def _result_offset(self, lease: Lease, path: str, size: int, sha256: str) -> int:
        """Where to continue: the bytes held for this very file, else 0 (a new declaration
        at 0 replaces an older one of the same name, e.g. before the file changed)."""
        try:
            response = self.session.request("HEAD", path, headers=_epoch(lease))
        except JobUnknown:
            return 0
        held = (response.headers.get("Upload-Length"), response.headers.get("Upload-SHA256"))
        if held != (str(size), sha256):
            return 0
        return _number(response.headers.get("Upload-Offset", "0"), "Upload-Offset")

    def complete(
        self,
        lease: Lease,
        outcome: dict[str, Any],
        results: list[dict[str, Any]],
        skipped: list[dict[str, str]],
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


def _json(response: Any) -> dict[str, Any]:
    try:
        data = response.json()
    except ValueError as exc:
        raise ProtocolError("broker answered with invalid JSON") from exc
    if not isinstance(data, dict):
        raise ProtocolError("broker answered with JSON that is not an object")
    return data


def _number(value: object, what: str) -> int:
    if isinstance(value, str) and value.isdigit():
        return int(value)
    if isinstance(value, int | float) and not isinstance(value, bool) and value >= 0:
        return int(value)
    raise ProtocolError(f"broker sent an invalid {what}: {value!r:.40}")


__all__ = ["AgentApi", "Claimed", "Lease", "LeaseState", "endpoint_of"]
