"""The Slurm adapter: parsers on output captured from Slurm 22.05, the job script it builds,
and its status and submit logic against a scripted stand-in for the Slurm commands."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from bridge.core.errors import ExitCode, SchedulerError
from bridge.core.job import JobState
from bridge.core.workdir_files import EXIT_CODE_FILE, SCHEDULER_OUTPUT_FILE, SELF_ID_FILE
from schedulers.base import JobHandle, JobSpec, Resources, SchedulerOptions
from schedulers.batch_script import job_name, render_script
from schedulers.slurm import (
    SlurmScheduler,
    check_native_id,
    directive_quote,
    format_walltime,
    output_pattern,
)
from schedulers.slurm_output import (
    LIVE_STATES,
    STATES,
    memory_killed,
    native_status,
    parse_exit_code,
    parse_sacct,
    parse_scontrol,
    parse_squeue,
    parse_submit,
)

FIXTURES = Path(__file__).parent / "fixtures" / "slurm"
IDS = dict(line.split("=") for line in (FIXTURES / "ids.txt").read_text().split())


def fixture(name: str) -> str:
    return (FIXTURES / name).read_text()


# --- parsers on captured output ----------------------------------------------------------------


def test_sbatch_parsable_gives_the_job_id() -> None:
    assert parse_submit(fixture("sbatch_parsable.out")) == "1"


def test_sbatch_parsable_with_a_cluster_name() -> None:
    # Written by hand: --parsable prints "id;cluster" on a multi-cluster setup (sbatch(1)).
    assert parse_submit("4242;mbtest\n") == "4242"


@pytest.mark.parametrize("stdout", ["", "Submitted batch job 12\n", "12abc\n", "-1\n"])
def test_sbatch_output_without_an_id_is_an_error(stdout: str) -> None:
    with pytest.raises(SchedulerError, match="no job id"):
        parse_submit(stdout)


def test_squeue_live_jobs() -> None:
    found = parse_squeue(fixture("squeue_live.out"))
    assert found[IDS["running"]].state is JobState.RUNNING
    assert found[IDS["pending"]].state is JobState.QUEUED
    assert "Resources" in found[IDS["pending"]].reason
    assert found[IDS["held"]].state is JobState.HELD  # PENDING with reason JobHeldUser
    assert "99999" not in found  # an unknown id is simply not listed
    assert IDS["ok"] not in found  # ended jobs are not live: sacct has their exit code


def test_squeue_skips_ended_and_keeps_unknown_live_states() -> None:
    found = parse_squeue("5|COMPLETED|None\n6|NEW_STATE|None\ngarbage\n7|RUNNING\n")
    assert "5" not in found
    assert found["6"].state is JobState.RUNNING  # listed as live, so it has not ended
    assert set(found) == {"6"}


def test_squeue_fails_for_a_single_unknown_id_only() -> None:
    assert "Invalid job id specified" in fixture("squeue_unknown.err")
    assert fixture("squeue_unknown.out") == ""
    assert fixture("squeue_all_unknown.out") == ""
    assert not (FIXTURES / "squeue_all_unknown.err").exists()
    assert SlurmScheduler().status_output_usable(1, "", fixture("squeue_unknown.err"))
    assert not SlurmScheduler().status_output_usable(
        1, "", "squeue: error: Socket timed out on send/recv operation"
    )


def test_sacct_jobcomp_lines() -> None:
    found = parse_sacct(fixture("sacct_jobcomp.out"))
    ok, exit3 = found[IDS["ok"]], found[IDS["exit3"]]
    assert (ok.state, ok.exit_code, ok.signal) == (JobState.COMPLETED, 0, None)
    assert (exit3.state, exit3.exit_code, exit3.signal) == (JobState.FAILED, 3, None)
    signal = found[IDS["signal"]]
    assert (signal.state, signal.exit_code, signal.signal) == (JobState.FAILED, None, 9)
    assert found[IDS["cancelled"]].state is JobState.CANCELLED
    assert found[IDS["timeout"]].state is JobState.TIMEOUT
    # A memory kill without cgroups is a plain FAILED by signal 9 (see scheduler.out below).
    assert found[IDS["oom"]].state is JobState.FAILED and found[IDS["oom"]].signal == 9


def test_sacct_with_a_database() -> None:
    # Written by hand after sacct(1): no slurmdbd here. Steps are skipped; "by UID" is dropped.
    found = parse_sacct(
        "31|CANCELLED by 1000|0:15|None\n31.batch|CANCELLED|0:15|\n"
        "32|OUT_OF_MEMORY|0:125|OutOfMemory\n33|NODE_FAIL|0:0|NodeDown\n"
        "34|PREEMPTED|0:0|None\n35|BOOT_FAIL|0:0|None\n36|DEADLINE|0:0|None\n"
    )
    assert {k: v.state for k, v in found.items()} == {
        "31": JobState.CANCELLED,
        "32": JobState.OUT_OF_MEMORY,
        "33": JobState.NODE_FAIL,
        "34": JobState.PREEMPTED,
        "35": JobState.NODE_FAIL,
        "36": JobState.TIMEOUT,
    }
    assert "NodeDown" in found["33"].reason


def test_sacct_without_a_database_is_an_error_message() -> None:
    assert "accounting storage is disabled" in fixture("sacct_no_database.err")


@pytest.mark.parametrize(
    ("kind", "state", "exit_code", "signal"),
    [
        ("ok", JobState.COMPLETED, 0, None),
        ("exit3", JobState.FAILED, 3, None),
        ("signal", JobState.FAILED, None, 9),
        ("cancelled", JobState.CANCELLED, None, 15),
        ("timeout", JobState.TIMEOUT, None, 15),
        ("held", JobState.HELD, None, None),
        ("running", JobState.RUNNING, None, None),
        ("pending", JobState.QUEUED, None, None),
    ],
)
def test_scontrol_show_job(
    kind: str, state: JobState, exit_code: int | None, signal: int | None
) -> None:
    found = parse_scontrol(fixture(f"scontrol_{kind}.out"))
    status = found[IDS[kind]]
    assert (status.state, status.exit_code, status.signal) == (state, exit_code, signal)


def test_scontrol_timeout_reason_names_the_time_limit() -> None:
    status = parse_scontrol(fixture("scontrol_timeout.out"))[IDS["timeout"]]
    assert "time limit" in status.reason and "TimeLimit" in status.reason


def test_scontrol_unknown_job() -> None:
    assert parse_scontrol(fixture("scontrol_unknown.out")) == {}
    assert "Invalid job id specified" in fixture("scontrol_unknown.err")


def test_scontrol_values_with_spaces() -> None:
    line = fixture("scontrol_exit3.out").replace("WorkDir=/", "WorkDir=/a dir/JobState=x/")
    assert parse_scontrol(line)[IDS["exit3"]].state is JobState.FAILED


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0:0", (0, None)),
        ("3:0", (3, None)),
        ("0:9", (None, 9)),
        ("0:15", (None, 15)),
        ("", (None, None)),
    ],
)
def test_exit_code_field(text: str, expected: tuple[int | None, int | None]) -> None:
    assert parse_exit_code(text) == expected


def test_every_state_in_the_table_maps() -> None:
    for name, state in STATES.items():
        assert native_status("1", name).state is state
    assert native_status("1", "PENDING", "JobHeldAdmin").state is JobState.HELD
    assert native_status("1", "PENDING", "Priority").state is JobState.QUEUED
    assert native_status("1", "SOMETHING_NEW").state is JobState.LOST
    assert all(not STATES[name].is_final for name in LIVE_STATES)
    assert "RUNNING" in LIVE_STATES and "COMPLETED" not in LIVE_STATES


def test_memory_kill_in_the_slurm_output() -> None:
    assert memory_killed(fixture("scheduler_out_memory.txt"))
    assert not memory_killed(fixture("scheduler_out_timeout.txt"))
    assert not memory_killed(fixture("scheduler_out_cancelled.txt"))
    # With cgroups, slurmstepd reports the kernel's OOM kill this way (written by hand).
    assert memory_killed(
        "slurmstepd: error: Detected 1 oom_kill event in StepId=7.batch. "
        "Some of the step tasks have been OOM Killed.\n"
    )


# --- outcomes: Slurm's state against the exit code the job script recorded ----------------------


def _handle(tmp_path: Path, recorded: int | None = None, output: str = "") -> JobHandle:
    control = tmp_path / "control"
    control.mkdir(exist_ok=True)
    if recorded is not None:
        (control / EXIT_CODE_FILE).write_text(f"{recorded}\n")
    if output:
        (control / SCHEDULER_OUTPUT_FILE).write_text(output)
    return JobHandle("job", "7", str(control))


@pytest.mark.parametrize(
    ("fixture_name", "recorded", "state", "bridge_exit"),
    [
        ("scontrol_timeout.out", 143, JobState.TIMEOUT, ExitCode.WALLTIME_EXCEEDED),
        ("scontrol_timeout.out", None, JobState.TIMEOUT, ExitCode.WALLTIME_EXCEEDED),
        ("scontrol_cancelled.out", 143, JobState.CANCELLED, ExitCode.CANCELLED_AT_SITE),
        ("scontrol_cancelled.out", None, JobState.CANCELLED, ExitCode.CANCELLED_AT_SITE),
        ("scontrol_exit3.out", 3, JobState.FAILED, 3),
        ("scontrol_ok.out", 0, JobState.COMPLETED, 0),
        ("scontrol_signal.out", None, JobState.FAILED, 128 + 9),
    ],
)
def test_slurm_state_wins_when_slurm_ended_the_job(
    tmp_path: Path, fixture_name: str, recorded: int | None, state: JobState, bridge_exit: int
) -> None:
    native = next(iter(parse_scontrol(fixture(fixture_name)).values()))
    outcome = SlurmScheduler()._merge(_handle(tmp_path, recorded), native)
    assert outcome.state is state
    assert outcome.bridge_exit_code() == bridge_exit


@pytest.mark.parametrize("recorded", [None, 137])
def test_memory_kill_reaches_the_bridge_as_out_of_memory(
    tmp_path: Path, recorded: int | None
) -> None:
    native = parse_scontrol(fixture("scontrol_oom.out"))[IDS["oom"]]
    handle = _handle(tmp_path, recorded, fixture("scheduler_out_memory.txt"))
    outcome = SlurmScheduler()._merge(handle, native)
    assert outcome.state is JobState.OUT_OF_MEMORY
    assert outcome.bridge_exit_code() == ExitCode.OUT_OF_MEMORY
    assert "memory" in outcome.reason


def test_a_solver_failure_is_not_mistaken_for_a_memory_kill(tmp_path: Path) -> None:
    native = parse_scontrol(fixture("scontrol_exit3.out"))[IDS["exit3"]]
    handle = _handle(tmp_path, 3, fixture("scheduler_out_cancelled.txt"))
    assert SlurmScheduler()._merge(handle, native).bridge_exit_code() == 3


# --- building the job script -------------------------------------------------------------------

HOSTILE = "a b 'q' \"d\" $(touch pwned) `touch pwned2` #h ; rm -rf x %j"


def _spec(tmp_path: Path, **changes: object) -> JobSpec:
    workdir = tmp_path / HOSTILE
    control = workdir / ".mint-bridge"
    control.mkdir(parents=True, exist_ok=True)
    fields: dict[str, object] = {
        "job_id": "0b5f7f38-2d55-4c3e-9b44-0d8c8f2e7a11",
        "workdir": str(workdir),
        "control_dir": str(control),
        "argv": [
            sys.executable,
            "-c",
            "import json, sys; print(json.dumps(sys.argv[1:]))",
            HOSTILE,
            "$HOME",
            "--x=1",
        ],
        "env": {"MINT_PARAM_LABEL": HOSTILE, "PATH": os.environ["PATH"]},
        "stdout_path": str(control / "stdout"),
        "stderr_path": str(control / "stderr"),
    }
    fields.update(changes)
    return JobSpec(**fields)  # type: ignore[arg-type]


def test_directives_hold_every_value_inert(tmp_path: Path) -> None:
    spec = _spec(
        tmp_path,
        walltime=90.0,
        resources=Resources(
            cpus=4,
            nodes=1,
            tasks=2,
            memory_mb=2048,
            queue="debug",
            account="proj01",
            extra=("--qos=long", '--constraint="a&b"'),
        ),
    )
    lines = SlurmScheduler().directives(spec)
    assert lines[0] == f"#SBATCH --job-name={job_name(spec.job_id)}"
    assert f"#SBATCH --chdir={directive_quote(spec.workdir)}" in lines
    output = os.path.join(spec.control_dir, SCHEDULER_OUTPUT_FILE).replace("%", "%%")
    assert f"#SBATCH --output={directive_quote(output)}" in lines
    for expected in (
        "--time=0-00:02:00",
        "--cpus-per-task=4",
        "--nodes=1",
        "--ntasks=2",
        "--mem=2048M",
        '--partition="debug"',
        '--account="proj01"',
        "--no-requeue",
        "--export=NONE",
    ):
        assert f"#SBATCH {expected}" in lines
    assert lines[-2:] == ["#SBATCH --qos=long", '#SBATCH --constraint="a&b"']  # site's last
    assert all(line.startswith("#SBATCH ") and "\n" not in line for line in lines)


def test_no_optional_directives_without_resources(tmp_path: Path) -> None:
    text = "\n".join(SlurmScheduler().directives(_spec(tmp_path)))
    for option in ("--time", "--cpus-per-task", "--nodes", "--ntasks", "--mem", "--partition"):
        assert option not in text


def test_script_runs_the_argv_exactly_and_nothing_else(tmp_path: Path) -> None:
    spec = _spec(tmp_path)
    script = Path(spec.control_dir) / "job.sh"
    script.write_text(render_script(spec, SlurmScheduler().directives(spec)))
    # #SBATCH lines are comments to bash: the script runs the same under Slurm and here.
    proc = subprocess.run(["bash", str(script)], cwd=tmp_path, capture_output=True, check=False)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(Path(spec.stdout_path).read_text()) == [HOSTILE, "$HOME", "--x=1"]
    assert (Path(spec.control_dir) / EXIT_CODE_FILE).read_text() == "0\n"
    assert not list(tmp_path.rglob("pwned*"))
    assert not (Path.cwd() / "pwned").exists()


def test_job_environment_keeps_srun_steps_working(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = FakeSlurm(sbatch=_fixed(0, "77\n"))
    spec = _spec(tmp_path)
    assert _slurm(monkeypatch, fake).submit(spec) == "77"
    assert fake.calls == [["sbatch", "--parsable", os.path.join(spec.control_dir, "job.sh")]]
    script = (Path(spec.control_dir) / "job.sh").read_text()
    # --export=NONE would reach srun steps inside the job; they must see the script's exports.
    assert "export SLURM_EXPORT_ENV=ALL\n" in script
    assert "#SBATCH --export=NONE\n" in script


@pytest.mark.parametrize(
    ("seconds", "expected"),
    [
        (1, "0-00:01:00"),
        (60, "0-00:01:00"),
        (61, "0-00:02:00"),
        (3600, "0-01:00:00"),
        (86400 + 3600 + 1, "1-01:01:00"),
    ],
)
def test_walltime_rounds_up_to_whole_minutes(seconds: float, expected: str) -> None:
    assert format_walltime(seconds) == expected


def test_directive_quoting() -> None:
    assert directive_quote("/tmp/a b") == '"/tmp/a b"'
    assert directive_quote('say "hi" \\ #') == '"say \\"hi\\" \\\\ #"'
    with pytest.raises(SchedulerError, match="control character"):
        directive_quote("a\nb")


def test_output_path_is_a_literal_slurm_pattern() -> None:
    assert output_pattern("/w/50%/%j/x") == "/w/50%%/%%j/x"
    with pytest.raises(SchedulerError, match="backslash"):
        output_pattern("/w/a\\b/x")


@pytest.mark.parametrize("bad", ["", "-1", "1;rm", "1 2", "--all", "12.batch"])
def test_only_job_ids_reach_argv(bad: str) -> None:
    with pytest.raises(SchedulerError):
        check_native_id(bad)
    assert check_native_id("123") == "123" and check_native_id("123_4") == "123_4"


def test_commands() -> None:
    slurm = SlurmScheduler()
    argv = slurm.status_argv(["1", "2", "3"])
    assert argv[:3] == ["squeue", "-h", "--jobs=1,2,3"] and argv[-1] == "--format=%i|%T|%r"
    assert slurm.cancel_argv("5") == ["scancel", "5"]
    assert slurm.lookup_argv("mbabc") == [
        "squeue", "-h", "--states=all", "--name=mbabc", "--format=%i",
    ]  # fmt: skip
    assert slurm.parse_lookup(fixture("squeue_lookup.out")) == IDS["exit3"]
    assert slurm.is_already_finished(fixture("scancel_finished.err"))
    assert slurm.is_already_finished(fixture("scancel_unknown.err"))


# --- status and submit against scripted Slurm commands ------------------------------------------

Responder = Callable[[list[str]], tuple[int, str, str]]


class FakeSlurm:
    """Stands in for subprocess.run: answers each Slurm command from a responder per program."""

    def __init__(self, **responders: Responder) -> None:
        self.responders = responders
        self.calls: list[list[str]] = []

    def __call__(self, argv: list[str], **_: object) -> subprocess.CompletedProcess[str]:
        self.calls.append(list(argv))
        key = "sacct_c" if argv[:2] == ["sacct", "-c"] else argv[0]
        code, out, err = self.responders[key](argv)
        return subprocess.CompletedProcess(argv, code, out, err)

    def programs(self) -> list[str]:
        return [" ".join(c[:2]) if c[:2] == ["sacct", "-c"] else c[0] for c in self.calls]


def _fixed(code: int, out: str = "", err: str = "") -> Responder:
    return lambda _argv: (code, out, err)


def _slurm(monkeypatch: pytest.MonkeyPatch, fake: FakeSlurm) -> SlurmScheduler:
    monkeypatch.setattr(subprocess, "run", fake)
    scheduler = SlurmScheduler()
    scheduler.configure(SchedulerOptions(retries=3, retry_wait=0.01))
    return scheduler


def test_one_squeue_call_for_all_live_jobs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeSlurm(squeue=_fixed(0, fixture("squeue_live.out")))
    slurm = _slurm(monkeypatch, fake)
    live = [IDS[k] for k in ("running", "pending", "held")]
    result = slurm.status([JobHandle(i, i, str(tmp_path)) for i in live])
    assert fake.programs() == ["squeue"]
    assert [result[i].state for i in live] == [JobState.RUNNING, JobState.QUEUED, JobState.HELD]


def test_ended_jobs_fall_back_to_the_jobcomp_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = FakeSlurm(
        squeue=_fixed(1, "", fixture("squeue_unknown.err")),  # none live: not an error
        sacct=_fixed(1, "", fixture("sacct_no_database.err")),
        sacct_c=_fixed(0, fixture("sacct_jobcomp.out")),
    )
    slurm = _slurm(monkeypatch, fake)
    handles = [
        JobHandle("t", IDS["timeout"], str(tmp_path)),
        JobHandle("c", IDS["cancelled"], str(tmp_path)),
    ]
    result = slurm.status(handles)
    assert result[IDS["timeout"]].state is JobState.TIMEOUT
    assert result[IDS["cancelled"]].state is JobState.CANCELLED
    assert fake.programs() == ["squeue", "sacct", "sacct -c"]
    slurm.status(handles)  # plain sacct is known to be unavailable now: not asked again
    assert fake.programs()[3:] == ["squeue", "sacct -c"]


def test_jobs_missing_from_the_jobcomp_file_are_asked_of_scontrol(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def scontrol(argv: list[str]) -> tuple[int, str, str]:
        if argv[-1] == IDS["exit3"]:
            return 0, fixture("scontrol_exit3.out"), ""
        return 1, "", fixture("scontrol_unknown.err")

    fake = FakeSlurm(
        squeue=_fixed(0, ""),
        sacct=_fixed(1, "", fixture("sacct_no_database.err")),
        sacct_c=_fixed(0, ""),
        scontrol=scontrol,
    )
    slurm = _slurm(monkeypatch, fake)
    (tmp_path / EXIT_CODE_FILE).write_text("3\n")
    gone = tmp_path / "gone"
    gone.mkdir()
    result = slurm.status(
        [JobHandle("a", IDS["exit3"], str(tmp_path)), JobHandle("b", "99999", str(gone))]
    )
    assert result[IDS["exit3"]].bridge_exit_code() == 3
    assert result["99999"].state is JobState.LOST  # nobody knows it and it left no exit code


def test_an_unreachable_controller_holds_the_last_known_state(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    answers = [(0, fixture("squeue_live.out"), "")] + [
        (1, "", "squeue: error: slurm_load_jobs error: Socket timed out on send/recv operation")
    ] * 3
    fake = FakeSlurm(squeue=lambda _argv: answers.pop(0))
    slurm = _slurm(monkeypatch, fake)
    handle = JobHandle("r", IDS["running"], str(tmp_path))
    assert slurm.status([handle])[IDS["running"]].state is JobState.RUNNING
    assert slurm.status([handle])[IDS["running"]].state is JobState.RUNNING  # held, not failed
    assert fake.programs() == ["squeue"] * 4  # 1 + 3 retries


def test_a_submit_that_reached_slurm_is_not_repeated(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = FakeSlurm(
        sbatch=_fixed(1, "", "sbatch: error: Socket timed out on send/recv operation"),
        squeue=_fixed(0, "42\n"),
    )
    slurm = _slurm(monkeypatch, fake)
    assert slurm.submit(_spec(tmp_path)) == "42"
    assert fake.programs() == ["sbatch", "squeue"]
    assert "--name=mb" in " ".join(fake.calls[1])


def test_a_submit_retried_after_a_timeout_that_did_not_reach_slurm(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    answers = [(1, "", "sbatch: error: Socket timed out on send/recv operation"), (0, "43\n", "")]
    fake = FakeSlurm(sbatch=lambda _argv: answers.pop(0), squeue=_fixed(0, ""))
    slurm = _slurm(monkeypatch, fake)
    assert slurm.submit(_spec(tmp_path)) == "43"
    assert fake.programs() == ["sbatch", "squeue", "sbatch"]


def test_a_rejected_submit_fails_at_once_with_slurms_message(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    message = "sbatch: error: Batch job submission failed: Invalid account or account/partition"
    fake = FakeSlurm(sbatch=_fixed(1, "", message))
    slurm = _slurm(monkeypatch, fake)
    with pytest.raises(SchedulerError, match="Invalid account"):
        slurm.submit(_spec(tmp_path))
    assert fake.programs() == ["sbatch"]


def test_cancel_of_an_ended_job_is_not_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeSlurm(scancel=_fixed(1, "", fixture("scancel_finished.err")))
    _slurm(monkeypatch, fake).cancel(JobHandle("x", "2", "/nonexistent"))
    assert fake.programs() == ["scancel"]


# --- recovering a submit whose id was never recorded ---------------------------------------------


def test_the_script_records_its_slurm_job_id_first(tmp_path: Path) -> None:
    spec = _spec(tmp_path)
    script = Path(spec.control_dir) / "job.sh"
    script.write_text(
        render_script(spec, SlurmScheduler().directives(spec), id_variables=("SLURM_JOB_ID",))
    )
    env = {"PATH": os.environ["PATH"], "SLURM_JOB_ID": "4242", "PBS_JOBID": "9.pbs"}
    proc = subprocess.run(["bash", str(script)], env=env, capture_output=True, check=False)
    assert proc.returncode == 0, proc.stderr
    assert (Path(spec.control_dir) / SELF_ID_FILE).read_text() == "4242\n"


def test_recover_finds_a_job_that_started_by_the_id_it_recorded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = FakeSlurm()  # no Slurm command may run
    spec = _spec(tmp_path)
    (Path(spec.control_dir) / SELF_ID_FILE).write_text("4242\n")
    assert _slurm(monkeypatch, fake).recover(spec) == "4242"
    assert fake.calls == []


def test_recover_refuses_a_recorded_id_that_is_not_slurms(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = _spec(tmp_path)
    (Path(spec.control_dir) / SELF_ID_FILE).write_text("--all\n")
    with pytest.raises(SchedulerError, match="not a Slurm job id"):
        _slurm(monkeypatch, FakeSlurm()).recover(spec)


def test_recover_finds_a_queued_job_by_its_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = FakeSlurm(squeue=_fixed(0, "42\n"))
    spec = _spec(tmp_path)
    assert _slurm(monkeypatch, fake).recover(spec) == "42"
    assert fake.calls == [
        ["squeue", "-h", "--states=all", f"--name={job_name(spec.job_id)}", "--format=%i"]
    ]


def test_recover_says_never_submitted_only_when_slurm_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = FakeSlurm(squeue=_fixed(0, ""))
    assert _slurm(monkeypatch, fake).recover(_spec(tmp_path)) is None


def test_recover_fails_when_slurm_does_not_answer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    timeout = "squeue: error: slurm_load_jobs error: Socket timed out on send/recv operation"
    fake = FakeSlurm(squeue=_fixed(1, "", timeout))
    with pytest.raises(SchedulerError, match="timed out") as caught:
        _slurm(monkeypatch, fake).recover(_spec(tmp_path))
    assert caught.value.transient
    assert fake.programs() == ["squeue"] * 3  # retried, then failed: never "not submitted"


def test_recover_of_a_job_that_ran_without_recording_its_id_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = _spec(tmp_path)
    (Path(spec.control_dir) / EXIT_CODE_FILE).write_text("0\n")
    with pytest.raises(SchedulerError, match="already ran"):
        _slurm(monkeypatch, FakeSlurm(squeue=_fixed(0, ""))).recover(spec)


SLOW_SBATCH = """#!/bin/bash
# Answers at once but leaves a process behind that holds what sbatch inherited, as an sbatch
# still on its way to the controller would after the site process was killed.
( sleep {seconds} ) > /dev/null 2>&1 &
echo 77
"""


def test_recover_waits_for_a_submit_command_still_running(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    sbatch = bin_dir / "sbatch"
    sbatch.write_text(SLOW_SBATCH.format(seconds=1.5))
    sbatch.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    slurm = SlurmScheduler()
    slurm.configure(SchedulerOptions(retries=1, command_timeout=0.3))
    spec = _spec(tmp_path)
    assert slurm.submit(spec) == "77"
    with pytest.raises(SchedulerError, match="still running") as caught:
        slurm.recover(spec)
    assert caught.value.transient
    (Path(spec.control_dir) / SELF_ID_FILE).write_text("77\n")
    slurm.configure(SchedulerOptions(retries=1, command_timeout=10))
    assert slurm.recover(spec) == "77"  # once the command is gone
