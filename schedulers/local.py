"""The ``local`` scheduler: the job runs on the site machine itself, detached from the caller.

``submit`` starts ``schedulers.local_runner`` in a new session. That small supervisor starts
the solver in its own process group, enforces the walltime, kills the whole process tree on
cancel (SIGTERM, a grace period, then SIGKILL, found through psutil), and records the solver's
exit code and signal in ``exit.json`` in the control dir. Because the supervisor is in its own
session, a dropped SSH connection or a restarted agent does not touch the job.

The native id is ``<supervisor pid>:<its start time>``; the start time guards against a reused
pid being mistaken for our supervisor.

State table (local supervisor -> our state):
    exit.json present, exit code 0            -> completed
    exit.json present, non-zero or signal     -> failed
    exit.json says cancelled                  -> cancelled
    exit.json says walltime exceeded          -> timeout
    supervisor alive, no exit.json            -> running
    supervisor gone, no exit.json, cancelled  -> cancelled (SIGTERM reached the supervisor
                                                 before it could handle it: nothing had started)
    supervisor gone, no exit.json             -> lost (it was killed with SIGKILL, or the
                                                 machine rebooted: nothing says how the job ended)

The supervisor is recognised by its start time or, should the clock have been stepped since
(the start time psutil reports moves with it), by its command line naming the job's control dir.

Recovery (a submitter killed before it recorded the native id): the supervisor is found through
``runner.pid``, which it writes as its first act and its starter writes too, or, in the moment
before either wrote it, by the command line of a spawned supervisor. One that has already
ended is found all the same; ``exit.json`` says how it ended (or nothing does: lost).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from typing import NoReturn

import psutil

from bridge.core.atomic_write import write_json_atomic
from bridge.core.errors import SiteError
from bridge.core.job import JobOutcome, JobState
from bridge.core.workdir_files import (
    LOCAL_CANCEL_FILE,
    LOCAL_EXIT_FILE,
    LOCAL_SPEC_FILE,
    RUNNER_LOG_FILE,
    RUNNER_PID_FILE,
)
from schedulers.base import JobHandle, JobSpec, Scheduler
from schedulers.local_files import read_exit_file, read_runner_pid, record_runner_pid

RUNNER_MODULE = "schedulers.local_runner"
# The native id of a supervisor recovery found already ended: it names no process, so none is
# ever mistaken for it; its exit.json (or the lack of one) gives the outcome.
ENDED_RUNNER_ID = "0:0"
# How long recovery waits for a supervisor that was started but has not recorded its pid yet.
_RECORD_GRACE = 0.5


class LocalScheduler(Scheduler):
    name = "local"
    # Reading a file and a /proc entry costs microseconds; poll often so short jobs end fast.
    poll_interval = 0.02

    def submit(self, spec: JobSpec) -> str:
        write_json_atomic(os.path.join(spec.control_dir, LOCAL_SPEC_FILE), _spec_to_json(spec))
        log_path = os.path.join(spec.control_dir, RUNNER_LOG_FILE)
        pid = _fast_start(spec.control_dir, log_path)
        if pid is not None:
            return f"{pid}:{psutil.Process(pid).create_time():.6f}"
        with open(log_path, "ab") as log:
            try:
                proc = subprocess.Popen(
                    [sys.executable, "-m", RUNNER_MODULE, spec.control_dir],
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=log,
                    start_new_session=True,
                    close_fds=True,
                    env=_runner_env(),
                )
            except OSError as exc:
                raise SiteError(f"{spec.job_id} could not start the local runner: {exc}") from exc
        record_runner_pid(spec.control_dir, proc.pid)
        created = psutil.Process(proc.pid).create_time()
        return f"{proc.pid}:{created:.6f}"

    def recover(self, spec: JobSpec) -> str | None:
        control = spec.control_dir
        if not os.path.exists(os.path.join(control, LOCAL_SPEC_FILE)):
            return None  # submit stopped before it could start anything
        pid = _recorded_or_spawned_runner(control)
        if pid is None:
            time.sleep(_RECORD_GRACE)  # a supervisor forked a moment ago records itself now
            pid = _recorded_or_spawned_runner(control)
        if pid is None:
            return None
        try:
            proc = psutil.Process(pid)
            if proc.status() != psutil.STATUS_ZOMBIE and _started_before_record(proc, control):
                return f"{pid}:{proc.create_time():.6f}"
        except psutil.Error:
            pass
        return ENDED_RUNNER_ID

    def status(self, handles: Sequence[JobHandle]) -> dict[str, JobOutcome]:
        return {handle.native_id: self._status_one(handle) for handle in handles}

    def _status_one(self, handle: JobHandle) -> JobOutcome:
        recorded = read_exit_file(handle.control_dir)
        if recorded is not None:
            return recorded
        if _runner_process(handle) is not None:
            return JobOutcome(JobState.RUNNING)
        # The runner writes exit.json before it exits, so look once more before calling it lost.
        recorded = read_exit_file(handle.control_dir)
        if recorded is not None:
            return recorded
        if os.path.exists(os.path.join(handle.control_dir, LOCAL_CANCEL_FILE)):
            return JobOutcome(
                JobState.CANCELLED,
                reason="cancelled; the local runner ended before it recorded an exit code",
            )
        return JobOutcome(
            JobState.LOST, reason="the local runner ended without recording an exit code"
        )

    def cancel(self, handle: JobHandle) -> None:
        runner = _runner_process(handle)
        if runner is None:
            return  # already finished (or lost): nothing to stop
        marker = os.path.join(handle.control_dir, LOCAL_CANCEL_FILE)
        with contextlib.suppress(OSError), open(marker, "w", encoding="utf-8"):
            pass
        try:
            runner.send_signal(signal.SIGTERM)
        except psutil.Error:
            return

    def end_record(self, control_dir: str) -> str | None:
        path = os.path.join(control_dir, LOCAL_EXIT_FILE)
        return path if os.path.exists(path) else None


def _fast_start(control_dir: str, log_path: str) -> int | None:
    """Start the supervisor without a new interpreter (which costs a tenth of a second on every
    job) when that is safe: by a fork in a one-thread process (the SSH site entry), or through
    the fork server a multi-threaded caller (the agent) started before its threads. A fork in a
    process with other threads could inherit a lock one of them holds. None: spawn instead."""
    global _fork_server
    if threading.active_count() == 1:
        return _fork_runner(control_dir, log_path)
    if _fork_server is not None:
        try:
            return _fork_server.start_runner(control_dir, log_path)
        except (OSError, ValueError):
            _fork_server = None  # it died: spawn from now on
    return None


class ForkServer:
    """A one-thread helper process that forks local supervisors for a multi-threaded caller.

    Start it before any other thread exists. It ends when the caller closes its pipe (the caller
    exited); supervisors it started run on in their own sessions.
    """

    def __init__(self) -> None:
        requests_r, self._requests = os.pipe()
        self._replies, replies_w = os.pipe()
        self.pid = os.fork()
        if self.pid == 0:
            os.close(self._requests)
            os.close(self._replies)
            _serve_forks(requests_r, replies_w)
        os.close(requests_r)
        os.close(replies_w)
        self._lock = threading.Lock()

    def start_runner(self, control_dir: str, log_path: str) -> int:
        with self._lock:
            os.write(self._requests, (json.dumps([control_dir, log_path]) + "\n").encode())
            reply = b""
            while not reply.endswith(b"\n"):
                chunk = os.read(self._replies, 64)
                if not chunk:
                    raise OSError("the fork server exited")
                reply += chunk
        pid = int(reply)
        if pid <= 0:
            raise OSError("the fork server could not start the runner")
        return pid

    def close(self) -> None:
        os.close(self._requests)
        os.close(self._replies)


def _serve_forks(requests_fd: int, replies_fd: int) -> NoReturn:
    code = 0
    try:
        signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # the kernel reaps ended supervisors
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a ^C is the caller's to handle
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        pending = b""
        while chunk := os.read(requests_fd, 65536):
            pending += chunk
            while b"\n" in pending:
                line, pending = pending.split(b"\n", 1)
                control_dir, log_path = json.loads(line)
                try:
                    pid = _fork_runner(control_dir, log_path)
                except Exception:  # report, keep serving
                    pid = -1
                os.write(replies_fd, f"{pid}\n".encode())
    except BaseException:
        code = 1
    finally:
        os._exit(code)


_fork_server: ForkServer | None = None


def start_fork_server() -> None:
    """For a caller about to start threads (the agent): later submits fork through it."""
    global _fork_server
    if _fork_server is None and threading.active_count() == 1:
        _fork_server = ForkServer()


def _fork_runner(control_dir: str, log_path: str) -> int:
    """Start the supervisor as a forked child in a new session; returns its pid."""
    log_fd = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
    # The child closes its end once it leads its own session; until then a hangup or a kill of
    # the caller's process group would still reach it, so the caller waits for that moment.
    ready_r, ready_w = os.pipe2(os.O_CLOEXEC)
    try:
        pid = os.fork()
    except OSError as exc:
        for fd in (log_fd, ready_r, ready_w):
            os.close(fd)
        raise SiteError(f"could not start the local runner: {exc}") from exc
    if pid == 0:  # the child: never returns into the caller's code
        code = 1
        try:
            os.setsid()
            os.close(ready_r)
            os.close(ready_w)
            _detach_stdio(log_fd)
            from schedulers.local_runner import main as runner_main

            code = runner_main(["local_runner", control_dir])
        finally:
            os._exit(code)
    os.close(log_fd)
    os.close(ready_w)
    try:
        os.read(ready_r, 1)  # EOF once the child has its own session (or has died)
    finally:
        os.close(ready_r)
    record_runner_pid(control_dir, pid)  # before returning: status() may ask at once
    return pid


def _detach_stdio(log_fd: int) -> None:
    """stdin from /dev/null, stdout/stderr to the runner log, every other fd closed (the work
    dir's lock and the SSH channel must not stay open in a process that outlives the request)."""
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.dup2(log_fd, 1)
    os.dup2(log_fd, 2)
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        if fd > 2:
            with contextlib.suppress(OSError):
                os.close(fd)
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)  # the fork server ignores it; the solver's
    # supervisor must be able to wait for its child


