"""Supervisor of one local job: ``python -m schedulers.local_runner CONTROL_DIR``.

Started by ``LocalScheduler.submit`` in a session of its own. It records its pid in
``runner.pid``, runs the solver in a new process group with stdout/stderr to the files the
spec names, enforces the walltime, and on SIGTERM (a cancel) stops the whole process tree:
SIGTERM, a grace period, then SIGKILL. It always leaves ``exit.json`` behind, written
atomically, before it exits.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from types import FrameType

from bridge.core import defaults, outbound
from bridge.core.job import JobOutcome, JobState
from bridge.core.workdir_files import LOCAL_CANCEL_FILE, LOCAL_SPEC_FILE
from schedulers.local_files import record_runner_pid, write_exit_file


class _Stop(Exception):
    """Raised in the main thread by the SIGTERM handler: the job was cancelled."""


class _Cancel:
    """What the SIGTERM handler knows: whether a cancel came, and whether it may interrupt.

    The handler raises ``_Stop`` only while ``armed`` (inside ``_supervise``'s try), so a cancel
    can never unwind the code that starts the program half-way and leave it running unwatched;
    before that it only sets ``requested``, which is checked once the program is supervised.
    """

    requested = False
    armed = False


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    _Cancel.requested = True
    if _Cancel.armed:
        _Cancel.armed = False
        raise _Stop


def kill_tree(root_pid: int, grace: float) -> None:
    """SIGTERM the process group and every descendant of ``root_pid``, SIGKILL survivors."""
    import psutil  # only when something must be stopped: start-up time is job latency

    try:
        root = psutil.Process(root_pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        procs = []
    with contextlib.suppress(OSError):
        os.killpg(root_pid, signal.SIGTERM)
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            proc.terminate()
    _, alive = psutil.wait_procs(procs, timeout=grace)
    for proc in alive:
        with contextlib.suppress(psutil.Error):
            proc.kill()
    with contextlib.suppress(OSError):
        os.killpg(root_pid, signal.SIGKILL)


def _cancelled_before_start(control_dir: str) -> bool:
    return _Cancel.requested or os.path.exists(os.path.join(control_dir, LOCAL_CANCEL_FILE))


def run(control_dir: str) -> JobOutcome:
    with open(os.path.join(control_dir, LOCAL_SPEC_FILE), encoding="utf-8") as handle:
        spec = json.load(handle)
    if _cancelled_before_start(control_dir):
        return JobOutcome(JobState.CANCELLED, reason="cancelled before the program started")
    stdout = open(spec["stdout"], "ab")  # noqa: SIM115 - handed to the child, closed below
    stderr = stdout if spec["stderr"] == spec["stdout"] else open(spec["stderr"], "ab")  # noqa: SIM115
    try:
        proc = subprocess.Popen(
            spec["argv"],
            cwd=spec["workdir"],
            env=spec["env"],
            stdin=subprocess.DEVNULL,
            stdout=stdout,
            stderr=stderr,
            start_new_session=True,
            close_fds=True,
        )
    except OSError as exc:
        return JobOutcome(
            JobState.FAILED, exit_code=127, reason=f"cannot start program: {outbound.os_error(exc)}"
        )
    finally:
        stdout.close()
        stderr.close()
    return _supervise(proc, spec.get("walltime"))


def _supervise(proc: subprocess.Popen[bytes], walltime: float | None) -> JobOutcome:
    deadline = time.monotonic() + walltime if walltime else None
    try:
        _Cancel.armed = True
        if _Cancel.requested:  # a cancel that came while the program was being started
            raise _Stop
        while True:
            timeout = None if deadline is None else max(deadline - time.monotonic(), 0)
            try:
                code = proc.wait(timeout=timeout)
                break
            except subprocess.TimeoutExpired:
                kill_tree(proc.pid, defaults.KILL_GRACE_SECONDS)
                proc.wait()
                return JobOutcome(
                    JobState.TIMEOUT, reason=f"walltime of {walltime:g} s exceeded; job killed"
                )
    except _Stop:
        _Cancel.armed = False
        kill_tree(proc.pid, defaults.CANCEL_GRACE_SECONDS)
        proc.wait()
        return JobOutcome(JobState.CANCELLED, reason="cancelled on request")
    finally:
        _Cancel.armed = False
    # Leftover background processes of the solver's group do not outlive the job.
    if _group_alive(proc.pid):
        kill_tree(proc.pid, 1.0)
    if code < 0:
        return JobOutcome(JobState.FAILED, signal=-code, reason=f"solver killed by signal {-code}")
    state = JobState.COMPLETED if code == 0 else JobState.FAILED
    return JobOutcome(state, exit_code=code, reason=f"solver exited with code {code}")


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except OSError:
        return False


def main(argv: list[str]) -> int:
    control_dir = argv[1]
    signal.signal(signal.SIGTERM, _on_sigterm)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    # Before anything else: a submitter killed before it recorded our pid must still find us.
    with contextlib.suppress(OSError):
        record_runner_pid(control_dir, os.getpid())
    try:
        outcome = run(control_dir)
    except Exception as exc:  # the exit record must exist whatever went wrong
        reason = f"local runner error: {outbound.scrub(str(exc))}"
        outcome = JobOutcome(JobState.FAILED, exit_code=None, reason=reason)
    write_exit_file(control_dir, outcome)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
