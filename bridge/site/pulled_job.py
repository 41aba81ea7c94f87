"""One job an agent pulled from the broker, run exactly the way ``site serve-ssh`` runs one.

The same validation (``SiteConfig.check_request``), the same work dir (``WorkDir``: private,
its control files), the same start (``job_start.start_once``, through the command's scheduler
adapter, the native id recorded before anything else), the same following (``accepted_job.follow``,
``LogTail``) and the same result collection (``accepted_job.collect_job_results``, by the command's
return rules). Only the transport differs: HTTP calls to the broker instead of frames over SSH.

Exactly once: the job is marked running at the broker under our lease epoch (refused when a
newer lease holds it) before it is started, and it is started under the work dir's lock only if
no native id is recorded there. A work dir that holds a native id is followed, never started;
one whose start was cut off before the id was recorded is recovered first
(``job_start.recover``).

Every step is recorded in the site's audit log first (``bridge.site.audit``, naming the broker
URL and the agent token's id); a line that cannot be written completes the job at the broker as
rejected with ``AuditFailed`` (exit 90 at the bridge), and nothing more is uploaded.

Never: start or follow a job in a work dir this broker job does not own (``broker.json`` in
the control dir names it), upload a file from outside the work dir, or go on acting on a job
once the broker says another lease holds it.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import threading
from collections.abc import Callable
from typing import Any

from bridge.core.broker_endpoint import read_token
from bridge.core.errors import (
    AuditFailed,
    BridgeError,
    Conflict,
    InputRejected,
    JobRejected,
    LeaseLost,
    ProtocolError,
    SiteError,
    StagingError,
    TransferCorrupted,
)
from bridge.core.job import JobOutcome, JobRequest, JobState
from bridge.core.paths import check_name
from bridge.core.streams import VerifiedFile
from bridge.core.workdir_files import BROKER_COMPLETED_FILE, BROKER_FILE
from bridge.site import accepted_job, audit, job_start, outgoing, probe
from bridge.site.agent_api import AgentApi, Claimed
from bridge.site.agent_metrics import AgentMetrics
from bridge.site.audit_chain import AuditWriter
from bridge.site.config import AgentConfig, SiteConfig
from bridge.site.pulled_lease import Dropped, HandBack, LeaseKeeper
from bridge.site.pulled_results import rejection_outcome, upload_results
from bridge.site.status_cache import SharedStatus
from bridge.site.workdir import WorkDir
from schedulers import JobHandle

DISK_FULL = (errno.ENOSPC, errno.EDQUOT)  # no room for the work dir: retrying cannot help

log = logging.getLogger(__name__)


def drop_local_job(site: SiteConfig, wd: WorkDir, why: str) -> None:
    """Stop a job the broker no longer has for us, and never pick it up again."""
    native_id = wd.native_id()
    if native_id is not None or wd.submitting():
        try:
            job = accepted_job.load_accepted(site, wd)
            scheduler = site.scheduler(job.command)
            if native_id is None:  # a start cut off before it recorded the id: find it
                with wd.locked():
                    native_id = wd.native_id() or job_start.recover(job, scheduler)
            if native_id is not None:
                scheduler.cancel(JobHandle(wd.job_id, native_id, wd.control))
        except BridgeError as exc:
            log.error("%s: could not stop the job: %s", wd.job_id, exc)
    with open(wd.control_file(BROKER_COMPLETED_FILE), "w", encoding="utf-8") as marker:
        marker.write("dropped\n")
    log.warning("%s: %s; stopped it here", wd.job_id, why)


class PulledJob:
    def __init__(
        self,
        site: SiteConfig,
        agent: AgentConfig,
        claimed: Claimed,
        stopping: threading.Event,
        after: threading.Thread | None = None,
        on_exit: Callable[[], None] | None = None,
        metrics: AgentMetrics | None = None,
    ) -> None:
        self.site = site
        self.agent = agent
        self.doc = claimed.doc
        self.lease = claimed.lease
        self.job_id = claimed.lease.job_id
        self.wd = WorkDir(site.work_base, self.job_id)
        self.keeper = LeaseKeeper(agent, self.lease, stopping)
        # The keeper's events, under the names the agent and this job's steps use.
        self.stopping = stopping
        self.cancel = self.keeper.cancel  # the bridge asked for a cancel
        self.lost = self.keeper.lost  # a newer lease holds the job
        self.gone = self.keeper.gone  # the broker ended or deleted the job without us
        self.finished = self.keeper.finished
        self.after = after  # an earlier worker for the same job, to wait for
        self.on_exit = on_exit  # tells the agent a slot is free
        self.metrics = metrics
        logs = self.doc.get("logs")
        self.log_sizes: dict[str, int] = {
            k: v for k, v in (logs or {}).items() if isinstance(v, int) and v >= 0
        }
        self.audit = audit.JobAudit(
            AuditWriter(site.audit_dir), self.job_id, _broker_peer(agent), self.wd.control
        )
        self.thread = threading.Thread(target=self.run, name=f"job-{self.job_id[:8]}", daemon=True)

    # --- thread body -----------------------------------------------------------------------

    def run(self) -> None:
        if self.after is not None:
            self.after.join()
        self.keeper.start()
        api: AgentApi | None = None
        try:
            api = AgentApi(self.agent)
            self._run(api)
        except Dropped as exc:
            if self.wd.exists():
                drop_local_job(self.site, self.wd, str(exc))
        except HandBack as exc:
            log.info("%s: handed back (%s); the agent re-attaches to it later", self.job_id, exc)
        except LeaseLost as exc:
            log.warning(
                "%s: a newer lease holds the job; stopped acting on it (%s)", self.job_id, exc
            )
        except BridgeError as exc:
            if self.metrics is not None:
                self.metrics.broker_error(exc)
            log.error(
                "%s: %s; the job is handed back and re-attached when the broker returns it",
                self.job_id, exc,
            )  # fmt: skip
        except OSError as exc:
            if api is None or exc.errno not in DISK_FULL:
                log.exception("%s: unexpected error; the job is handed back", self.job_id)
            else:
                self._disk_full(api, exc)
        except Exception:
            log.exception("%s: unexpected error; the job is handed back", self.job_id)
        finally:
            self.finished.set()
            if api is not None:
                api.close()
            if self.on_exit is not None:
                self.on_exit()

    def _run(self, api: AgentApi) -> None:
        if self.wd.exists() and self._owned() and self.wd.native_id() is not None:
            log.info("%s: re-attached; following the running job", self.job_id)
            self.record_lease()
            self._follow(api, accepted_job.load_accepted(self.site, self.wd))
            return
        try:
            request = JobRequest.from_message(self._request_message())
            if probe.is_probe(request):
                job = probe.accept(self.site, request)
            else:
                command, values = self.site.check_request(request)
                job = accepted_job.AcceptedJob(request, command, values, self.wd)
        except (JobRejected, ProtocolError) as exc:
            attempted = f"command {self.doc.get('command')!r:.80}"
            audit.refused(self.audit.writer, self.audit.peer, attempted, exc.message, self.job_id)
            self._reject(api, exc)
            return
        try:
            self.audit.received(request, job.values)
        except AuditFailed as exc:
            self._reject(api, exc)
            return
        if probe.is_probe(request):
            self._answer_probe(api, job)
            return
        try:
            self._take_workdir()
            started = self._stage_and_start(api, job)
        except (SiteError, StagingError, TransferCorrupted, InputRejected) as exc:
            self._reject(api, exc)
            return
        if started:
            self._follow(api, job)

    def _answer_probe(self, api: AgentApi, job: accepted_job.AcceptedJob) -> None:
        """The built-in probe: staged and delivered like any job, answered by ``probe``."""
        try:
            self._take_workdir()
        except SiteError as exc:
            self._reject(api, exc)
            return
        try:
            try:
                self.wd.discard_inputs()  # a probe re-attached after a restart starts over
                self._download_inputs(api, job)
                if self._cancelled_before_start(api):
                    return
                api.renew(self.lease, state="running")
                outcome, text = probe.answer(self.site, job)
            except (StagingError, TransferCorrupted, InputRejected) as exc:
                self._reject(api, exc)
                return
            api.append_log(self.lease, "stdout", 0, text)
            self._deliver(api, job, outcome)
        finally:
            self.wd.remove()  # a probe's files are of no use once its answer went out

    # --- accepting and starting -------------------------------------------------------------

    def _command(self) -> object:
        """The job's command; an original API's command string the site maps
        (``[site] legacy_commands``) runs as the command it names."""
        requested = self.doc.get("command")
        if not isinstance(requested, str):
            return requested  # the request check names what is wrong with it
        command = self.site.command_for(requested)
        if command != requested:
            log.info("%s: command %r runs as %s ([site] legacy_commands)",
                     self.job_id, requested[:80], command)  # fmt: skip
        return command

    def _request_message(self) -> dict[str, Any]:
        doc = self.doc
        inputs = doc.get("inputs") or []
        return {
            "job_id": self.job_id,
            "command": self._command(),
            "params": doc.get("params") or {},
            "inputs": [
                {"name": i.get("name"), "size": i.get("size"), "mode": i.get("mode", 0o644)}
                for i in inputs
                if isinstance(i, dict)
            ],
            "metadata": doc.get("metadata") or {},
        }

    def _owned(self) -> bool:
        """The work dir was made by an agent for this job at this broker (not by an SSH submit
        that happens to use the same id)."""
        try:
            record = self.wd.read_json(BROKER_FILE)
        except (OSError, ValueError):
            return False
        return (
            isinstance(record, dict)
            and record.get("job_id") == self.job_id
            and record.get("broker") == self.agent.url
        )

    def _take_workdir(self) -> None:
        if not self.wd.create(self.site.path) and not self._owned():
            raise SiteError(
                f"a work dir for job {self.job_id} already exists at the site and belongs to "
                "another job; submit it again with a new job id"
            )
        self.record_lease()

    def record_lease(self) -> None:
        """Durable before we act: a restarted agent re-attaches with this epoch and document."""
        self.wd.write_json(
            BROKER_FILE,
            {
                "job_id": self.job_id,
                "broker": self.agent.url,
                "agent_id": self.agent.agent_id,
                "epoch": self.lease.epoch,
                "doc": self.doc,
            },
        )

    def _stage_and_start(self, api: AgentApi, job: accepted_job.AcceptedJob) -> bool:
        """Download the inputs and start the job, once; False if it ended before starting."""
        steps = _PulledStart(self, api)
        native_id = job_start.start_once(job, self.site.scheduler(job.command), steps)
        if steps.submitted:
            self._report_native_id(api, steps.submitted)
        return native_id is not None

    def _report_native_id(self, api: AgentApi, native_id: str) -> None:
        with contextlib.suppress(BridgeError):  # shown to admins; not needed to follow the job
            api.renew(self.lease, native_id=native_id)

    def _cancelled_before_start(self, api: AgentApi) -> bool:
        self._checkpoint()
        if not self.cancel.is_set():
            return False
        self.wd.mark_cancel_requested()
        outcome = JobOutcome(JobState.CANCELLED, reason="cancelled before it started")
        self._complete(api, outcome.to_message(), [], [])
        return True

    def _download_inputs(self, api: AgentApi, job: accepted_job.AcceptedJob) -> None:
        expected = {i.get("name"): i for i in self.doc.get("inputs") or [] if isinstance(i, dict)}
        dir_fd = os.open(self.wd.path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        staged: dict[str, tuple[int, int]] = {}
        try:
            for decl in job.request.inputs:
                self._checkpoint()
                sha256 = str(expected[decl.name].get("sha256", ""))
                label = f"input {decl.name}"
                with VerifiedFile(
                    dir_fd, check_name(decl.name), decl.size, sha256, decl.mode, label
                ) as target:
                    api.download_input(self.lease, decl.name, target)
                self.audit.input_received(decl.name, decl.size, sha256)
                if self.metrics is not None:
                    self.metrics.staged.labels("in").inc(decl.size)
                st = os.stat(decl.name, dir_fd=dir_fd, follow_symlinks=False)
                staged[decl.name] = (st.st_size, st.st_mtime_ns)
        finally:
            os.close(dir_fd)
        accepted_job.record_staged_inputs(job, staged)

    def _walltime(self) -> float | None:
        value = self.doc.get("walltime_limit")
        if isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
            return float(value)
        return None

    # --- following ------------------------------------------------------------------------

    def _follow(self, api: AgentApi, job: accepted_job.AcceptedJob) -> None:
        native_id = self.wd.require_started()
        scheduler = self.site.scheduler(job.command)
        handle = JobHandle(self.job_id, native_id, self.wd.control)
        # From the broker's sizes: bytes it already has are not read again (and a replay of
        # some would be skipped by it anyway).
        tails = {
            stream: accepted_job.LogTail(path, self.log_sizes.get(stream, 0))
            for stream, path in accepted_job.log_paths(self.wd, job.command).items()
        }
        cancel_sent = False
        outcome: JobOutcome | None = None
        for event in accepted_job.follow(
            SharedStatus(self.site.work_base, scheduler), handle, tails
        ):
            self._checkpoint()
            if self.cancel.is_set() and not cancel_sent:
                log.info("%s: cancel requested by the bridge", self.job_id)
                self.wd.mark_cancel_requested()
                scheduler.cancel(handle)
                cancel_sent = True
            if isinstance(event, JobOutcome):
                outcome = event
                break
            if event is not None:
                stream, data = event
                self._append_log(api, tails[stream], stream, data)
        assert outcome is not None  # follow() ends only with the outcome
        log.info("%s: ended: %s %s", self.job_id, outcome.state.value, outcome.reason)
        try:
            self.audit.program_ended(outcome)
        except AuditFailed as exc:
            self._reject(api, exc)
            return
        self._deliver(api, job, outcome)

    def _append_log(
        self, api: AgentApi, tail: accepted_job.LogTail, stream: str, data: bytes
    ) -> None:
        start = tail.offset - len(data)
        try:
            api.append_log(self.lease, stream, start, data)
        except Conflict as exc:
            if exc.code != "offset_mismatch" or exc.offset is None or exc.offset > start:
                raise
            tail.offset = exc.offset  # the broker has less than we thought: send from there

    def _checkpoint(self) -> None:
        self.keeper.checkpoint()

    # --- results and completion ----------------------------------------------------------

    def _deliver(self, api: AgentApi, job: accepted_job.AcceptedJob, outcome: JobOutcome) -> None:
        results: list[dict[str, Any]] = []
        skipped: list[dict[str, Any]] = []
        # A cancelled job's bridge has gone away: confirm the cancel at once, send nothing.
        if outcome.state != JobState.CANCELLED and job.command.release == "manual":
            # Held results stay at the site: the agent does not offer the hold yet.
            self._reject(api, SiteError(
                f"command {job.command.name} holds its results for manual release, which "
                "only the SSH path offers so far; none left the site (run it over SSH)"
            ))  # fmt: skip
            self.wd.mark_delivered()
            return
        if outcome.state != JobState.CANCELLED:
            out = outgoing.select_results(self.site, job)
            skipped = out.skipped
            try:
                audit.record_withheld(self.audit, out.withheld)
                results = upload_results(
                    api, self.lease, self.wd.path, out, self._checkpoint,
                    before_send=self.audit.result_sent,
                )  # fmt: skip
            except AuditFailed as exc:
                self._reject(api, exc)  # what was sent is recorded; nothing more goes
                self.wd.mark_delivered()
                return
        self._complete(api, outcome.to_message(), results, skipped)
        self.wd.mark_delivered()
        log.info(
            "%s: completed at the broker: %d results, %d skipped",
            self.job_id, len(results), len(skipped),
        )  # fmt: skip

    def _disk_full(self, api: AgentApi, exc: OSError) -> None:
        """No room in the work dirs: handing the job back would only fail again at every lease,
        so it ends now, failed, with that reason (paths stay at the site, in its log)."""
        log.error("%s: the site's disk is full (%s); the job ends as failed", self.job_id, exc)
        native_id = self.wd.native_id() if self.wd.exists() else None
        if native_id is not None:
            with contextlib.suppress(BridgeError, OSError):  # best effort: leave nothing running
                job = accepted_job.load_accepted(self.site, self.wd)
                self.site.scheduler(job.command).cancel(JobHandle(self.job_id, native_id,
                                                                  self.wd.control))  # fmt: skip
        outcome = {
            "state": JobState.FAILED.value, "exit_code": None, "signal": None,
            "reason": "the site's disk is full (no space left for the job's work dir); the "
                      "site admin must free space under [site] work_base",
        }  # fmt: skip
        try:
            self._complete(api, outcome, [], [])
        except BridgeError as failed:
            log.error("%s: could not report the full disk to the broker: %s", self.job_id, failed)

    def _reject(self, api: AgentApi, exc: BridgeError) -> None:
        outcome = rejection_outcome(exc)
        log.warning("%s: rejected (%s): %s", self.job_id, outcome["error_kind"], exc.message)
        self._complete(api, outcome, [], [])

    def _complete(
        self,
        api: AgentApi,
        outcome: dict[str, Any],
        results: list[dict[str, Any]],
        skipped: list[dict[str, Any]],
    ) -> None:
        self.keeper.completing = True  # from now on a refused renewal is expected, not lost
        api.complete(self.lease, outcome, results, skipped)
        if self.metrics is not None:
            self.metrics.job_ended(self.doc.get("command"), outcome)
            sent = sum(r.get("size", 0) for r in results if isinstance(r.get("size"), int))
            self.metrics.staged.labels("out").inc(sent)
        if self.wd.exists():
            with (
                contextlib.suppress(OSError),  # a full disk: the broker has the outcome already
                open(self.wd.control_file(BROKER_COMPLETED_FILE), "w", encoding="utf-8") as marker,
            ):
                marker.write(f"{outcome.get('state')}\n")


class _PulledStart:
    """A pulled job's own steps of the shared start (``job_start.start_once``): inputs are
    downloaded from the broker, a cancel is confirmed to it, and the job is marked running there
    before it is submitted (refused if a newer lease holds it: then nothing starts)."""

    def __init__(self, job: PulledJob, api: AgentApi) -> None:
        self.job = job
        self.api = api
        self.submitted: str | None = None  # the native id, once this start submitted the job
        self.accepted: accepted_job.AcceptedJob | None = None

    def found_started(self, native_id: str, recovered: bool) -> None:
        # One that was killed before it recorded the native id: recovered, never restaged. One
        # an earlier worker of ours started is followed as it is.
        if recovered:
            self.job._report_native_id(self.api, native_id)

    def walltime_limit(self) -> float | None:
        return self.job._walltime()

    def cancelled(self) -> bool:
        return self.job._cancelled_before_start(self.api)

    def stage_inputs(self, job: accepted_job.AcceptedJob) -> bool:
        self.accepted = job
        self.job._download_inputs(self.api, job)
        if self.job._cancelled_before_start(self.api):
            return False
        # Running at the broker first: if our lease is stale this raises and nothing starts.
        self.api.renew(self.job.lease, state="running")
        return True

    def started(self, native_id: str) -> None:
        self.submitted = native_id
        wd = self.job.wd
        assert self.accepted is not None  # stage_inputs() came first
        scheduler = self.job.site.scheduler(self.accepted.command)
        audit.record_start(self.job.audit, scheduler, JobHandle(wd.job_id, native_id, wd.control))


def _broker_peer(agent: AgentConfig) -> audit.Peer:
    """The broker as the audit log names it: its URL and the public id of our token."""
    try:
        token_id = audit.token_id(read_token(agent.token_file, agent.where))
    except BridgeError:
        token_id = None  # the agent itself stops on an unreadable token
    return audit.Peer("broker", agent.url, token_id=token_id)


__all__ = ["PulledJob", "drop_local_job"]