def _runner_process(handle: JobHandle) -> psutil.Process | None:
    try:
        pid_text, created_text = handle.native_id.split(":", 1)
        created = float(created_text)
        pid = int(pid_text)
        if pid <= 0:
            return None
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return None
        if abs(proc.create_time() - created) <= 0.01 or _is_runner_of(proc, handle.control_dir):
            return proc
        return None  # the pid was reused by another process
    except (ValueError, psutil.Error):
        return None


def _is_runner_of(proc: psutil.Process, control_dir: str) -> bool:
    """Our supervisor for this job: the clock may have been stepped since it started.

    A spawned runner names the control dir on its command line; a forked one (which keeps its
    parent's command line) recorded its pid there when it started.
    """
    return _spawned_for(proc, control_dir) or read_runner_pid(control_dir) == proc.pid


def _spawned_for(proc: psutil.Process, control_dir: str) -> bool:
    try:
        return proc.cmdline()[-3:] == ["-m", RUNNER_MODULE, control_dir]
    except psutil.Error:
        return False


def _recorded_or_spawned_runner(control_dir: str) -> int | None:
    recorded = read_runner_pid(control_dir)
    if recorded is not None:
        return recorded
    wanted = ["-m", RUNNER_MODULE, control_dir]
    for proc in psutil.process_iter(["cmdline"]):
        if (proc.info["cmdline"] or [])[-3:] == wanted:
            return int(proc.pid)
    return None


def _started_before_record(proc: psutil.Process, control_dir: str) -> bool:
    """The supervisor itself, not a process that reused its pid after it ended: that one
    started after runner.pid was written (by the supervisor, or once it was running)."""
    if _spawned_for(proc, control_dir):
        return True
    try:
        written = os.stat(os.path.join(control_dir, RUNNER_PID_FILE)).st_mtime
        return proc.create_time() <= written + 1.0
    except (OSError, psutil.Error):
        return False


def _spec_to_json(spec: JobSpec) -> dict[str, object]:
    return {
        "job_id": spec.job_id,
        "workdir": spec.workdir,
        "argv": spec.argv,
        "env": spec.env,
        "stdout": spec.stdout_path,
        "stderr": spec.stderr_path,
        "walltime": spec.walltime,
    }


def _runner_env() -> dict[str, str]:
    # The runner imports our package; keep the path that found it, nothing else of ours.
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    if "PYTHONPATH" in os.environ:
        env["PYTHONPATH"] = os.environ["PYTHONPATH"]
    return env


__all__ = ["ENDED_RUNNER_ID", "ForkServer", "LocalScheduler", "start_fork_server"]
