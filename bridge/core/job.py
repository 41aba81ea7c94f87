"""The job description both ends share: id, request, states and outcome.

A job id is a UUID chosen by the bridge before it contacts the site, so every retry of the same
job carries the same id and the site can refuse to start it twice.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, field
from typing import Any

from bridge.core import outbound
from bridge.core.errors import ExitCode, ProtocolError

_JOB_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")

ParamValue = str | int | float | bool


def new_job_id() -> str:
    # Imported here: only the bridge node makes ids, and uuid (which imports platform) would
    # add ~4 ms to every site request, all of which import this module.
    import uuid

    return str(uuid.uuid4())


def check_job_id(value: object) -> str:
    """A job id is a lowercase UUID4: it becomes a directory name, so nothing else passes."""
    if not isinstance(value, str) or not _JOB_ID.fullmatch(value):  # match() lets "id\n" pass
        raise ProtocolError(f"job id {value!r:.60} is not a UUID4")
    return value


class JobState(enum.StrEnum):
    """Our job states; each scheduler maps its own states onto these."""

    QUEUED = "queued"
    HELD = "held"
    RUNNING = "running"
    COMPLETED = "completed"  # the solver exited 0
    FAILED = "failed"  # the solver exited non-zero or was killed by a signal
    CANCELLED = "cancelled"
    TIMEOUT = "timeout"  # walltime exceeded
    OUT_OF_MEMORY = "out_of_memory"
    NODE_FAIL = "node_fail"
    PREEMPTED = "preempted"
    LOST = "lost"  # the scheduler no longer knows the job and it left no exit code

    @property
    def is_final(self) -> bool:
        return self not in (JobState.QUEUED, JobState.HELD, JobState.RUNNING)


_STATE_EXIT_CODES = {
    JobState.TIMEOUT: ExitCode.WALLTIME_EXCEEDED,
    JobState.OUT_OF_MEMORY: ExitCode.OUT_OF_MEMORY,
    JobState.NODE_FAIL: ExitCode.NODE_FAILURE,
    JobState.PREEMPTED: ExitCode.PREEMPTED,
    JobState.CANCELLED: ExitCode.CANCELLED_AT_SITE,
    JobState.LOST: ExitCode.JOB_LOST,
}


@dataclass(frozen=True)
class JobOutcome:
    """How a job ended: our state, the solver's exit code or signal, and a reason in words."""

    state: JobState
    exit_code: int | None = None
    signal: int | None = None
    reason: str = ""

    def bridge_exit_code(self) -> int:
        """What ``mint-bridge run`` exits with: the solver's code, 128+signal, or our own code."""
        if self.state in _STATE_EXIT_CODES:
            return int(_STATE_EXIT_CODES[self.state])
        if self.signal:
            return 128 + self.signal
        if self.exit_code is not None:
            return self.exit_code
        return int(ExitCode.JOB_LOST)

    def to_message(self) -> dict[str, Any]:
        return {
            "state": self.state.value,
            "exit_code": self.exit_code,
            "signal": self.signal,
            # The one way an outcome leaves the site: no site path goes with it.
            "reason": outbound.scrub(self.reason),
        }

    @classmethod
    def from_message(cls, message: dict[str, Any]) -> JobOutcome:
        try:
            state = JobState(str(message.get("state")))
        except ValueError as exc:
            raise ProtocolError(f"unknown job state {message.get('state')!r:.40}") from exc
        # An exit status is taken modulo 256: a code of 256 must not turn into "success".
        exit_code = _optional_int(message.get("exit_code"))
        if exit_code is not None and not 0 <= exit_code <= 255:
            raise ProtocolError(f"exit code {exit_code} is outside 0-255")
        signal = _optional_int(message.get("signal"))
        if signal is not None and not 1 <= signal <= 127:
            raise ProtocolError(f"signal {signal} is outside 1-127")
        return cls(
            state=state,
            exit_code=exit_code,
            signal=signal,
            reason=str(message.get("reason", ""))[:2000],
        )


def _optional_int(value: object) -> int | None:
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool):
        raise ProtocolError(f"expected an integer, got {value!r:.40}")
    return value


@dataclass(frozen=True)
class InputDecl:
    name: str
    size: int
    mode: int = 0o644


@dataclass(frozen=True)
class JobRequest:
    """What the bridge asks of a site: a command name, parameter values and declared inputs."""

    job_id: str
    command: str
    params: dict[str, ParamValue] = field(default_factory=dict)
    inputs: tuple[InputDecl, ...] = ()
    metadata: dict[str, str] = field(default_factory=dict)

    def to_message(self) -> dict[str, Any]:
        return {
            "job_id": self.job_id,
            "command": self.command,
            "params": dict(self.params),
            "inputs": [{"name": i.name, "size": i.size, "mode": i.mode} for i in self.inputs],
            "metadata": dict(self.metadata),
        }

    @classmethod
    def from_message(cls, message: dict[str, Any]) -> JobRequest:
        """Parse and check the shape of a request from the network (values are checked later
        against the site's config, which alone knows the parameter types)."""
        command = message.get("command")
        if not isinstance(command, str) or not command:
            raise ProtocolError("request has no command name")
        params = message.get("params", {})
        if not isinstance(params, dict) or not all(
            isinstance(k, str) and isinstance(v, str | int | float | bool)
            for k, v in params.items()
        ):
            raise ProtocolError("params must be an object of names to strings or numbers")
        metadata = message.get("metadata", {})
        if not isinstance(metadata, dict):
            raise ProtocolError("metadata must be an object")
        return cls(
            job_id=check_job_id(message.get("job_id")),
            command=command,
            params=params,
            inputs=tuple(_parse_inputs(message.get("inputs", []))),
            metadata={str(k)[:64]: str(v)[:1024] for k, v in list(metadata.items())[:32]},
        )


def _parse_inputs(raw: object) -> list[InputDecl]:
    if not isinstance(raw, list):
        raise ProtocolError("inputs must be a list")
    from bridge.core.paths import check_name  # here: the job supervisor imports this module too

    decls: list[InputDecl] = []
    seen: set[str] = set()
    for item in raw:
        if not isinstance(item, dict):
            raise ProtocolError("each input must be an object with name and size")
        name = check_name(item.get("name"))
        size, mode = item.get("size"), item.get("mode", 0o644)
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise ProtocolError(f"input {name!r} has an invalid size {size!r:.40}")
        if not isinstance(mode, int) or isinstance(mode, bool):
            raise ProtocolError(f"input {name!r} has an invalid mode")
        if name in seen:
            raise ProtocolError(f"input {name!r} is declared twice")
        seen.add(name)
        decls.append(InputDecl(name, size, mode & 0o7777))
    return decls
