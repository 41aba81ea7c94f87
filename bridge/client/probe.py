"""The probe job from the bridge node: a tiny built-in job through a site's real path.

``probe_site`` sends the probe (``bridge.core.probe``) exactly as ``mint-bridge run`` sends a
job, over SSH (``channel_job.JobRun``) or through the broker (``broker_job.BrokerJobRun``),
and times its steps:

    connect     reach the site (SSH handshake and the site entry) or the broker (create)
    stage_in    the site accepts the job and receives the input (SSH), or the input is
                uploaded and the job queued (broker)
    run         the site answers the probe (through the broker: an agent claims it first)
    stage_out   the copy and the site's report come back, each verified on arrival
    verify      the copy's SHA-256 equals that of the input sent, and so does the site's

A job through the broker that no agent claims within ``claim_timeout`` is cancelled there, and
the probe fails saying so. Nothing is retried: a probe reports the first failure as it is.
Never: leave files behind on this node (the probe works in a temporary directory).
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import shutil
import socket
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from bridge.client.broker_job import BrokerJobRun
from bridge.client.channel_job import JobRun
from bridge.client.node_config import BrokerSite, Site
from bridge.client.request import LocalInput, RunResult, build_request, prepare_inputs
from bridge.client.transports import connector_for
from bridge.client.transports.base import Connector
from bridge.core import defaults
from bridge.core.errors import BridgeError, ExitCode, JobFailedAtSite, TransferCorrupted
from bridge.core.job import JobRequest, JobState, new_job_id
from bridge.core.probe import PROBE_COMMAND, PROBE_INPUT, PROBE_OUTPUT, PROBE_REPORT, ProbeReport
from bridge.core.protocol import FrameReader, FrameWriter

log = logging.getLogger(__name__)

STEPS = ("connect", "stage_in", "run", "stage_out", "verify")
PROBE_SIZE = 64 * 1024  # enough to cross several SSH packets and frames; quick on any link


@dataclass
class ProbeResult:
    """What the probe found: each finished step's time, and the step that failed, if any."""

    site: str
    job_id: str
    seconds: dict[str, float] = field(default_factory=dict)  # finished steps, in order
    failed_step: str | None = None
    error: BridgeError | None = None
    sha256: str = ""  # of the input sent
    report: ProbeReport | None = None  # the site's, once it came back

    @property
    def ok(self) -> bool:
        return self.error is None


class _Steps:
    """Times the steps: each ``begin`` ends the step in progress."""

    def __init__(self, result: ProbeResult, on_step: Callable[[str], None] | None) -> None:
        self.result = result
        self.on_step = on_step
        self.current: str | None = None
        self.started = time.monotonic()

    def begin(self, step: str) -> None:
        if step == self.current:
            return
        self.end()
        self.current, self.started = step, time.monotonic()
        if self.on_step is not None:
            self.on_step(step)

    def end(self) -> None:
        if self.current is not None:
            self.result.seconds[self.current] = time.monotonic() - self.started
            self.current = None


def probe_site(
    site: Site,
    timeout: float,
    *,
    claim_timeout: float | None = None,
    on_step: Callable[[str], None] | None = None,
) -> ProbeResult:
    """Send the probe to ``site`` and check what comes back; never raises a BridgeError.

    ``timeout`` bounds each wait for the site; ``claim_timeout`` (default: ``timeout``) how
    long a job through the broker may wait for an agent. ``on_step`` hears each step begin.
    """
    job_id = new_job_id()
    result = ProbeResult(site.name, job_id)
    steps = _Steps(result, on_step)
    work = tempfile.mkdtemp(prefix="mint-bridge-probe-")
    try:
        source = os.path.join(work, PROBE_INPUT)
        data = os.urandom(PROBE_SIZE)
        with open(source, "wb") as handle:
            handle.write(data)
        result.sha256 = hashlib.sha256(data).hexdigest()
        inputs = prepare_inputs([source])
        metadata = {"bridge_host": socket.gethostname(), "probe": "1"}
        request = build_request(job_id, PROBE_COMMAND, inputs, {}, metadata)
        output = os.path.join(work, "out")
        sinks = (io.BytesIO(), io.BytesIO())  # the site's log lines repeat its report
        job: JobRun | BrokerJobRun | None = None
        steps.begin("connect")
        try:
            if isinstance(site, BrokerSite):
                limit = claim_timeout if claim_timeout is not None else timeout
                job = _BrokerProbeRun(site, request, inputs, output, sinks, steps, limit)
            else:
                connector = connector_for(site, timeout)
                job = _ChannelProbeRun(connector, request, inputs, output, sinks, steps, timeout)
            outcome = job.run().outcome
            steps.begin("verify")
            if outcome.state is not JobState.COMPLETED:
                raise JobFailedAtSite(
                    f"the site ended the probe as {outcome.state.value}: {outcome.reason}",
                    ExitCode.SITE_ERROR,
                )
            result.report = _verify(output, result.sha256)
            steps.end()
        except BridgeError as exc:
            result.failed_step, result.error = steps.current or "connect", exc
            steps.current = None
            if isinstance(job, BrokerJobRun) and isinstance(exc, ProbeUnclaimed):
                job.cancel()  # an unclaimed probe must not wait for a late agent
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return result


