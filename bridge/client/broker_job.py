"""``mint-bridge run`` for a site reached through the broker (the pull path), as seen by MInt.

Same behaviour as over SSH: inputs go out checksummed, the log streams live to our stdout and
stderr, results land in the output dir only once their SHA-256 matches, the exit code is the
solver's, and SIGTERM (PBS's ``qdel``) cancels the job at the site. The steps:

    create    POST /jobs with our job id, so re-creating after a lost answer is harmless
    upload    per input: HEAD for the offset the broker holds, PATCH the rest in chunks
    submit    the broker queues the job for the site's agent
    follow    long-poll the job document; fetch new log bytes from our offsets
    results   GET each with Range from what we already have, verify, rename into place; ack

Every step can be repeated after a cut without doing anything twice: the broker holds offsets
and the job id, and the site's agent starts a job at most once.

No silent waits: a site the broker does not serve is a config error at create (exit 78, with
the broker's fix), and while no agent of the site is online the run says so and, if the job
ends unclaimed, names that as the reason (``broker_wait``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import time
from typing import Any, BinaryIO
from urllib.parse import quote

from bridge.client.broker_wait import FINAL_STATES, WAITING_STATES, ClaimWatch
from bridge.client.node_config import BrokerSite
from bridge.client.request import LocalInput, RunResult, open_output_dir
from bridge.core import broker_transfer, defaults, progress
from bridge.core.broker_endpoint import BrokerEndpoint, endpoint_of
from bridge.core.broker_session import BrokerSession, answer_count
from bridge.core.errors import (
    BridgeError,
    Cancelled,
    ConfigError,
    Conflict,
    InputMissing,
    JobUnknown,
    ProtocolError,
    StagingError,
    TimedOut,
    TransferCorrupted,
    from_wire,
)
from bridge.core.job import JobOutcome, JobRequest, JobState
from bridge.core.paths import check_relative_path, open_dir_nofollow
from bridge.core.streams import VerifiedFile, sha256_file

log = logging.getLogger(__name__)

_SHA256 = re.compile(r"[0-9a-f]{64}")


class BrokerJobRun:
    """One job at one pull site, from create to the last verified result file."""

    def __init__(
        self,
        site: BrokerSite,
        request: JobRequest,
        inputs: list[LocalInput],
        output_dir: str,
        stdout: BinaryIO,
        stderr: BinaryIO,
        *,
        walltime_limit: float | None = None,
        session: BrokerSession | None = None,
        overall_timeout: float | None = None,
    ) -> None:
        self.site = site
        self.request = request
        self.inputs = inputs
        self.output_dir = output_dir
        self.sinks = {"stdout": stdout, "stderr": stderr}
        self.walltime_limit = walltime_limit
        self.job_id = request.job_id
        self.path = f"/api/v1/jobs/{self.job_id}"
        self.offsets = {"stdout": 0, "stderr": 0}
        self._session = session
        self._create_sent = False
        self._hashes: dict[str, str] = {}  # each input's SHA-256, computed once before create
        self.waiting = ClaimWatch(self.job_id, site.broker_site, overall_timeout)

    @property
    def session(self) -> BrokerSession:
        if self._session is None:
            self._session = BrokerSession(self._endpoint(), attempts=self.site.reconnect_attempts)
        return self._session

    def _endpoint(self) -> BrokerEndpoint:
        # Config errors about a site without a recorded place name the site.
        return endpoint_of(self.site, self.site.where or self.site.name)

    # --- public --------------------------------------------------------------------------

    def run(self) -> RunResult:
        try:
            hashes = self._hashes = self._hash_inputs()
            self._create(hashes)
            self._upload_inputs()
            self._submit()
            log.info("%s: queued at the broker for site %s", self.job_id, self.site.broker_site)
            return self._finish(self._follow())
        except TimedOut as exc:
            self.cancel()
            raise self.waiting.timed_out(exc) from exc
        except Cancelled:
            self.cancel()
            raise
        finally:
            if self._session is not None:
                self._session.close()

    def cancel(self) -> JobOutcome | None:
        """Ask for the cancel and wait a few seconds for the site to confirm it (PBS follows
        SIGTERM with SIGKILL soon). A fresh session: the old one may be cut mid-answer."""
        if not self._create_sent:
            return None
        deadline = time.monotonic() + defaults.CANCEL_CONFIRM_SECONDS
        try:
            session = BrokerSession(self._endpoint(), attempts=1)
        except BridgeError as exc:
            log.error("%s: could not cancel at the broker: %s", self.job_id, exc)
            return None
        try:
            doc = session.json(
                "POST", f"{self.path}/cancel", timeout=defaults.CANCEL_CONFIRM_SECONDS
            )
            while doc.get("state") not in FINAL_STATES and time.monotonic() < deadline:
                wait = max(1, int(deadline - time.monotonic()))
                doc = session.json(
                    "GET",
                    self.path,
                    params={"wait": wait, "version": answer_count(doc.get("version"), "version")},
                    timeout=wait + 2,
                )
        except JobUnknown:
            return None  # the create never reached the broker: nothing runs
        except BridgeError as exc:
            log.error("%s: could not confirm the cancel with the broker: %s", self.job_id, exc)
            return None
        finally:
            session.close()
        state = doc.get("state")
        if state not in FINAL_STATES:
            log.error("%s: cancel requested; the site has not confirmed it yet", self.job_id)
            return None
        # A job no agent had was cancelled by the broker alone: no site ever saw it.
        unclaimed = self.waiting.state is None or self.waiting.state in WAITING_STATES
        where = "at the broker" if unclaimed else "at the site"
        log.warning("%s: cancelled %s (state %s)", self.job_id, where, state)
        outcome = doc.get("outcome")
        with contextlib.suppress(BridgeError):
            if isinstance(outcome, dict) and outcome.get("state") != "rejected":
                return JobOutcome.from_message(outcome)
        return JobOutcome(JobState.CANCELLED, reason="cancelled before the site started it")

    # --- create, inputs, submit --------------------------------------------------------

    def _hash_inputs(self) -> dict[str, str]:
        hashes: dict[str, str] = {}
        for item in self.inputs:
            try:
                hashes[item.name] = sha256_file(item.path, item.size)
                changed = os.stat(item.path).st_size != item.size
            except (OSError, StagingError) as exc:
                raise InputMissing(f"input {item.path} cannot be read: {exc}") from exc
            if changed:
                raise InputMissing(f"input {item.path} changed size while it was being read")
        return hashes

    def _create(self, hashes: dict[str, str]) -> None:
        body: dict[str, Any] = {
            "job_id": self.job_id,
            "site": self.site.broker_site,
            "command": self.request.command,
            "params": dict(self.request.params),
            "inputs": [
                {"name": i.name, "size": i.size, "sha256": hashes[i.name], "mode": i.mode}
                for i in self.inputs
            ],
            "metadata": dict(self.request.metadata),
        }
        if self.walltime_limit:
            body["walltime_limit"] = self.walltime_limit
        self._create_sent = True
        # Our job id makes a repeat after a lost answer return the same job (200, not 201).
        try:
            self.session.json("POST", "/api/v1/jobs", json=body, ok=(200, 201))
        except ProtocolError as exc:
            if exc.field != "site":
                raise
            # The broker serves no such site (its message names the fix there); the site name
            # comes from our config, so this is a config error, not a protocol one.
            where = self.site.where or f"sites.{self.site.name}"
            raise ConfigError(
                f"{exc.message} ({where}: the site is {self.site.broker_site!r} at the broker; "
                "set broker_site to its name there)",
                field="broker_site",
            ) from exc

    def _upload_inputs(self) -> None:
        for item in self.inputs:
            self._upload(item)
            log.info("%s: input %s sent (%d bytes)", self.job_id, item.name, item.size)

    def _upload(self, item: LocalInput) -> None:
        try:
            with open(item.path, "rb") as source:
                self._upload_from(item, source)
        except OSError as exc:
            raise InputMissing(f"input {item.path} cannot be read: {exc.strerror}") from exc

    def _upload_from(self, item: LocalInput, source: BinaryIO) -> None:
        path = f"{self.path}/inputs/{quote(item.name, safe='')}"
        try:
            with progress.transfer("in", item.name, item.size) as sent:
                broker_transfer.upload(
                    self.session, path, source, item.size, f"input {item.name}"
                )
                sent.sha256 = self._hashes.get(item.name)
        except TransferCorrupted as exc:
            raise InputMissing(
                f"input {item.path} changed while it was being sent ({exc}); run again"
            ) from exc

    def _submit(self) -> None:
        try:
            self.session.json("POST", f"{self.path}/submit")
        except Conflict as exc:
            if exc.code != "inputs_incomplete":
                raise
            # An upload the broker discarded (e.g. a checksum reset): send it again, once.
            log.warning("%s: broker says %s; sending inputs again", self.job_id, exc.message)
            self._upload_inputs()
            self.session.json("POST", f"{self.path}/submit")

    # --- follow ----------------------------------------------------------------------------

    def _follow(self) -> dict[str, Any]:
        """Long-poll the job document, printing new log bytes, until the job is final."""
        doc = self.session.json("GET", self.path)
        wait = self.site.poll_wait
        while True:
            self.waiting.note(doc)
            self._fetch_logs(doc)
            if doc.get("state") in FINAL_STATES:
                return doc
            doc = self.session.json(
                "GET",
                self.path,
                params={
                    "wait": f"{wait:g}",
                    "version": answer_count(doc.get("version"), "version"),
                },
                timeout=self.session.long_poll_timeout(wait),
            )

    def _fetch_logs(self, doc: dict[str, Any]) -> None:
        sizes = doc.get("logs") or {}
        for stream, sink in self.sinks.items():
            size = sizes.get(stream, 0) if isinstance(sizes, dict) else 0
            while self.offsets[stream] < answer_count(size, f"logs.{stream}"):
                response = self.session.request(
                    "GET",
                    f"{self.path}/logs/{stream}",
                    params={"offset": self.offsets[stream]},
                )
                data = response.content
                if not data:
                    break  # the document ran ahead of the log store; the next poll catches up
                sink.write(data)
                sink.flush()
                self.offsets[stream] += len(data)

    # --- outcome and results -------------------------------------------------------------

    def _finish(self, doc: dict[str, Any]) -> RunResult:
        outcome = self._outcome(doc)
        skipped = [s for s in doc.get("skipped") or [] if isinstance(s, dict)]
        for entry in skipped:
            log.warning(
                "%s: %s not returned: %s", self.job_id, entry.get("name"), entry.get("reason")
            )
        received = self._download_results(doc) if doc.get("state") == "finished" else []
        try:
            self.session.request("POST", f"{self.path}/ack", ok=(200, 204))
        except BridgeError as exc:  # the broker deletes them after its retention time anyway
            log.warning("%s: could not acknowledge the results: %s", self.job_id, exc)
        return RunResult(outcome, received, skipped)

    def _outcome(self, doc: dict[str, Any]) -> JobOutcome:
        state, raw = doc.get("state"), doc.get("outcome")
        if isinstance(raw, dict) and raw.get("state") == "rejected":
            raise _rejection(raw)
        if state == "expired":
            raise self.waiting.expired(raw.get("reason") if isinstance(raw, dict) else None)
        if isinstance(raw, dict):
            return JobOutcome.from_message(raw)
        if state == "cancelled":
            return JobOutcome(JobState.CANCELLED, reason="cancelled before the site started it")
        raise ProtocolError(f"broker reports job {self.job_id} {state!r:.20} without an outcome")

    def _download_results(self, doc: dict[str, Any]) -> list[str]:
        entries = [_result_entry(e) for e in doc.get("results") or []]
        received: list[str] = []
        out_fd = open_output_dir(self.output_dir)
        try:
            for name, size, sha256, mode in entries:
                parts = check_relative_path(name).parts
                dir_fd = open_dir_nofollow(out_fd, parts[:-1], create=True)
                try:
                    label = f"result {name}"
                    with VerifiedFile(dir_fd, parts[-1], size, sha256, mode, label) as target, \
                            progress.transfer("out", name, size) as got:
                        path = f"{self.path}/results/{quote(name, safe='/')}"
                        broker_transfer.download(self.session, path, target)
                        got.sha256 = sha256
                finally:
                    os.close(dir_fd)
                received.append(name)
        finally:
            os.close(out_fd)
        log.info("%s: %d result file(s) received", self.job_id, len(received))
        return received


def _rejection(outcome: dict[str, Any]) -> BridgeError:
    """The site's refusal as the same error the SSH path raises (exit 77 or 65, ...)."""
    kind = str(outcome.get("error_kind") or "JobRejected")
    reason = str(outcome.get("reason") or "the site refused the job")
    return from_wire({"kind": kind, "message": reason})


def _result_entry(entry: object) -> tuple[str, int, str, int]:
    if not isinstance(entry, dict):
        raise ProtocolError("malformed result entry in the job document")
    name = str(check_relative_path(entry.get("name")))
    size, sha256, mode = entry.get("size"), entry.get("sha256"), entry.get("mode", 0o644)
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise ProtocolError(f"result {name} has an invalid size")
    if not isinstance(sha256, str) or not _SHA256.fullmatch(sha256):
        raise ProtocolError(f"result {name} has an invalid SHA-256")
    if not isinstance(mode, int) or isinstance(mode, bool):
        raise ProtocolError(f"result {name} has an invalid mode")
    return name, size, sha256, mode


__all__ = ["BrokerJobRun"]
