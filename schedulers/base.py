"""The contract every scheduler adapter fills in: submit, status of many jobs, cancel.

An adapter never sees MInt's raw request: it gets a ``JobSpec`` whose argv and environment the
site's config produced and validated. The native job id an adapter returns is stored in the
job's control dir at once, so a restarted site entry re-attaches instead of resubmitting.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import dataclass, field

from bridge.job import JobOutcome


@dataclass(frozen=True)
class JobSpec:
    job_id: str
    workdir: str
    control_dir: str
    argv: list[str]
    env: dict[str, str]
    stdout_path: str
    stderr_path: str  # equal to stdout_path when the command merges both into one log file
    walltime: float | None = None
    resources: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class JobHandle:
    """What identifies a submitted job to its adapter: the native id and its control dir."""

    job_id: str
    native_id: str
    control_dir: str


class Scheduler(abc.ABC):
    name: str = ""
    #: Minimum seconds between two status calls for the same site.
    poll_interval: float = 1.0

    @abc.abstractmethod
    def submit(self, spec: JobSpec) -> str:
        """Start the job; return its native id. Must not return before the id is durable."""

    @abc.abstractmethod
    def status(self, handles: Sequence[JobHandle]) -> dict[str, JobOutcome]:
        """The current outcome of each job (keyed by native id), with one call for all."""

    @abc.abstractmethod
    def cancel(self, handle: JobHandle) -> None:
        """Stop the job. A job that already finished is not an error."""
