"""``mint-bridge site serve-ssh``: the only thing MInt's key can run at a site.

OpenSSH's forced command (``command="mint-bridge site serve-ssh --config ..."`` in
``authorized_keys``) runs this for every connection; the client's own request arrives in
``SSH_ORIGINAL_COMMAND``. Anything but our protocol marker (an interactive shell, ``cat
/etc/passwd``, scp, sftp) is refused with a message on stderr and a non-zero exit, and logged.

Operations, each a JSON request frame answered on the same channel:

    hello    -> version, site name and the command list (names, descriptions, parameters)
    submit   -> validate; stage inputs; start once; then stream log, outcome and results
    attach   -> stream a started job from given log offsets, then its outcome and results
    cancel   -> stop a job through its scheduler; confirm its final state

Each step of a job (received, each input, started, ended, each result before its bytes go) and
each refusal is recorded in the site's audit log (``bridge.site.audit``) first; a line that
cannot be written stops the request with an ``AuditFailed`` error frame (exit 90 at the bridge).
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from typing import Any

from bridge import __version__
from bridge.core import defaults, outbound
from bridge.core.errors import (
    BridgeError,
    JobRejected,
    JobUnknown,
    ProtocolError,
    ResultNotSent,
    ResultsRejected,
    SiteError,
    StagingError,
)
from bridge.core.job import JobOutcome, JobRequest, check_job_id
from bridge.core.protocol import (
    KIND_STDERR,
    KIND_STDOUT,
    PROTOCOL_VERSION,
    ByteChannel,
    FdChannel,
    FrameReader,
    FrameWriter,
    PeerIdle,
)
from bridge.core.results import ResultFile, open_result_for_reading
from bridge.core.staging import FileHeader, receive_file, send_file, withdraw_file
from bridge.core.streams import sha256_stream
from bridge.site import accepted_job, audit, job_start, outgoing, probe, release
from bridge.site.audit_chain import AuditWriter
from bridge.site.config import SiteConfig
from bridge.site.status_cache import SharedStatus
from bridge.site.workdir import WorkDir
from schedulers import JobHandle, Scheduler

log = logging.getLogger(__name__)


# How often a held job's site entry looks for the operator's decision.
_RELEASE_POLL_SECONDS = 0.25

#: The site entry's exit code when the bridge sent nothing within ``[site] idle_timeout``.
EXIT_IDLE = 75


class RefusedRequest(Exception):
    """The SSH client asked for something other than our protocol."""


def check_original_command(original: str | None) -> None:
    """Accept only ``mint-bridge-protocol <version>``; refuse shells and other commands."""
    if original is None:
        raise RefusedRequest(
            "this key only runs mint-bridge jobs; interactive shells are not allowed"
        )
    words = original.split()
    if not words or words[0] != defaults.PROTOCOL_REQUEST:
        raise RefusedRequest(
            f"this key only runs mint-bridge jobs; refused command {original[:200]!r}"
        )


class Session:
    """One connection: reads one request, answers it, and ends."""

    def __init__(
        self, site: SiteConfig, channel: ByteChannel, peer: audit.Peer | None = None
    ) -> None:
        self.site = site
        self.channel = channel
        self.who = peer or audit.Peer("local", "stdin")
        self.peer = self.who.address  # for log lines
        self.audit_writer = AuditWriter(site.audit_dir)
        self.job_id = "-"  # until the request names it
        self.reader = FrameReader(channel)
        self.writer = FrameWriter(channel)
        self._set_idle_timeout(site.idle_timeout)

    def _set_idle_timeout(self, seconds: float | None) -> None:
        # Only a descriptor channel can wait with a deadline; a test's in-memory one never idles.
        if isinstance(self.channel, FdChannel):
            self.channel.idle_timeout = seconds

    def serve(self) -> int:
        try:
            return self._serve()
        except PeerIdle as exc:
            log.warning(
                "%s: peer %s idle: sent nothing for %g s before the job started; closed "
                "([site] idle_timeout)",
                self.job_id, self.peer, exc.idle_seconds,
            )  # fmt: skip
            self._try_send_error(exc)
            return EXIT_IDLE

    def _serve(self) -> int:
        attempted = "a request that could not be read (bad frame)"
        try:
            request = self.reader.read_json()
            self.job_id = _named_job(request)
            attempted = _attempt(request)
            op = request.get("op")
            handler = {
                "hello": self._hello,
                "submit": self._submit,
                "attach": self._attach,
                "cancel": self._cancel,
            }.get(str(op))
            if handler is None:
                raise ProtocolError(f"unknown operation {op!r:.40}")
            _check_protocol(request)
            handler(request)
            return 0
        except PeerIdle:
            raise
        except BridgeError as exc:
            log.warning("request failed: %s", exc.message)
            if isinstance(exc, ProtocolError | JobRejected):
                job = None if self.job_id == "-" else self.job_id
                audit.refused(self.audit_writer, self.who, attempted, exc.message, job=job)
            self._try_send_error(exc)
            return 2

    def job_audit(self, job_id: str) -> audit.JobAudit:
        control = WorkDir(self.site.work_base, job_id).control
        return audit.JobAudit(self.audit_writer, job_id, self.who, control)

    def _try_send_error(self, exc: BridgeError) -> None:
        # If the bridge went away it will re-attach or resubmit; nothing more to do here.
        with contextlib.suppress(BridgeError):
            self.writer.write_json({"error": exc.to_wire()})

    # --- operations -------------------------------------------------------------------

    def _hello(self, request: dict[str, Any]) -> None:
        self.writer.write_json(
            {
                "version": __version__,
                "protocol": PROTOCOL_VERSION,
                "site": self.site.name,
                "commands": self.site.describe(),
            }
        )

    def _submit(self, message: dict[str, Any]) -> None:
        request = JobRequest.from_message(_object(message, "request"))
        if probe.is_probe(request):
            self._probe(request)
            return
        try:
            command, values = self.site.check_request(request)
        except JobRejected as exc:
            log.warning("%s: rejected: %s", request.job_id, exc.message)
            raise
        self.job_audit(request.job_id).received(request, values)
        wd = WorkDir(self.site.work_base, request.job_id)
        job = accepted_job.AcceptedJob(request, command, values, wd)
        wd.create(self.site.path)
        scheduler = self.site.scheduler(command)
        job_start.start_once(job, scheduler, _SubmitSteps(self, job, message, scheduler))
        self._set_idle_timeout(None)  # the job runs: from now on the site only writes
        self._stream(job, {"stdout": 0, "stderr": 0})

    def _probe(self, request: JobRequest) -> None:
        """The built-in probe: the submit's conversation, with the site entry as the job."""
        job = probe.accept(self.site, request)
        self.job_audit(request.job_id).received(request, job.values)
        wd = job.workdir
        if not wd.create(self.site.path):
            raise JobRejected(f"probe {request.job_id} was sent before; send a new one")
        try:
            self.writer.write_json({"ready": True})
            _receive_inputs(job, self.reader, self.job_audit(request.job_id))
            self.writer.write_json(
                {"started": True, "job_id": request.job_id, "native_id": probe.NATIVE_ID}
            )
            outcome, text = probe.answer(self.site, job)
            self.writer.write_frame(KIND_STDOUT, text)
            self.writer.write_json({"exit": outcome.to_message()})
            self._send_results(job)
        finally:
            wd.remove()  # a probe's files are of no use once its answer went out

    def _attach(self, message: dict[str, Any]) -> None:
        wd = WorkDir(self.site.work_base, check_job_id(message.get("job_id")))
        if wd.exists() and wd.native_id() is None and wd.submitting():
            with wd.locked():
                job_start.recorded_or_recovered(self.site, wd)
        wd.require_started()
        job = accepted_job.load_accepted(self.site, wd)
        offsets = message.get("offsets", {})
        if not isinstance(offsets, dict):
            raise ProtocolError("offsets must be an object")
        self.writer.write_json({"attached": True})
        log.info("%s: bridge re-attached at offsets %s", wd.job_id, offsets)
        self._stream(job, offsets)

    def _cancel(self, message: dict[str, Any]) -> None:
        wd = WorkDir(self.site.work_base, check_job_id(message.get("job_id")))
        if wd.exists():
            # Wait for a submit that is staging or starting this job, and make sure one that
            # has not started yet never will: the bridge that sent it is going away.
            with wd.locked():
                if job_start.recorded_or_recovered(self.site, wd) is None:
                    wd.mark_cancel_requested()
        native_id = wd.require_started()
        job = accepted_job.load_accepted(self.site, wd)
        scheduler = self.site.scheduler(job.command)
        handle = JobHandle(wd.job_id, native_id, wd.control)
        scheduler.cancel(handle)
        log.info("%s: cancel requested by the bridge", wd.job_id)
        # Through SharedStatus, which records a final outcome: a job cancelled so is settled
        # and not asked about again on every later status pass of the site.
        status = SharedStatus(self.site.work_base, scheduler)
        outcome = _wait_final(scheduler, status, handle, defaults.CANCEL_CONFIRM_SECONDS)
        self.writer.write_json({"cancel": outcome.to_message()})

    # --- streaming a job --------------------------------------------------------------

    def _stream(self, job: accepted_job.AcceptedJob, offsets: dict[str, Any]) -> None:
        wd = job.workdir
        native_id = wd.require_started()
        scheduler = self.site.scheduler(job.command)
        tails = {
            stream: accepted_job.LogTail(path, _offset(offsets.get(stream)))
            for stream, path in accepted_job.log_paths(wd, job.command).items()
        }
        kinds = {"stdout": KIND_STDOUT, "stderr": KIND_STDERR}
        last_sent = time.monotonic()
        status = SharedStatus(self.site.work_base, scheduler)
        handle = JobHandle(wd.job_id, native_id, wd.control)
        for event in accepted_job.follow(status, handle, tails):
            if isinstance(event, JobOutcome):
                self.job_audit(wd.job_id).program_ended(event)
                self.writer.write_json({"exit": event.to_message()})
                log.info("%s: ended: %s %s", wd.job_id, event.state.value, event.reason)
                break
            if event is None:
                if time.monotonic() - last_sent >= defaults.HEARTBEAT_SECONDS:
                    self.writer.write_json({"heartbeat": time.time()})
                    last_sent = time.monotonic()
                continue
            stream, data = event
            self.writer.write_frame(kinds[stream], data)
            last_sent = time.monotonic()
        if job.command.release == "manual":
            self._await_release(job)
        self._send_results(job)

    def _await_release(self, job: accepted_job.AcceptedJob) -> None:
        """Hold the results until a site operator decides; the hold is a file, so a restarted
        site entry (a re-attaching bridge) waits on, or goes on with the decision made."""
        wd = job.workdir
        found = release.decision(wd)
        if found is None:
            held = release.hold(wd, job.command.name, outgoing.select_results(self.site, job))
            notice = {"held": {"since": held["since"], "release": release.release_command(
                wd.job_id), "files": len(held["files"])}}  # fmt: skip
            log.info("%s: awaiting release by a site operator", wd.job_id)
            while (found := release.decision(wd)) is None:
                self.writer.write_json(notice)  # also the bridge's heartbeat meanwhile
                deadline = time.monotonic() + defaults.HEARTBEAT_SECONDS
                while release.decision(wd) is None and time.monotonic() < deadline:
                    time.sleep(_RELEASE_POLL_SECONDS)
        if found["verdict"] != release.RELEASED:
            reason = outbound.scrub(str(found.get("reason") or "no reason given"))
            raise ResultsRejected(
                f"a site operator rejected the results of job {wd.job_id}: {reason}; none of "
                "them left the site"
            )
        log.info("%s: released by %s", wd.job_id, found.get("by"))

    def _send_results(self, job: accepted_job.AcceptedJob) -> None:
        wd = job.workdir
        out = outgoing.select_results(self.site, job)
        job_audit = self.job_audit(wd.job_id)
        audit.record_withheld(job_audit, out.withheld)
        self.writer.write_json(
            {
                "manifest": [{"name": f.name, "size": f.size, "mode": f.mode} for f in out.files],
                "skipped": out.skipped,
            }
        )
        root_fd = _open_root(wd.path)
        try:
            not_sent = sum(
                not self._send_one(root_fd, out, result, job_audit) for result in out.files
            )
        finally:
            os.close(root_fd)
        self.writer.write_json({"done": True})
        reply = self.reader.read_json()
        if reply.get("op") == "ack":
            wd.mark_delivered()
            log.info(
                "%s: %d results delivered, %d not sent, %d skipped or withheld",
                wd.job_id, len(out.files) - not_sent, not_sent, len(out.skipped),
            )  # fmt: skip

    def _send_one(
        self,
        root_fd: int,
        out: outgoing.Outgoing,
        result: ResultFile,
        job_audit: audit.JobAudit,
    ) -> bool:
        """Send one result; one that cannot be read is withdrawn and the next one goes.

        Its audit line, with its SHA-256, is on disk before its first byte goes: the digest
        of the egress check's read when it made one, else one read here first (the send then
        hashes nothing again)."""
        try:
            source = open_result_for_reading(root_fd, result)
        except StagingError as exc:
            self._withdraw(result, exc)
            return False
        with source:
            sha256 = out.sha256.get(result.name)
            seen = out.signatures.get(result.name)
            if sha256 is None:
                try:
                    seen = outgoing.signature(source.fileno())
                    sha256 = sha256_stream(source, result.size, result.name)
                except StagingError as exc:
                    self._withdraw(result, exc)
                    return False
            job_audit.result_sent(result.name, result.size, sha256)
            try:
                send_file(
                    self.writer, result.name, source, result.size, result.mode, sha256=sha256,
                    unchanged=lambda: outgoing.signature(source.fileno()) == seen,
                )  # fmt: skip
            except ResultNotSent as exc:
                log.warning("%s: result %s not sent: %s", self.job_id, result.name, exc.message)
                return False
        return True

    def _withdraw(self, result: ResultFile, exc: StagingError) -> None:
        """A result that cannot be read: its header, then why it does not follow."""
        log.warning("%s: result %s not sent: %s", self.job_id, result.name, exc.message)
        self.writer.write_json({"file": result.name, "size": result.size, "mode": result.mode})
        withdraw_file(self.writer, outbound.scrub(f"not sent: {exc.message}"))


