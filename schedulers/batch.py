"""What every batch scheduler adapter shares: running its commands, retries, the duplicate-submit
guard, polling. The job script itself and the records it leaves are ``schedulers.batch_script``'s.

Each scheduler module only says how to *build* its commands and how to *parse* their output
(pure functions, tested on captured real output); this base runs the commands with timeouts,
retries transient failures with tenacity (exponential backoff with jitter, bounded), and merges
what the scheduler says with the exit code the job script recorded in the control dir.

Rules kept here for all schedulers:
- Every value in a batch script goes through ``shlex.quote`` or a strict pattern.
- A submit that may have reached the scheduler (a timeout, "Socket timed out") is never simply
  repeated: the job is first looked up by its name, derived from the job id.
- The same holds across processes (``recover``): the job script records its own id in the
  control dir as its first act, so a job that ran or runs is found there, and one still queued
  by its name. The submit command holds a lock on ``submit.lock`` that it shares with the
  submitting process and keeps if that process is killed, so recovery waits for a submit
  command still on its way to the scheduler instead of looking before it arrives.
- A scheduler outage holds each job in its last known state; it never fails a job.
- Non-transient errors (invalid account, bad resource request) fail at once with the
  scheduler's own message.
"""

from __future__ import annotations

import abc
import contextlib
import fcntl
import logging
import os
import re
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TypeVar

import tenacity

from bridge.core.errors import SchedulerError
from bridge.core.job import JobOutcome, JobState
from bridge.core.workdir_files import (
    BATCH_CANCEL_FILE,
    BATCH_SCRIPT_FILE,
    EXIT_CODE_FILE,
    SUBMIT_LOCK_FILE,
)
from schedulers import login_host, login_staging
from schedulers.base import JobHandle, JobSpec, Scheduler, SchedulerOptions
from schedulers.batch_script import (
    job_name,
    outcome_from_exit_code,
    read_exit_code,
    read_self_id,
    render_script,
)

log = logging.getLogger(__name__)
T = TypeVar("T")

# Messages that mean "try again later", not "your request is wrong".
TRANSIENT_PATTERNS = (
    "socket timed out",
    "timed out",
    "slurm_load_jobs error",
    "unable to contact slurm controller",
    "connection refused",
    "communication failure",
    "temporarily unavailable",
    "try again",
    "cannot connect to server",
    "pbs_server",
    "server is busy",
    "end of file",
)


def is_transient(message: str) -> bool:
    lowered = message.lower()
    return any(pattern in lowered for pattern in TRANSIENT_PATTERNS)


@dataclass(frozen=True)
class NativeStatus:
    """What a scheduler's status output says about one job."""

    state: JobState
    exit_code: int | None = None
    signal: int | None = None
    reason: str = ""


