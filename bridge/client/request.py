"""What one run of a job sends and gets back, whichever way it reaches the site.

The request built from the command line (``-p name=value`` pairs, the declared inputs, each
checked to exist and be readable before anything is sent), the result a run returns, and the
output dir results are written below. Shared by ``channel_job`` (SSH, local) and
``broker_job`` (the broker).
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
from typing import Any

from bridge.core.errors import BridgeError, ExitCode, InputMissing, StagingError
from bridge.core.job import InputDecl, JobOutcome, JobRequest, ParamValue
from bridge.core.paths import check_name


@dataclass(frozen=True)
class LocalInput:
    name: str
    path: str  # the real file (symlinks followed: MInt module dirs link to their inputs)
    size: int
    mode: int


def prepare_inputs(paths: list[str]) -> list[LocalInput]:
    """Check every input exists and is readable before anything is sent."""
    inputs: list[LocalInput] = []
    for path in paths:
        name = check_name(os.path.basename(path.rstrip("/")), "input name")
        try:
            st = os.stat(path)
        except OSError as exc:
            raise InputMissing(f"input {path} cannot be read: {exc.strerror}") from exc
        if not stat.S_ISREG(st.st_mode):
            raise InputMissing(f"input {path} is not a regular file")
        if not os.access(path, os.R_OK):
            raise InputMissing(f"input {path} is not readable by this user")
        if any(i.name == name for i in inputs):
            raise InputMissing(f"two inputs are named {name}; input names must be unique")
        inputs.append(
            LocalInput(name, os.path.realpath(path), st.st_size, stat.S_IMODE(st.st_mode))
        )
    return inputs


@dataclass
class RunResult:
    outcome: JobOutcome
    results: list[str] = field(default_factory=list)
    skipped: list[dict[str, Any]] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        """The job's code, or 89 when the site withheld a result the command requires: the
        workflow must not go on as if it had it (the solver's code is in the log line)."""
        if self.withheld_required:
            return int(ExitCode.RESULT_WITHHELD)
        return self.outcome.bridge_exit_code()

    @property
    def withheld_required(self) -> list[str]:
        return [str(s.get("name")) for s in self.skipped if s.get("required") is True]


def open_output_dir(path: str) -> int:
    """The output dir (created if missing) as a descriptor, for ``open_dir_nofollow``: the
    MInt module's own dir, so symlinks on the way to it are followed, never below it."""
    try:
        os.makedirs(path, exist_ok=True)
        return os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as exc:
        raise StagingError(f"cannot write results to {path}: {exc.strerror}") from exc


def build_request(
    job_id: str,
    command: str,
    inputs: list[LocalInput],
    params: dict[str, ParamValue],
    metadata: dict[str, str],
) -> JobRequest:
    return JobRequest(
        job_id=job_id,
        command=command,
        params=params,
        inputs=tuple(InputDecl(i.name, i.size, i.mode) for i in inputs),
        metadata=metadata,
    )


def parse_params(pairs: list[str]) -> dict[str, ParamValue]:
    """``-p name=value`` pairs; values travel as strings, the site converts them by type."""
    params: dict[str, ParamValue] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise BridgeError(f"parameter {pair!r} must look like name=value")
        params[name] = value
    return params