class _SubmitSteps:
    """A submit's own steps of the shared start (``job_start.start_once``): inputs arrive as
    frames on the channel, and the bridge hears "attached", "ready" and "started"."""

    def __init__(
        self,
        session: Session,
        job: accepted_job.AcceptedJob,
        message: dict[str, Any],
        scheduler: Scheduler,
    ) -> None:
        self.session = session
        self.job = job
        self.message = message
        self.scheduler = scheduler

    def found_started(self, native_id: str, recovered: bool) -> None:
        log.info("%s: submit retried; attaching to the running job", self.job.request.job_id)
        self.session.writer.write_json({"attached": True})

    def walltime_limit(self) -> float | None:
        return _walltime_limit(self.message)

    def cancelled(self) -> bool:
        if self.job.workdir.cancel_requested():
            raise JobUnknown(f"job {self.job.request.job_id} was cancelled before it started")
        return False

    def stage_inputs(self, job: accepted_job.AcceptedJob) -> bool:
        self.session.writer.write_json({"ready": True})
        try:
            _receive_inputs(job, self.session.reader, self.session.job_audit(job.request.job_id))
        except BaseException:
            job.workdir.discard_inputs()
            raise
        return True

    def started(self, native_id: str) -> None:
        job_audit = self.session.job_audit(self.job.request.job_id)
        handle = JobHandle(job_audit.job_id, native_id, self.job.workdir.control)
        audit.record_start(job_audit, self.scheduler, handle)
        self.session.writer.write_json(
            {"started": True, "job_id": self.job.request.job_id, "native_id": native_id}
        )