def _verify(output: str, sha256: str) -> ProbeReport:
    """The copy must hash like the input, and the site must have read the same bytes."""
    try:
        with open(os.path.join(output, PROBE_OUTPUT), "rb") as handle:
            copy = hashlib.file_digest(handle, "sha256").hexdigest()
        with open(os.path.join(output, PROBE_REPORT), encoding="utf-8") as handle:
            raw: Any = json.load(handle)
    except (OSError, ValueError) as exc:
        raise TransferCorrupted(f"the probe's results did not all come back: {exc}") from exc
    report = ProbeReport.from_json(raw)
    if copy != sha256:
        raise TransferCorrupted(
            f"the probe's file came back with SHA-256 {copy}, not {sha256} as sent"
        )
    if report.sha256 != sha256:
        raise TransferCorrupted(
            f"the site read the probe's input with SHA-256 {report.sha256}, not {sha256} as sent"
        )
    return report


# --- over a connection (SSH or the local entry) -----------------------------------------------


class _ChannelProbeRun(JobRun):
    """``JobRun`` with the probe's steps marked; one attempt, no reconnects."""

    def __init__(
        self,
        connector: Connector,
        request: JobRequest,
        inputs: list[LocalInput],
        output: str,
        sinks: tuple[io.BytesIO, io.BytesIO],
        steps: _Steps,
        timeout: float,
    ) -> None:
        super().__init__(
            connector, request, inputs, output, *sinks,
            reconnect_attempts=1,
            heartbeat_timeout=min(timeout, defaults.HEARTBEAT_TIMEOUT),
        )  # fmt: skip
        self.steps = steps

    def _submit(self, reader: FrameReader, writer: FrameWriter) -> None:
        self.steps.begin("stage_in")
        super()._submit(reader, writer)
        self.steps.begin("run")

    def _receive_results(
        self, reader: FrameReader, writer: FrameWriter, manifest: dict[str, Any]
    ) -> RunResult:
        self.steps.begin("stage_out")
        return super()._receive_results(reader, writer, manifest)


# --- through the broker ------------------------------------------------------------------------


class ProbeUnclaimed(JobFailedAtSite):
    """No agent claimed the probe in time: it is cancelled at the broker."""


class _BrokerProbeRun(BrokerJobRun):
    """``BrokerJobRun`` with the probe's steps marked, giving up when no agent claims it."""

    def __init__(
        self,
        site: BrokerSite,
        request: JobRequest,
        inputs: list[LocalInput],
        output: str,
        sinks: tuple[io.BytesIO, io.BytesIO],
        steps: _Steps,
        claim_timeout: float,
    ) -> None:
        # Long polls no longer than the claim timeout: an unclaimed job is noticed in time.
        poll = max(0.5, min(site.poll_wait, claim_timeout / 2))
        super().__init__(replace(site, poll_wait=poll, reconnect_attempts=1), request, inputs,
                         output, *sinks)  # fmt: skip
        self.steps = steps
        self.claim_timeout = claim_timeout
        self.queued_at = 0.0

    def _create(self, hashes: dict[str, str]) -> None:
        self.steps.begin("connect")
        super()._create(hashes)
        self.steps.begin("stage_in")

    def _follow(self) -> dict[str, Any]:
        self.steps.begin("run")
        self.queued_at = time.monotonic()
        return super()._follow()

    def _fetch_logs(self, doc: dict[str, Any]) -> None:
        waited = time.monotonic() - self.queued_at
        if doc.get("state") in ("created", "queued") and waited >= self.claim_timeout:
            raise ProbeUnclaimed(
                f"no agent of site {self.site.broker_site or self.site.name} claimed the probe "
                f"job within {self.claim_timeout:g} s; check that the site's agent runs "
                "(`mint-bridge health --site-side` at the site)",
                ExitCode.SITE_UNREACHABLE,
            )
        super()._fetch_logs(doc)

    def _finish(self, doc: dict[str, Any]) -> RunResult:
        self.steps.begin("stage_out")
        return super()._finish(doc)


__all__ = ["STEPS", "ProbeResult", "ProbeUnclaimed", "probe_site"]
