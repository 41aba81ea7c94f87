"""The contract every scheduler adapter fills in: submit, recover, status of many jobs, cancel.

An adapter never sees MInt's raw request: it gets a ``JobSpec`` whose argv and environment the
site's config produced and validated. The native job id an adapter returns is stored in the
job's control dir at once, so a restarted site entry re-attaches instead of resubmitting.
Should the site process die between a submit and that record, ``recover`` finds the job the
submit started, so it is followed instead of started a second time.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import dataclass, field

from bridge.core.errors import SchedulerError
from bridge.core.job import JobOutcome
from schedulers.login_host import LoginHost


@dataclass(frozen=True)
class SchedulerOptions:
    """Per-site settings from the site config's ``[scheduler]`` table."""

    poll_interval: float | None = None  # minimum seconds between status calls; None: default
    command_timeout: float = 30.0  # a scheduler command running longer is a transient failure
    retries: int = 5  # attempts for a command failing with a transient error
    retry_wait: float = 1.0  # first wait before a retry (then doubling, with jitter)
    login: LoginHost | None = None  # batch commands run on this login node over SSH


@dataclass(frozen=True)
class Resources:
    """What a command asks of a batch scheduler; every value was validated by the site config."""

    cpus: int | None = None  # CPUs per task
    nodes: int | None = None
    tasks: int | None = None
    memory_mb: int | None = None
    queue: str | None = None  # Slurm partition, PBS queue
    account: str | None = None
    extra: tuple[str, ...] = ()  # extra directive lines the site lists, e.g. "--qos=long"


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
    resources: Resources = field(default_factory=Resources)


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

    def configure(self, options: SchedulerOptions) -> None:
        """Apply the site's ``[scheduler]`` settings."""
        if options.poll_interval is not None:
            self.poll_interval = options.poll_interval

    @abc.abstractmethod
    def submit(self, spec: JobSpec) -> str:
        """Start the job; return its native id. Must not return before the id is durable."""

    def recover(self, spec: JobSpec) -> str | None:
        """The native id of this job if an earlier submit of it reached the scheduler, else None.

        Asked when a submit began but its native id was never recorded (the site process was
        killed in between). None must mean "certainly never started": when the adapter cannot
        tell (the scheduler does not answer), it raises ``SchedulerError`` so the request fails
        and is retried, instead of the job starting twice. This default always raises."""
        raise SchedulerError(
            f"{spec.job_id}: an earlier start may have reached scheduler {self.name or '?'}, "
            "which cannot tell whether it did; the job is not started again"
        )

    @abc.abstractmethod
    def status(self, handles: Sequence[JobHandle]) -> dict[str, JobOutcome]:
        """The current outcome of each job (keyed by native id), with one call for all."""

    @abc.abstractmethod
    def cancel(self, handle: JobHandle) -> None:
        """Stop the job. A job that already finished is not an error."""

    def end_record(self, control_dir: str) -> str | None:
        """The path of the file in which the job recorded its end, if that file exists.

        Site cleanup measures a work dir's retention from it, and keeps a job that has none
        (and was not seen ending by the site) as possibly running. Default: no such record."""
        return None