def _receive_inputs(
    job: accepted_job.AcceptedJob, reader: FrameReader, job_audit: audit.JobAudit
) -> None:
    """Receive every declared input into the work dir; each is verified before it appears."""
    dir_fd = os.open(job.workdir.path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    try:
        staged: dict[str, tuple[int, int]] = {}
        for decl in job.request.inputs:
            header = FileHeader.from_message(reader.read_json())
            if header.name != decl.name or header.size != decl.size:
                raise ProtocolError(
                    f"expected input {decl.name} ({decl.size} bytes), got {header.name!r:.80}"
                )
            sha256 = receive_file(reader, header, dir_fd, decl.name)
            job_audit.input_received(decl.name, decl.size, sha256)
            st = os.stat(decl.name, dir_fd=dir_fd, follow_symlinks=False)
            staged[decl.name] = (st.st_size, st.st_mtime_ns)
    finally:
        os.close(dir_fd)
    accepted_job.record_staged_inputs(job, staged)


def _attempt(request: dict[str, Any]) -> str:
    """What a request tried, for a refusal's audit line: its operation and command name."""
    inner = request.get("request")
    command = inner.get("command") if isinstance(inner, dict) else None
    text = f"operation {request.get('op')!r:.40}"
    return f"{text} of command {command!r:.80}" if command is not None else text


def _open_root(path: str) -> int:
    return os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)