class BatchScheduler(Scheduler):
    """A scheduler driven through its command-line tools."""

    poll_interval = 5.0
    command_timeout = 30.0
    retries = 5
    retry_wait = 1.0
    #: The environment variables holding a running job's own id, the first one set wins.
    job_id_variables: tuple[str, ...] = ()

    def __init__(self) -> None:
        self._last_known: dict[str, JobOutcome] = {}
        self.login: login_host.LoginHost | None = None

    def configure(self, options: SchedulerOptions) -> None:
        super().configure(options)
        self.command_timeout = options.command_timeout
        self.retries = options.retries
        self.retry_wait = options.retry_wait
        self.login = options.login

    @property
    def staged(self) -> login_host.LoginHost | None:
        """The login host when jobs run there in a copy of their work dir (no shared one)."""
        return self.login if self.login is not None and not self.login.shared_workdir else None

    # --- what each scheduler module fills in ---------------------------------------------

    @abc.abstractmethod
    def directives(self, spec: JobSpec) -> list[str]:
        """The scheduler's directive lines for the script (name, dirs, resources)."""

    @abc.abstractmethod
    def submit_argv(self, script_path: str, spec: JobSpec) -> list[str]: ...

    @abc.abstractmethod
    def parse_submit(self, stdout: str) -> str:
        """The native id from the submit command's output."""

    @abc.abstractmethod
    def status_argv(self, native_ids: Sequence[str]) -> list[str]: ...

    @abc.abstractmethod
    def parse_status(self, stdout: str) -> dict[str, NativeStatus]: ...

    @abc.abstractmethod
    def cancel_argv(self, native_id: str) -> list[str]: ...

    @abc.abstractmethod
    def lookup_argv(self, name: str) -> list[str]:
        """A command listing the ids of live jobs with this name (duplicate-submit guard)."""

    def parse_lookup(self, stdout: str) -> str | None:
        ids = [line.strip() for line in stdout.splitlines() if line.strip()]
        return ids[0] if ids else None

    def check_native_id(self, native_id: str) -> str:
        """The id if it has this scheduler's shape; SchedulerError otherwise."""
        return native_id

    def query_status(self, native_ids: Sequence[str]) -> dict[str, NativeStatus]:
        """One status call for all these jobs; an adapter may ask again another way."""
        return self.parse_status(
            self.run(self.status_argv(native_ids), "status", self.status_output_usable)
        )

    def finished_status(self, native_ids: Sequence[str]) -> dict[str, NativeStatus]:
        """Status of jobs the live query no longer lists (e.g. Slurm's sacct); default none."""
        return {}

    def status_output_usable(self, returncode: int, stdout: str, stderr: str) -> bool:
        """Whether a status command that exited non-zero still listed the jobs it knows.

        PBS-style ``qstat`` exits non-zero when one of several ids is unknown, yet prints the
        others; such a pass must not fail. Default: a non-zero exit is an error."""
        return False

    def find_by_name(self, name: str) -> str | None:
        """The id of a live job with this name (duplicate-submit guard); adapters whose lookup
        needs the name to parse its output (no ``qselect``) override this."""
        return self.parse_lookup(self.run(self.lookup_argv(name), "lookup"))

    def is_already_finished(self, message: str) -> bool:
        """Whether a cancel error only says the job has already ended."""
        return bool(
            re.search(r"already completed|invalid job id|unknown job id|finished", message, re.I)
        )

    # --- the shared machinery ----------------------------------------------------------------

    def run(
        self,
        argv: list[str],
        what: str,
        accept: Callable[[int, str, str], bool] | None = None,
        pass_fds: Sequence[int] = (),
    ) -> str:
        """Run a scheduler command; SchedulerError with ``transient`` set when worth retrying.

        ``accept(returncode, stdout, stderr)`` may declare a non-zero exit usable; ``pass_fds``
        stay open in the command."""
        return self.execute(argv, what, accept, pass_fds).stdout

    def execute(
        self,
        argv: list[str],
        what: str,
        accept: Callable[[int, str, str], bool] | None = None,
        pass_fds: Sequence[int] = (),
    ) -> subprocess.CompletedProcess[str]:
        """``run``, keeping stderr for an adapter that reads notes from it."""
        command = argv
        if self.login is not None:  # on the login node: ssh's failures are told apart below
            login_host.ensure_master(self.login, self.command_timeout)
            command = login_host.command_argv(self.login, argv)
        try:
            proc = subprocess.run(
                command,
                capture_output=True,
                text=True,
                timeout=self.command_timeout,
                check=False,
                pass_fds=pass_fds,
            )
        except subprocess.TimeoutExpired as exc:
            raise SchedulerError(f"{what}: {argv[0]} timed out", transient=True) from exc
        except OSError as exc:
            raise SchedulerError(f"{what}: cannot run {command[0]}: {exc.strerror}") from exc
        if self.login is not None and proc.returncode != 0:
            failure = login_host.classify(self.login, proc.returncode, proc.stderr, argv[0])
            if failure is not None:
                raise SchedulerError(f"{what}: {failure.message}", transient=failure.transient)
        if proc.returncode != 0 and not (
            accept is not None and accept(proc.returncode, proc.stdout, proc.stderr)
        ):
            message = proc.stderr.strip() or proc.stdout.strip() or f"exit {proc.returncode}"
            raise SchedulerError(f"{what}: {message[:500]}", transient=is_transient(message))
        return proc

    def _retrying(self) -> tenacity.Retrying:
        return tenacity.Retrying(
            retry=tenacity.retry_if_exception(
                lambda e: isinstance(e, SchedulerError) and e.transient
            ),
            stop=tenacity.stop_after_attempt(self.retries),
            wait=tenacity.wait_exponential_jitter(multiplier=self.retry_wait, max=30, jitter=0.5),
            before_sleep=lambda state: log.warning(
                "%s command failed (%s); retrying",
                self.name,
                state.outcome.exception() if state.outcome else "?",
            ),
            reraise=True,
        )

    def submit(self, spec: JobSpec) -> str:
        staged = self.staged
        # Staged: the script names the paths of the job's copy on the login node.
        run_spec = login_staging.remote_spec(staged, spec) if staged else spec
        script_path = os.path.join(spec.control_dir, BATCH_SCRIPT_FILE)
        script = render_script(
            run_spec, self.directives(run_spec), id_variables=self.job_id_variables
        )
        with open(script_path, "w", encoding="utf-8") as handle:
            handle.write(script)
        os.chmod(script_path, 0o700)
        if staged:
            self._call(lambda: login_staging.stage_in(staged, spec, self.command_timeout))
            script_path = os.path.join(run_spec.control_dir, BATCH_SCRIPT_FILE)
        name = job_name(spec.job_id)
        attempted = False
        with _submit_lock(spec.control_dir) as lock_fd:
            for attempt in self._retrying():
                with attempt:
                    if attempted:  # the last try may have reached the scheduler: look first
                        found = self.find_by_name(name)
                        if found:
                            log.warning(
                                "%s: submit had reached %s as %s", spec.job_id, self.name, found
                            )
                            return found
                    attempted = True
                    argv = self.submit_argv(script_path, run_spec)
                    return self.parse_submit(self.run(argv, "submit", pass_fds=(lock_fd,)))
        raise AssertionError("unreachable")  # tenacity reraises the last error

    def recover(self, spec: JobSpec) -> str | None:
        """Found by the id its script recorded (it ran or runs) or by its name (still queued, or
        ended recently); a scheduler that does not answer raises, as the contract asks."""
        with _submit_lock(spec.control_dir, wait=self.command_timeout, job_id=spec.job_id):
            self._fetch(spec.job_id, spec.workdir, remove=False)  # the records the job wrote
            recorded = read_self_id(spec.control_dir)
            if recorded is not None:
                return self.check_native_id(recorded)
            found = self._call(lambda: self.find_by_name(job_name(spec.job_id)))
            if found is not None:
                return found
            if read_exit_code(spec.control_dir) is not None:
                raise SchedulerError(
                    f"{spec.job_id}: the job already ran under {self.name} but left no job id; "
                    "it is not started again"
                )
        return None

    def status(self, handles: Sequence[JobHandle]) -> dict[str, JobOutcome]:
        if not handles:
            return {}
        ids = [h.native_id for h in handles]
        try:
            native = self._call(lambda: self.query_status(ids))
            missing = [i for i in ids if i not in native]
            if missing:
                native.update(self._call(lambda: self.finished_status(missing)))
            for h in handles:  # staged: an ended job's results come back before it is merged
                found = native.get(h.native_id)
                if found is None or found.state.is_final:
                    self._fetch(h.job_id, os.path.dirname(h.control_dir), remove=True)
        except SchedulerError as exc:
            if exc.transient:
                log.warning("%s unavailable (%s); jobs keep their last known state", self.name, exc)
                return {i: self._last_known.get(i, JobOutcome(JobState.QUEUED)) for i in ids}
            raise
        result = {h.native_id: self._merge(h, native.get(h.native_id)) for h in handles}
        self._last_known.update(result)
        return result

    def _fetch(self, job_id: str, workdir: str, remove: bool) -> None:
        staged = self.staged
        if staged is not None:
            self._call(
                lambda: login_staging.stage_out(
                    staged, job_id, workdir, self.command_timeout, remove
                )
            )

    def _call(self, fn: Callable[[], T]) -> T:
        for attempt in self._retrying():
            with attempt:
                return fn()
        raise AssertionError("unreachable")

    def _merge(self, handle: JobHandle, native: NativeStatus | None) -> JobOutcome:
        recorded = read_exit_code(handle.control_dir)
        if native is None:
            if recorded is not None:
                return outcome_from_exit_code(recorded)
            return JobOutcome(
                JobState.LOST,
                reason=f"{self.name} no longer knows job {handle.native_id}; no exit code left",
            )
        if native.state in (JobState.COMPLETED, JobState.FAILED) and recorded is not None:
            return outcome_from_exit_code(recorded)
        return JobOutcome(native.state, native.exit_code, native.signal, native.reason)

    def cancel(self, handle: JobHandle) -> None:
        # Recorded before the cancel command, so a job the scheduler then forgets without a
        # trace (PBS without job history) is still known to have been cancelled.
        with contextlib.suppress(FileNotFoundError):  # a control dir already removed
            path = os.path.join(handle.control_dir, BATCH_CANCEL_FILE)
            with open(path, "w", encoding="utf-8") as marker:
                marker.write(f"{time.time():.3f}\n")
        try:
            self._call(lambda: self.run(self.cancel_argv(handle.native_id), "cancel"))
        except SchedulerError as exc:
            if not self.is_already_finished(exc.message):
                raise

    def end_record(self, control_dir: str) -> str | None:
        # The exit code the job script records as its last act; a job the scheduler killed
        # (walltime, cancel) leaves none, and the site records the outcome it saw instead.
        path = os.path.join(control_dir, EXIT_CODE_FILE)
        return path if os.path.exists(path) else None


@contextlib.contextmanager
def _submit_lock(control_dir: str, wait: float | None = None, job_id: str = "") -> Iterator[int]:
    """Hold ``submit.lock`` (see the module docstring); yields its fd for the submit command.

    ``wait``: give up after that many seconds with a transient error (the submit command of a
    killed process may hang with nobody left to time it out); None: wait as long as it takes."""
    fd = os.open(
        os.path.join(control_dir, SUBMIT_LOCK_FILE), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600
    )
    try:
        if wait is None:
            fcntl.flock(fd, fcntl.LOCK_EX)
        else:
            deadline = time.monotonic() + wait
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        raise SchedulerError(
                            f"{job_id}: the submit command of an earlier attempt is still "
                            "running; try again later",
                            transient=True,
                        ) from None
                    time.sleep(0.1)
        yield fd
    finally:
        os.close(fd)
