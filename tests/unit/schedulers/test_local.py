"""The local scheduler with real processes: outcomes, walltime, cancel, lost runners."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from bridge.core.errors import ExitCode
from bridge.core.job import JobOutcome, JobState
from bridge.core.workdir_files import LOCAL_CANCEL_FILE, LOCAL_EXIT_FILE, LOCAL_SPEC_FILE
from schedulers.base import JobHandle, JobSpec
from schedulers.local import LocalScheduler
from schedulers.local_files import read_exit_file

pytestmark = pytest.mark.timeout(90)

WAIT = 45.0  # only a bound against hangs; no test asserts how long anything took


def python(code: str) -> list[str]:
    return [sys.executable, "-c", textwrap.dedent(code)]


def make_spec(tmp_path: Path, argv: list[str], walltime: float | None = None,
              env: dict[str, str] | None = None, merged: bool = False) -> JobSpec:  # fmt: skip
    job_id = str(uuid.uuid4())
    workdir = tmp_path / job_id
    control = workdir / ".mint-bridge"
    control.mkdir(parents=True)
    stdout = str(control / "stdout")
    return JobSpec(
        job_id=job_id,
        workdir=str(workdir),
        control_dir=str(control),
        argv=argv,
        env=env if env is not None else {"PATH": os.environ.get("PATH", "/usr/bin:/bin")},
        stdout_path=stdout,
        stderr_path=stdout if merged else str(control / "stderr"),
        walltime=walltime,
    )


def handle_for(spec: JobSpec, native_id: str) -> JobHandle:
    return JobHandle(spec.job_id, native_id, spec.control_dir)


def wait_final(scheduler: LocalScheduler, handle: JobHandle, timeout: float = WAIT) -> JobOutcome:
    deadline = time.monotonic() + timeout
    while True:
        outcome = scheduler.status([handle])[handle.native_id]
        if outcome.state.is_final:
            return outcome
        if time.monotonic() > deadline:
            pytest.fail(f"job still {outcome.state.value} after {timeout} s")
        time.sleep(0.05)


def wait_for_file(path: Path, timeout: float = WAIT) -> str:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if time.monotonic() > deadline:
            pytest.fail(f"{path} did not appear")
        time.sleep(0.02)
    return path.read_text()


def gone(pid: int) -> bool:
    """Dead: no such process, or a zombie waiting for a parent that may never reap it."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def wait_gone(pid: int, timeout: float = WAIT) -> bool:
    deadline = time.monotonic() + timeout
    while not gone(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def runner_pid(native_id: str) -> int:
    return int(native_id.split(":")[0])


@pytest.fixture
def scheduler() -> LocalScheduler:
    return LocalScheduler()


@pytest.fixture
def reaper() -> Iterator[list[int]]:
    """Process groups a test leaves behind on failure are killed afterwards."""
    groups: list[int] = []
    yield groups
    for pgid in groups:
        with contextlib.suppress(OSError):
            os.killpg(pgid, signal.SIGKILL)


def exit_record(spec: JobSpec) -> dict[str, object]:
    with open(os.path.join(spec.control_dir, LOCAL_EXIT_FILE), encoding="utf-8") as handle:
        data: dict[str, object] = json.load(handle)
    return data


# A solver that starts a grandchild ignoring SIGTERM, records both pids, then waits forever
# (itself ignoring SIGTERM too, so only SIGKILL ends the tree).
TREE = """
import os, signal, subprocess, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
child = subprocess.Popen([sys.executable, "-c", (
    "import os, signal, time\\n"
    "signal.signal(signal.SIGTERM, signal.SIG_IGN)\\n"
    "open('gc.tmp', 'w').write(str(os.getpid()))\\n"
    "os.rename('gc.tmp', 'gc.pid')\\n"
    "time.sleep(600)\\n"
)])
open('solver.tmp', 'w').write(str(os.getpid()))
os.rename('solver.tmp', 'solver.pid')
time.sleep(600)
"""


# --- outcomes ------------------------------------------------------------------------------


def test_exit_zero_is_completed(tmp_path: Path, scheduler: LocalScheduler) -> None:
    spec = make_spec(
        tmp_path,
        python("""
            import sys
            print("hello out")
            print("hello err", file=sys.stderr)
            open("result.txt", "w").write("42")
        """),
    )
    native_id = scheduler.submit(spec)
    pid_text, created = native_id.split(":")
    assert int(pid_text) > 0 and float(created) > 0
    outcome = wait_final(scheduler, handle_for(spec, native_id))
    assert outcome == JobOutcome(JobState.COMPLETED, 0, None, "solver exited with code 0")
    assert outcome.bridge_exit_code() == 0
    assert exit_record(spec) == {
        "state": "completed",
        "exit_code": 0,
        "signal": None,
        "reason": "solver exited with code 0",
    }
    assert read_exit_file(spec.control_dir) == outcome
    assert Path(spec.workdir, "result.txt").read_text() == "42"  # ran in the work dir
    assert Path(spec.stdout_path).read_text() == "hello out\n"
    assert Path(spec.stderr_path).read_text() == "hello err\n"
    spec_file = json.loads(Path(spec.control_dir, LOCAL_SPEC_FILE).read_text())
    assert spec_file["argv"] == spec.argv
    assert spec_file["walltime"] is None


def test_nonzero_exit_is_failed_with_the_code(tmp_path: Path, scheduler: LocalScheduler) -> None:
    spec = make_spec(tmp_path, python("import sys; sys.exit(5)"))
    outcome = wait_final(scheduler, handle_for(spec, scheduler.submit(spec)))
    assert outcome == JobOutcome(JobState.FAILED, 5, None, "solver exited with code 5")
    assert outcome.bridge_exit_code() == 5
    assert exit_record(spec)["exit_code"] == 5


def test_killed_by_signal_is_failed_with_the_signal(
    tmp_path: Path, scheduler: LocalScheduler
) -> None:
    spec = make_spec(tmp_path, python("import os, signal; os.kill(os.getpid(), signal.SIGKILL)"))
    outcome = wait_final(scheduler, handle_for(spec, scheduler.submit(spec)))
    assert outcome == JobOutcome(JobState.FAILED, None, 9, "solver killed by signal 9")
    assert outcome.bridge_exit_code() == 128 + 9
    assert exit_record(spec)["signal"] == 9


def test_merged_log_and_exact_environment(
    tmp_path: Path, scheduler: LocalScheduler, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MINT_TEST_SECRET", "must-not-leak")
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "MINT_PARAM_N": "3"}
    spec = make_spec(
        tmp_path,
        python("""
            import json, os, sys
            print("one", flush=True)
            print("two", file=sys.stderr, flush=True)
            print("three", flush=True)
            json.dump(dict(os.environ), open("env.json", "w"))
        """),
        env=env,
        merged=True,
    )
    outcome = wait_final(scheduler, handle_for(spec, scheduler.submit(spec)))
    assert outcome.state is JobState.COMPLETED
    assert Path(spec.stdout_path).read_text() == "one\ntwo\nthree\n"
    assert not Path(spec.control_dir, "stderr").exists()
    seen = json.loads(Path(spec.workdir, "env.json").read_text())
    assert seen["MINT_PARAM_N"] == "3"
    assert seen["PATH"] == env["PATH"]
    assert "MINT_TEST_SECRET" not in seen
    assert set(seen) - {"PATH", "MINT_PARAM_N", "LC_CTYPE"} == set()


def test_program_that_cannot_start_fails_with_127(
    tmp_path: Path, scheduler: LocalScheduler
) -> None:
    spec = make_spec(tmp_path, [str(tmp_path / "no-such-program")])
    outcome = wait_final(scheduler, handle_for(spec, scheduler.submit(spec)))
    assert outcome.state is JobState.FAILED
    assert outcome.exit_code == 127
    assert outcome.reason.startswith("cannot start program: ")
    assert outcome.bridge_exit_code() == 127


def test_status_of_many_jobs_in_one_call(tmp_path: Path, scheduler: LocalScheduler) -> None:
    specs = [make_spec(tmp_path, python(f"import sys; sys.exit({code})")) for code in (0, 3)]
    handles = [handle_for(spec, scheduler.submit(spec)) for spec in specs]
    for handle in handles:
        wait_final(scheduler, handle)
    outcomes = scheduler.status(handles)
    assert set(outcomes) == {h.native_id for h in handles}
    assert [outcomes[h.native_id].exit_code for h in handles] == [0, 3]


def test_running_job_reports_running(
    tmp_path: Path, scheduler: LocalScheduler, reaper: list[int]
) -> None:
    release = tmp_path / "release"
    spec = make_spec(
        tmp_path,
        python(f"""
            import os, time
            open("started", "w").close()
            while not os.path.exists({str(release)!r}):
                time.sleep(0.02)
        """),
    )
    handle = handle_for(spec, scheduler.submit(spec))
    wait_for_file(Path(spec.workdir, "started"))
    assert scheduler.status([handle])[handle.native_id] == JobOutcome(JobState.RUNNING)
    assert read_exit_file(spec.control_dir) is None
    release.touch()
    assert wait_final(scheduler, handle).state is JobState.COMPLETED


def test_leftover_background_processes_do_not_outlive_the_job(
    tmp_path: Path, scheduler: LocalScheduler, reaper: list[int]
) -> None:
    spec = make_spec(
        tmp_path,
        python("""
            import os, subprocess, sys, time
            subprocess.Popen([sys.executable, "-c", (
                "import os, signal, time\\n"
                "signal.signal(signal.SIGTERM, signal.SIG_IGN)\\n"
                "open('bg.tmp', 'w').write(str(os.getpid()))\\n"
                "os.rename('bg.tmp', 'bg.pid')\\n"
                "time.sleep(600)\\n"
            )])
            while not os.path.exists("bg.pid"):
                time.sleep(0.01)
        """),
    )
    outcome = wait_final(scheduler, handle_for(spec, scheduler.submit(spec)))
    background = int(Path(spec.workdir, "bg.pid").read_text())
    reaper.append(background)
    assert outcome.state is JobState.COMPLETED
    assert wait_gone(background), "a background process of the job is still running"


# --- walltime and cancel -------------------------------------------------------------------


def test_walltime_exceeded_is_timeout_and_kills_the_whole_tree(
    tmp_path: Path, scheduler: LocalScheduler, reaper: list[int]
) -> None:
    spec = make_spec(tmp_path, python(TREE), walltime=2.0)
    handle = handle_for(spec, scheduler.submit(spec))
    grandchild = int(wait_for_file(Path(spec.workdir, "gc.pid")))
    solver = int(wait_for_file(Path(spec.workdir, "solver.pid")))
    reaper.extend([solver, grandchild])
    assert not gone(grandchild)

    outcome = wait_final(scheduler, handle)

    assert outcome == JobOutcome(
        JobState.TIMEOUT, None, None, "walltime of 2 s exceeded; job killed"
    )
    assert outcome.bridge_exit_code() == ExitCode.WALLTIME_EXCEEDED
    assert exit_record(spec)["state"] == "timeout"
    assert wait_gone(solver, 5), "the solver survived its walltime"
    assert wait_gone(grandchild, 5), "a grandchild ignoring SIGTERM survived the walltime"


def test_cancel_is_cancelled_and_kills_the_whole_tree(
    tmp_path: Path, scheduler: LocalScheduler, reaper: list[int]
) -> None:
    spec = make_spec(tmp_path, python(TREE))
    handle = handle_for(spec, scheduler.submit(spec))
    grandchild = int(wait_for_file(Path(spec.workdir, "gc.pid")))
    solver = int(wait_for_file(Path(spec.workdir, "solver.pid")))
    reaper.extend([solver, grandchild])

    scheduler.cancel(handle)
    outcome = wait_final(scheduler, handle)

    assert outcome == JobOutcome(JobState.CANCELLED, None, None, "cancelled on request")
    assert outcome.bridge_exit_code() == ExitCode.CANCELLED_AT_SITE
    assert wait_gone(solver, 5), "the solver survived the cancel"
    assert wait_gone(grandchild, 5), "a grandchild ignoring SIGTERM survived the cancel"
    assert wait_gone(runner_pid(handle.native_id), 5)


def test_cancel_right_after_submit_is_cancelled_not_lost(
    tmp_path: Path, scheduler: LocalScheduler, reaper: list[int]
) -> None:
    spec = make_spec(tmp_path, python("import time; open('ran', 'w').close(); time.sleep(600)"))
    handle = handle_for(spec, scheduler.submit(spec))
    scheduler.cancel(handle)  # the runner may not even have its signal handler yet
    outcome = wait_final(scheduler, handle)
    assert outcome.state is JobState.CANCELLED
    assert outcome.bridge_exit_code() == ExitCode.CANCELLED_AT_SITE
    assert wait_gone(runner_pid(handle.native_id), 10)


def test_a_cancel_recorded_before_the_runner_starts_prevents_the_program(
    tmp_path: Path, scheduler: LocalScheduler
) -> None:
    spec = make_spec(tmp_path, python("open('ran', 'w').close()"))
    Path(spec.control_dir, LOCAL_CANCEL_FILE).touch()
    outcome = wait_final(scheduler, handle_for(spec, scheduler.submit(spec)))
    assert outcome == JobOutcome(
        JobState.CANCELLED, None, None, "cancelled before the program started"
    )
    assert not Path(spec.workdir, "ran").exists()


def test_cancel_of_a_finished_job_is_not_an_error(
    tmp_path: Path, scheduler: LocalScheduler
) -> None:
    spec = make_spec(tmp_path, python("pass"))
    handle = handle_for(spec, scheduler.submit(spec))
    before = wait_final(scheduler, handle)
    assert wait_gone(runner_pid(handle.native_id))
    scheduler.cancel(handle)
    scheduler.cancel(handle)
    assert scheduler.status([handle])[handle.native_id] == before
    assert before.state is JobState.COMPLETED


def test_cancel_never_signals_a_process_that_reused_the_pid(tmp_path: Path) -> None:
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    try:
        created = psutil.Process(bystander.pid).create_time()
        stale = JobHandle(str(uuid.uuid4()), f"{bystander.pid}:{created - 1000:.6f}", str(tmp_path))
        scheduler = LocalScheduler()
        scheduler.cancel(stale)
        outcome = scheduler.status([stale])[stale.native_id]
        assert outcome.state is JobState.LOST
        time.sleep(0.2)
        assert bystander.poll() is None, "cancel signalled an unrelated process"
    finally:
        bystander.kill()
        bystander.wait()


def test_a_running_job_is_recognised_after_a_clock_step(
    tmp_path: Path, scheduler: LocalScheduler, reaper: list[int]
) -> None:
    # psutil derives a start time from the wall clock's idea of the boot time: after the clock
    # is stepped, the time in the native id no longer matches, but the runner is still ours.
    release = tmp_path / "release"
    spec = make_spec(
        tmp_path,
        python(f"""
            import os, time
            while not os.path.exists({str(release)!r}):
                time.sleep(0.02)
        """),
    )
    native_id = scheduler.submit(spec)
    pid, created = native_id.split(":")
    stepped = JobHandle(spec.job_id, f"{pid}:{float(created) + 3600:.6f}", spec.control_dir)
    try:
        assert scheduler.status([stepped])[stepped.native_id].state is JobState.RUNNING
        other = JobHandle(spec.job_id, stepped.native_id, str(tmp_path))  # not its control dir
        assert scheduler.status([other])[other.native_id].state is JobState.LOST
    finally:
        release.touch()
    assert wait_final(scheduler, stepped).state is JobState.COMPLETED


# --- lost runners --------------------------------------------------------------------------


def test_runner_killed_before_writing_exit_json_is_lost(
    tmp_path: Path, scheduler: LocalScheduler, reaper: list[int]
) -> None:
    spec = make_spec(tmp_path, python(TREE))
    handle = handle_for(spec, scheduler.submit(spec))
    solver = int(wait_for_file(Path(spec.workdir, "solver.pid")))
    reaper.append(solver)  # the solver's group: solver and grandchild
    assert scheduler.status([handle])[handle.native_id].state is JobState.RUNNING

    os.kill(runner_pid(handle.native_id), signal.SIGKILL)
    outcome = wait_final(scheduler, handle)

    assert outcome == JobOutcome(
        JobState.LOST, reason="the local runner ended without recording an exit code"
    )
    assert outcome.bridge_exit_code() == ExitCode.JOB_LOST
    assert not Path(spec.control_dir, LOCAL_EXIT_FILE).exists()


@pytest.mark.parametrize("native_id", ["garbage", "", "123", "x:y", f"{2**22 + 12345}:1.0", "-1:0"])
def test_unknown_native_ids_are_lost(tmp_path: Path, native_id: str) -> None:
    handle = JobHandle(str(uuid.uuid4()), native_id, str(tmp_path))
    scheduler = LocalScheduler()
    assert scheduler.status([handle])[native_id].state is JobState.LOST
    scheduler.cancel(handle)  # nothing to stop: not an error


@pytest.mark.parametrize(
    "content",
    [
        "{not json",
        '{"state": "exploded"}',
        '["completed"]',
        '{"state": "failed", "exit_code": "x"}',
    ],
)
def test_unreadable_exit_record_is_lost(tmp_path: Path, content: str) -> None:
    (tmp_path / LOCAL_EXIT_FILE).write_text(content)
    outcome = read_exit_file(str(tmp_path))
    assert outcome is not None
    assert outcome.state is JobState.LOST
    assert outcome.reason.startswith("unreadable exit record: ")
    handle = JobHandle(str(uuid.uuid4()), "1:1.0", str(tmp_path))
    assert LocalScheduler().status([handle])["1:1.0"].state is JobState.LOST


# --- detachment ----------------------------------------------------------------------------

SUBMITTER = """
import json, sys, time
from schedulers.base import JobSpec
from schedulers.local import LocalScheduler
spec = JobSpec(**json.loads(sys.argv[1]))
print(LocalScheduler().submit(spec), flush=True)
time.sleep(600)
"""


def test_job_survives_its_submitter(tmp_path: Path, scheduler: LocalScheduler) -> None:
    release = tmp_path / "release"
    spec = make_spec(
        tmp_path,
        python(f"""
            import os, time
            while not os.path.exists({str(release)!r}):
                time.sleep(0.02)
            open("done", "w").write("survived")
        """),
    )
    fields = {k: getattr(spec, k) for k in (
        "job_id", "workdir", "control_dir", "argv", "env", "stdout_path", "stderr_path",
        "walltime")}  # fmt: skip
    submitter = subprocess.Popen(
        [sys.executable, "-c", SUBMITTER, json.dumps(fields)],
        stdout=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        assert submitter.stdout is not None
        native_id = submitter.stdout.readline().decode().strip()
        runner = runner_pid(native_id)
        # The runner leads a session of its own: neither the submitter's group nor a hangup
        # of the submitter's terminal or SSH session reaches it.
        assert os.getsid(runner) == runner
        assert os.getpgid(runner) == runner
        assert os.getsid(runner) != os.getsid(submitter.pid)
        os.killpg(submitter.pid, signal.SIGHUP)
        os.killpg(submitter.pid, signal.SIGKILL)
        submitter.wait()
    except BaseException:
        release.touch()  # a failed check must not leave the job waiting for ever
        raise
    finally:
        if submitter.poll() is None:
            submitter.kill()
            submitter.wait()
    handle = handle_for(spec, native_id)
    assert scheduler.status([handle])[native_id].state is JobState.RUNNING
    release.touch()
    outcome = wait_final(scheduler, handle)
    assert outcome.state is JobState.COMPLETED
    assert Path(spec.workdir, "done").read_text() == "survived"


def test_fork_server_starts_supervisors_for_a_threaded_caller(tmp_path: Path) -> None:
    """The agent's path: a helper forked before any thread starts each job's supervisor."""
    import threading

    import psutil

    from schedulers import local

    server = local.ForkServer()
    release = threading.Event()
    helper = threading.Thread(target=release.wait)  # now the caller has two threads
    helper.start()
    previous, local._fork_server = local._fork_server, server
    try:
        spec = make_spec(tmp_path, python("print('via fork server')"))
        native_id = LocalScheduler().submit(spec)
        pid = int(native_id.split(":")[0])
        outcome = wait_final(LocalScheduler(), JobHandle(spec.job_id, native_id, spec.control_dir))
        assert outcome.state is JobState.COMPLETED and outcome.exit_code == 0
        assert Path(spec.stdout_path).read_text() == "via fork server\n"
        assert pid != os.getpid()
        assert not psutil.pid_exists(pid) or psutil.Process(pid).ppid() == server.pid
    finally:
        local._fork_server = previous
        release.set()
        helper.join()
        server.close()
    psutil.Process(server.pid).wait(timeout=10)  # it ends when its caller closes the pipe


# --- recovering a submit whose id was never recorded ----------------------------------------

COUNTING = """
import os, sys, time
with open("runs.txt", "a") as out:
    out.write(f"{os.getpid()}\\n")
while not os.path.exists(sys.argv[1]):
    time.sleep(0.02)
"""


def counting_spec(tmp_path: Path) -> tuple[JobSpec, Path]:
    release = tmp_path / f"release-{uuid.uuid4()}"
    return make_spec(tmp_path, [*python(COUNTING), str(release)]), release


def test_recover_finds_the_running_supervisor_and_the_job_runs_once(
    tmp_path: Path, scheduler: LocalScheduler
) -> None:
    spec, release = counting_spec(tmp_path)
    native_id = scheduler.submit(spec)  # ... and the submitter died before recording it
    runs = Path(spec.workdir, "runs.txt")
    wait_for_file(runs)
    try:
        recovered = LocalScheduler().recover(spec)
        assert recovered == native_id
        handle = handle_for(spec, native_id)
        assert scheduler.status([handle])[native_id].state is JobState.RUNNING
    finally:
        release.touch()
    assert wait_final(scheduler, handle).state is JobState.COMPLETED
    assert len(runs.read_text().splitlines()) == 1


def test_a_spawned_supervisor_records_its_own_pid(
    tmp_path: Path, scheduler: LocalScheduler, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The submitter was killed right after the start, before it could write runner.pid."""
    from schedulers import local

    monkeypatch.setattr(local, "_fast_start", lambda *_: None)  # spawn, as a threaded caller
    monkeypatch.setattr(local, "record_runner_pid", lambda *_: None)
    spec, release = counting_spec(tmp_path)
    native_id = scheduler.submit(spec)
    try:
        assert LocalScheduler().recover(spec) == native_id  # by its command line, or its record
        wait_for_file(Path(spec.control_dir, "runner.pid"))
        assert LocalScheduler().recover(spec) == native_id  # by the pid it recorded itself
    finally:
        release.touch()
    assert wait_final(scheduler, handle_for(spec, native_id)).state is JobState.COMPLETED


def test_recover_of_a_job_that_already_ran_gives_its_outcome(
    tmp_path: Path, scheduler: LocalScheduler
) -> None:
    spec = make_spec(tmp_path, python("import sys; sys.exit(4)"))
    first = handle_for(spec, scheduler.submit(spec))
    assert wait_final(scheduler, first).exit_code == 4
    wait_gone(runner_pid(first.native_id))
    recovered = LocalScheduler().recover(spec)
    assert recovered is not None
    handle = handle_for(spec, recovered)
    assert scheduler.status([handle])[recovered] == scheduler.status([first])[first.native_id]
    scheduler.cancel(handle)  # names no process: nothing is signalled


def test_recover_of_a_submit_that_started_nothing(tmp_path: Path) -> None:
    spec = make_spec(tmp_path, ["/bin/true"])
    assert LocalScheduler().recover(spec) is None  # killed before it wrote anything
    Path(spec.control_dir, LOCAL_SPEC_FILE).write_text("{}")
    assert LocalScheduler().recover(spec) is None  # killed before the supervisor started


def test_recover_never_takes_a_process_that_reused_the_pid(tmp_path: Path) -> None:
    spec = make_spec(tmp_path, ["/bin/true"])
    Path(spec.control_dir, LOCAL_SPEC_FILE).write_text("{}")
    pid_file = Path(spec.control_dir, "runner.pid")
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    try:
        pid_file.write_text(f"{bystander.pid}\n")
        written = time.time() - 3600  # the supervisor recorded it an hour ago, then ended
        os.utime(pid_file, (written, written))
        recovered = LocalScheduler().recover(spec)
        assert recovered is not None and str(bystander.pid) not in recovered
        handle = handle_for(spec, recovered)
        assert LocalScheduler().status([handle])[recovered].state is JobState.LOST
        LocalScheduler().cancel(handle)
        time.sleep(0.2)
        assert bystander.poll() is None, "cancel signalled an unrelated process"
    finally:
        bystander.kill()
        bystander.wait()