def _named_job(request: dict[str, Any]) -> str:
    """The job id a request names (``submit``'s inside its request), or ``-`` for log lines."""
    inner = request.get("request")
    named = inner.get("job_id") if isinstance(inner, dict) else request.get("job_id")
    try:
        return check_job_id(named)
    except BridgeError:
        return "-"


def _check_protocol(request: dict[str, Any]) -> None:
    version = request.get("protocol")
    if version != PROTOCOL_VERSION:
        raise ProtocolError(
            f"bridge speaks protocol {version!r:.20}, this site speaks {PROTOCOL_VERSION}; "
            "install the same mint-bridge version on both ends"
        )


def _object(message: dict[str, Any], key: str) -> dict[str, Any]:
    value = message.get(key)
    if not isinstance(value, dict):
        raise ProtocolError(f"request field {key!r} must be an object")
    return value


def _offset(value: object) -> int:
    if value is None:
        return 0
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ProtocolError(f"log offset {value!r:.40} must be a non-negative integer")
    return value


def _walltime_limit(message: dict[str, Any]) -> float | None:
    value = message.get("walltime_limit")
    if value is None:
        return None
    if not isinstance(value, int | float) or isinstance(value, bool) or value <= 0:
        raise ProtocolError("walltime_limit must be a positive number of seconds")
    return float(value)


def _wait_final(
    scheduler: Scheduler, status: SharedStatus, handle: JobHandle, seconds: float
) -> JobOutcome:
    deadline = time.monotonic() + seconds
    while True:
        # Asked directly: the shared answer may be a poll interval old.
        outcome = status.record(handle, scheduler.status([handle])[handle.native_id])
        if outcome.state.is_final or time.monotonic() >= deadline:
            return outcome
        time.sleep(0.05)


__all__ = ["RefusedRequest", "Session", "SiteError", "check_original_command"]
