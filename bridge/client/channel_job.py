"""``mint-bridge run``: send inputs, run a command at a site, stream its log, fetch results.

The flow over one connection: ``submit`` (the site validates before any byte of input moves),
inputs as checksummed streams, then the live log, the outcome, the result manifest and the
result files, each verified before it is renamed into the output directory.

If the connection drops, the bridge reconnects with bounded exponential backoff and jitter
(tenacity) and ``attach``-es to the job by id from the log offsets it already has: the job runs
on at the site meanwhile and is never started twice (the site starts a job id at most once).
On SIGTERM (PBS's ``qdel``), the bridge asks the site to cancel the job before it exits.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, BinaryIO, TypeVar

from bridge.client.request import LocalInput, RunResult, open_output_dir
from bridge.client.transports.base import Channel, Connection, Connector, site_reader
from bridge.core import defaults, progress
from bridge.core.errors import (
    BridgeError,
    Cancelled,
    JobUnknown,
    ProtocolError,
    ResultNotSent,
    TimedOut,
    TransportError,
    from_wire,
)
from bridge.core.job import JobOutcome, JobRequest
from bridge.core.paths import check_relative_path, open_dir_nofollow
from bridge.core.protocol import (
    KIND_JSON,
    KIND_STDERR,
    KIND_STDOUT,
    PROTOCOL_VERSION,
    FrameReader,
    FrameWriter,
    decode_json,
)
from bridge.core.staging import FileHeader, receive_file, send_file

if TYPE_CHECKING:
    import tenacity

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass
class _Progress:
    """What the bridge already has, so a re-attach continues where the cut happened."""

    started: bool = False
    offsets: dict[str, int] = field(default_factory=lambda: {"stdout": 0, "stderr": 0})
    outcome: JobOutcome | None = None


class JobRun:
    """One job at one site, from submit to the last verified result file."""

    def __init__(
        self,
        connector: Connector,
        request: JobRequest,
        inputs: list[LocalInput],
        output_dir: str,
        stdout: BinaryIO,
        stderr: BinaryIO,
        *,
        reconnect_attempts: int = defaults.RECONNECT_ATTEMPTS,
        walltime_limit: float | None = None,
        heartbeat_timeout: float | None = defaults.HEARTBEAT_TIMEOUT,
    ) -> None:
        self.connector = connector
        self.request = request
        self.inputs = inputs
        self.output_dir = output_dir
        self.stdout = stdout
        self.stderr = stderr
        self.reconnect_attempts = reconnect_attempts
        self.walltime_limit = walltime_limit
        self.heartbeat_timeout = heartbeat_timeout
        self.progress = _Progress()
        self.connection: Connection | None = None
        self.job_id = request.job_id
        self.held = False  # the site said the results await a site operator's release
        self.held_told = False  # ... on this connection (told once per connection)

    # --- public --------------------------------------------------------------------------

    def run(self) -> RunResult:
        try:
            return self._with_reconnects(self._attempt)
        except TimedOut as exc:
            self.cancel()
            if self.held:
                raise TimedOut(
                    f"not released within the overall timeout: the job ended, but no site "
                    f"operator ran `mint-bridge site release {self.job_id}` in time; its "
                    "results stay at the site (ask the site operator, or raise --timeout)"
                ) from exc
            raise
        except Cancelled:
            self.cancel()
            raise
        finally:
            self._disconnect()

    def cancel(self) -> JobOutcome | None:
        """Ask the site to stop the job; bounded in time (PBS sends SIGKILL soon after)."""
        if not self.progress.started and self.connection is None:
            return None
        try:
            channel = self._channel(timeout=defaults.CANCEL_CONFIRM_SECONDS)
            writer, reader = FrameWriter(channel), site_reader(channel)
            writer.write_json({"op": "cancel", "protocol": PROTOCOL_VERSION, "job_id": self.job_id})
            reply = reader.read_json()
            channel.close()
        except BridgeError as exc:
            log.error("%s: could not confirm the cancel with the site: %s", self.job_id, exc)
            return None
        if "error" in reply:
            log.error("%s: site refused the cancel: %s", self.job_id, from_wire(reply["error"]))
            return None
        outcome = JobOutcome.from_message(reply.get("cancel", {}))
        log.warning("%s: cancelled at the site (state %s)", self.job_id, outcome.state.value)
        return outcome

    # --- connection handling -------------------------------------------------------------

    def _with_reconnects(self, attempt: Callable[[], T]) -> T:
        # Most jobs never lose their connection, and importing tenacity would cost every run
        # ~15 ms: the first attempt is made here, and only a transient failure of it brings in
        # tenacity, which gets that failure as its own first attempt (so it counts, logs and
        # backs off exactly as if it had made that attempt itself).
        try:
            return attempt()
        except BridgeError as exc:
            if not exc.transient:
                raise
            first_failure: BridgeError | None = exc

        def attempt_after_first() -> T:
            nonlocal first_failure
            if first_failure is not None:
                failure, first_failure = first_failure, None
                raise failure
            return attempt()

        return self._retrying()(attempt_after_first)

    def _retrying(self) -> tenacity.Retrying:
        import tenacity  # here: only after a lost connection (see _with_reconnects)

        def before_sleep(state: tenacity.RetryCallState) -> None:
            exc = state.outcome.exception() if state.outcome else None
            log.warning(
                "%s: connection lost (%s); reconnecting, attempt %d of %d",
                self.job_id, exc, state.attempt_number + 1, self.reconnect_attempts,
            )  # fmt: skip
            self._disconnect()

        return tenacity.Retrying(
            retry=tenacity.retry_if_exception(lambda e: isinstance(e, BridgeError) and e.transient),
            stop=tenacity.stop_after_attempt(self.reconnect_attempts),
            wait=tenacity.wait_exponential_jitter(
                multiplier=defaults.RECONNECT_INITIAL_WAIT, max=defaults.RECONNECT_MAX_WAIT
            ),
            before_sleep=before_sleep,
            reraise=True,
        )

    def _channel(self, timeout: float | None = None) -> Channel:
        if self.connection is None:
            self.connection = self.connector.connect()
        return self.connection.open_channel(timeout=timeout)

    def _disconnect(self) -> None:
        if self.connection is not None:
            with contextlib.suppress(Exception):
                self.connection.close()
            self.connection = None

    # --- one attempt: submit or re-attach, then follow --------------------------------------

    def _attempt(self) -> RunResult:
        channel = self._channel(timeout=self.heartbeat_timeout)
        self.held_told = False
        try:
            reader, writer = site_reader(channel), FrameWriter(channel)
            if self.progress.started or self.progress.outcome is not None:
                self._reattach(reader, writer)
            else:
                self._submit(reader, writer)
            return self._follow(reader, writer)
        finally:
            with contextlib.suppress(Exception):
                channel.close()

    def _submit(self, reader: FrameReader, writer: FrameWriter) -> None:
        message: dict[str, Any] = {
            "op": "submit",
            "protocol": PROTOCOL_VERSION,
            "request": self.request.to_message(),
        }
        if self.walltime_limit:
            message["walltime_limit"] = self.walltime_limit
        _send_first(reader, writer, message)
        reply = _reply(reader)
        if reply.get("attached"):  # an earlier attempt of ours started it already
            self.progress.started = True
            return
        if not reply.get("ready"):
            raise ProtocolError(f"unexpected reply to submit: {sorted(reply)}")
        for item in self.inputs:
            with open(item.path, "rb") as source, progress.transfer(
                "in", item.name, item.size
            ) as sent:
                sent.sha256 = send_file(writer, item.name, source, item.size, item.mode)
        started = _reply(reader)
        if not started.get("started"):
            raise ProtocolError(f"unexpected reply after inputs: {sorted(started)}")
        self.progress.started = True
        log.info("%s: started at site %s", self.job_id, self.connector.site_name)

    def _reattach(self, reader: FrameReader, writer: FrameWriter) -> None:
        _send_first(
            reader,
            writer,
            {
                "op": "attach",
                "protocol": PROTOCOL_VERSION,
                "job_id": self.job_id,
                "offsets": self.progress.offsets,
            },
        )
        try:
            _reply(reader)
        except JobUnknown:
            if self.progress.started:
                raise
        log.info("%s: re-attached at offsets %s", self.job_id, self.progress.offsets)

    def _follow(self, reader: FrameReader, writer: FrameWriter) -> RunResult:
        """Log frames until the outcome, then the manifest and the result files."""
        while True:
            kind, payload = reader.read_frame()
            if kind == KIND_STDOUT:
                self._log(self.stdout, "stdout", payload)
                continue
            if kind == KIND_STDERR:
                self._log(self.stderr, "stderr", payload)
                continue
            if kind != KIND_JSON:
                raise ProtocolError(f"unexpected {kind!r} frame while following the job")
            message = _check_error(decode_json(payload))
            if "exit" in message:
                self.progress.outcome = JobOutcome.from_message(message["exit"])
            elif "held" in message:
                self._held(message["held"])
            elif "manifest" in message:
                return self._receive_results(reader, writer, message)

    def _held(self, notice: object) -> None:
        """The site holds the results for a site operator: say so once per connection."""
        if self.held_told:
            return
        self.held_told = self.held = True
        command = notice.get("release") if isinstance(notice, dict) else None
        if not isinstance(command, str) or not command.startswith("mint-bridge site release "):
            command = f"mint-bridge site release {self.job_id}"
        log.warning(
            "%s: awaiting release: the job ended and its results wait at the site for a site "
            "operator to run `%s` (or `mint-bridge site reject %s --reason ...`); the wait "
            "counts against the timeout", self.job_id, command[:120], self.job_id,
        )  # fmt: skip

    def _log(self, sink: BinaryIO, stream: str, data: bytes) -> None:
        sink.write(data)
        sink.flush()
        self.progress.offsets[stream] += len(data)

    def _receive_results(
        self, reader: FrameReader, writer: FrameWriter, manifest: dict[str, Any]
    ) -> RunResult:
        if self.progress.outcome is None:
            raise ProtocolError("the site sent results before the job's outcome")
        expected = _manifest_entries(manifest)
        skipped = [s for s in manifest.get("skipped", []) if isinstance(s, dict)]
        for entry in skipped:
            log.warning(
                "%s: %s not returned: %s", self.job_id, entry.get("name"), entry.get("reason")
            )
        received: list[str] = []
        out_fd = open_output_dir(self.output_dir)
        try:
            for _ in expected:
                header = FileHeader.from_message(_check_error(reader.read_json()))
                if expected.get(header.name) != header.size:
                    raise ProtocolError(f"result {header.name!r:.80} is not in the manifest")
                parts = check_relative_path(header.name).parts
                dir_fd = open_dir_nofollow(out_fd, parts[:-1], create=True)
                try:
                    with progress.transfer("out", header.name, header.size) as got:
                        got.sha256 = receive_file(reader, header, dir_fd, parts[-1])
                except ResultNotSent as exc:  # the site could not read it: the others come
                    log.warning("%s: %s not returned: %s", self.job_id, header.name, exc.message)
                    skipped.append({"name": header.name, "reason": exc.message})
                    continue
                finally:
                    os.close(dir_fd)
                received.append(header.name)
        finally:
            os.close(out_fd)
        done = _check_error(reader.read_json())
        if not done.get("done"):
            raise ProtocolError("the site did not close the result stream")
        with contextlib.suppress(BridgeError):
            writer.write_json({"op": "ack"})
        return RunResult(self.progress.outcome, received, skipped)


def _manifest_entries(manifest: dict[str, Any]) -> dict[str, int]:
    entries = manifest.get("manifest")
    if not isinstance(entries, list):
        raise ProtocolError("malformed result manifest")
    sizes: dict[str, int] = {}
    for entry in entries:
        if not isinstance(entry, dict) or not isinstance(entry.get("size"), int):
            raise ProtocolError("malformed result manifest entry")
        name = str(check_relative_path(entry.get("name")))
        sizes[name] = entry["size"]
    return sizes


def _send_first(reader: FrameReader, writer: FrameWriter, message: dict[str, Any]) -> None:
    """Send the first request of a channel. When the channel is already closed, what the
    site said before it closed (a no-login shell's message, an error frame) is the reason,
    not the closed pipe, which would be retried."""
    try:
        writer.write_json(message)
    except TransportError as exc:
        try:
            _reply(reader)
        except BridgeError as said:
            if not said.transient:
                raise said from exc
        raise


def _check_error(message: dict[str, Any]) -> dict[str, Any]:
    if "error" in message:
        raise from_wire(message["error"])
    return message


def _reply(reader: FrameReader) -> dict[str, Any]:
    return _check_error(reader.read_json())
