"""The PBS Pro / OpenPBS adapter: its parser on `qstat -x -f -F json` output in the layouts of
OpenPBS 23 and PBS Pro 19 (including the invalid JSON some versions print), its state and
exit-status tables, the job script it builds, and its status logic against scripted stand-ins
for the PBS commands."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from bridge.core.errors import ExitCode, SchedulerError
from bridge.core.job import JobOutcome, JobState
from bridge.core.workdir_files import EXIT_CODE_FILE, SCHEDULER_OUTPUT_FILE, SELF_ID_FILE
from schedulers import get_scheduler
from schedulers.base import JobHandle, Resources, SchedulerOptions
from schedulers.batch import NativeStatus
from schedulers.batch_script import job_name, render_script
from schedulers.pbs_outcome import kill_notice
from schedulers.pbspro import (
    JOB_EXEC,
    STATES,
    PbsProScheduler,
    directives,
    job_status,
    parse_qstat_json,
    parse_status,
)
from tests.support.pbs_fakes import FakeCommands, make_spec, write_control

FIXTURES = Path(__file__).parent / "fixtures" / "pbspro"


def fixture(name: str) -> str:
    return (FIXTURES / name).read_text(encoding="utf-8")


def outcome(status: NativeStatus) -> JobOutcome:
    return JobOutcome(status.state, status.exit_code, status.signal, status.reason)


@pytest.fixture
def fakes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeCommands:
    return FakeCommands(tmp_path, monkeypatch)


def scheduler() -> PbsProScheduler:
    adapter = get_scheduler("pbspro", SchedulerOptions(retries=1))
    assert isinstance(adapter, PbsProScheduler)
    return adapter


# --- parsing qstat -F json ---------------------------------------------------------------


def test_openpbs23_layout() -> None:
    jobs = parse_qstat_json(fixture("qstat_xf_active.json"))
    assert list(jobs) == [f"{n}.pbs01" for n in range(2001, 2007)]
    running = jobs["2003.pbs01"]
    assert running["job_state"] == "R"
    assert running["resources_used"]["walltime"] == "00:10:31"
    assert running["Resource_List"]["select"] == "1:ncpus=4:mpiprocs=1:mem=4096mb"
    assert running["substate"] == 42


def test_pbspro19_layout() -> None:
    statuses = parse_status(fixture("qstat_xf_pbspro19.json"))
    assert statuses == {
        "40.pbs": NativeStatus(
            JobState.COMPLETED, 0, None, "solver exited with code 0 (PBS exit status 0)"
        )
    }


def test_invalid_variable_list_is_dropped_and_the_rest_parsed() -> None:
    text = fixture("qstat_xf_bad_variable_list.json")
    with pytest.raises(json.JSONDecodeError):
        json.loads(text)  # the fixture really is what PBS Pro 19.1 printed: not JSON
    jobs = parse_qstat_json(text)
    assert jobs["4.scheduler"]["job_state"] == "R"
    variables = jobs["4.scheduler"]["Variable_List"]
    # A backslash starting no JSON escape stands for itself; a value still not JSON is dropped.
    assert variables["QUOTED"] == "\\'\"asads\"\\'"
    assert variables["LIST"] == "ab\\,c"
    assert variables["RUN_TAG"] is None
    assert variables["PBS_O_HOME"] == "/home/mint"
    assert parse_status(text)["5.scheduler"].state is JobState.QUEUED


def test_no_jobs() -> None:
    assert parse_qstat_json(fixture("qstat_xf_no_jobs.json")) == {}
    assert parse_qstat_json("") == {}


@pytest.mark.parametrize("text", ["{not json", '{"Jobs": []}', "[]"])
def test_output_that_cannot_be_read_is_an_error(text: str) -> None:
    with pytest.raises(SchedulerError):
        parse_qstat_json(text)


# --- the state table ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("letter", "state"),
    [
        ("Q", JobState.QUEUED),
        ("T", JobState.QUEUED),
        ("W", JobState.HELD),
        ("H", JobState.HELD),
        ("S", JobState.HELD),
        ("U", JobState.HELD),
        ("R", JobState.RUNNING),
        ("B", JobState.RUNNING),
        ("E", JobState.RUNNING),  # exiting: Exit_status may show, the outcome is final at F
    ],
)
def test_state_table(letter: str, state: JobState) -> None:
    assert STATES[letter] is state
    assert job_status({"job_state": letter, "Exit_status": 0}).state is state


def test_fixture_states_follow_the_table() -> None:
    statuses = parse_status(fixture("qstat_xf_active.json"))
    assert [s.state for s in statuses.values()] == [
        JobState.QUEUED,
        JobState.HELD,
        JobState.RUNNING,
        JobState.RUNNING,
        JobState.HELD,
        JobState.HELD,
    ]
    assert "Insufficient amount of resource: ncpus" in statuses["2001.pbs01"].reason


def test_moved_and_expired() -> None:
    assert job_status({"job_state": "M"}).state is JobState.LOST
    assert job_status({"job_state": "X", "Exit_status": 0}).state is JobState.COMPLETED


# --- exit statuses -----------------------------------------------------------------------

FINISHED = [
    (2010, JobState.COMPLETED, 0, None, 0),
    (2011, JobState.FAILED, 3, None, 3),
    (2012, JobState.FAILED, None, 9, 137),  # 137: bash saw the solver die of SIGKILL
    (2013, JobState.FAILED, None, 9, 137),  # 265: the script's shell died of SIGKILL
    (2014, JobState.CANCELLED, None, 15, ExitCode.CANCELLED_AT_SITE),  # 271, substate 91
    (2015, JobState.CANCELLED, None, None, ExitCode.CANCELLED_AT_SITE),  # deleted, never ran
]
LIMITS = [
    (2020, JobState.TIMEOUT, None, None, ExitCode.WALLTIME_EXCEEDED),  # -29 KILL_WALLTIME
    (2021, JobState.OUT_OF_MEMORY, None, None, ExitCode.OUT_OF_MEMORY),  # -27 KILL_MEM
    (2022, JobState.TIMEOUT, None, 15, ExitCode.WALLTIME_EXCEEDED),  # 271 past its walltime
    (2023, JobState.NODE_FAIL, None, None, ExitCode.NODE_FAILURE),  # -20 RERUN_MS_FAIL
    (2024, JobState.PREEMPTED, None, None, ExitCode.PREEMPTED),  # -11 RERUN
    (2025, JobState.LOST, None, None, ExitCode.JOB_LOST),  # M: moved to another server
    (2026, JobState.OUT_OF_MEMORY, None, 9, ExitCode.OUT_OF_MEMORY),  # 265 at its mem limit
]


@pytest.mark.parametrize(
    ("name", "cases"),
    [("qstat_xf_finished.json", FINISHED), ("qstat_xf_limits.json", LIMITS)],
)
def test_exit_statuses_reach_distinct_bridge_exit_codes(
    name: str, cases: list[tuple[int, JobState, int | None, int | None, int]]
) -> None:
    statuses = parse_status(fixture(name))
    assert len(statuses) == len(cases)
    for number, state, exit_code, signal, bridge_code in cases:
        status = statuses[f"{number}.pbs01"]
        assert (status.state, status.exit_code, status.signal) == (state, exit_code, signal), (
            number,
            status,
        )
        result = outcome(status)
        assert result.bridge_exit_code() == bridge_code, (number, status)
        assert JobOutcome.from_message(result.to_message()) == result


@pytest.mark.parametrize(
    ("code", "state"),
    [
        (-1, JobState.NODE_FAIL),
        (-10, JobState.FAILED),
        (-12, JobState.PREEMPTED),
        (-14, JobState.NODE_FAIL),
        (-17, JobState.FAILED),
        (-25, JobState.FAILED),
        (-26, JobState.OUT_OF_MEMORY),
        (-28, JobState.TIMEOUT),
        (-31, JobState.OUT_OF_MEMORY),
        (-32, JobState.NODE_FAIL),
        (-77, JobState.NODE_FAIL),  # newer than this table: a start failure all the same
    ],
)
def test_job_exec_codes(code: int, state: JobState) -> None:
    status = job_status({"job_state": "F", "Exit_status": code, "substate": 93})
    assert status.state is state
    if code in JOB_EXEC:
        assert JOB_EXEC[code][0] in status.reason


def test_finished_without_exit_status_and_not_deleted() -> None:
    status = job_status({"job_state": "F", "substate": 92, "comment": "odd"})
    assert (status.state, status.exit_code) == (JobState.FAILED, None)
    assert outcome(status).bridge_exit_code() == ExitCode.JOB_LOST


def test_numbers_as_strings_are_read_too() -> None:
    status = job_status({"job_state": "F", "Exit_status": "-29", "substate": "93"})
    assert status.state is JobState.TIMEOUT


@pytest.mark.parametrize(
    ("name", "state"),
    [
        ("scheduler_out_walltime.txt", JobState.TIMEOUT),
        ("scheduler_out_memory.txt", JobState.OUT_OF_MEMORY),
    ],
)
def test_kill_notices(name: str, state: JobState) -> None:
    notice = kill_notice(fixture(name))
    assert notice is not None and notice[0] is state


# --- the job script ----------------------------------------------------------------------


def test_directives(tmp_path: Path) -> None:
    spec = make_spec(
        tmp_path,
        walltime=7200,
        resources=Resources(
            cpus=4,
            nodes=2,
            tasks=4,
            memory_mb=8192,
            queue="workq",
            account="proj01",
            extra=("-l place=scatter:excl",),
        ),
    )
    assert directives(spec) == [
        f"#PBS -N {job_name(spec.job_id)}",
        "#PBS -S /bin/bash",
        "#PBS -r n",
        "#PBS -j oe",
        f"#PBS -o {spec.control_dir}/{SCHEDULER_OUTPUT_FILE}",
        "#PBS -l walltime=02:00:00",
        "#PBS -l select=2:ncpus=8:mpiprocs=2:mem=8192mb",
        "#PBS -l place=scatter",
        "#PBS -q workq",
        "#PBS -A proj01",
        "#PBS -l place=scatter:excl",  # the site's own lines come last and win
    ]


def test_one_chunk_without_tasks(tmp_path: Path) -> None:
    lines = directives(make_spec(tmp_path, resources=Resources(cpus=16)))
    assert "#PBS -l select=1:ncpus=16" in lines
    assert not any("place=" in line for line in lines)
    assert not any(line.startswith("#PBS -l") for line in directives(make_spec(tmp_path)))


def test_script_keeps_hostile_values_inert(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    spec = make_spec(
        tmp_path,
        workdir_name=f"dir with spaces; touch {marker}",
        argv=["/bin/sh", "-c", 'printf "%s|" "$@" > args.txt', "sh", "$(touch x)", "`id`"],
        env={"MINT_PARAM_NOTE": "'; touch z; '"},
    )
    script = render_script(spec, directives(spec))
    assert not any(line.startswith("#PBS -o") for line in script.splitlines())  # unsafe path
    path = Path(spec.control_dir) / "job.sh"
    path.write_text(script, encoding="utf-8")
    proc = subprocess.run(["bash", str(path)], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    assert (Path(spec.workdir) / "args.txt").read_text() == "$(touch x)|`id`|"
    assert not marker.exists() and not (Path(spec.workdir) / "z").exists()


# --- against scripted PBS commands ---------------------------------------------------------


def handle(tmp_path: Path, native_id: str) -> JobHandle:
    control = tmp_path / "jobs" / native_id / ".mint-bridge"
    control.mkdir(parents=True)
    return JobHandle("0f8fad5b-d9cb-469f-a165-70867728950e", native_id, str(control))


def test_one_qstat_call_with_history_and_unknown_ids(tmp_path: Path, fakes: FakeCommands) -> None:
    fakes.add(
        "qstat",
        stdout=fixture("qstat_xf_limits.json"),
        stderr=fixture("qstat_unknown_job.stderr"),
        code=153,
    )
    timeout = handle(tmp_path, "2020.pbs01")
    unknown = handle(tmp_path, "2099.pbs01")
    result = scheduler().status([timeout, unknown])
    # The unknown id is asked about once more on its own before it counts as gone.
    assert fakes.calls() == [
        ["-x", "-f", "-F", "json", "2020.pbs01", "2099.pbs01"],
        ["-x", "-f", "-F", "json", "2099.pbs01"],
    ]
    assert result["2020.pbs01"].state is JobState.TIMEOUT
    assert result["2020.pbs01"].bridge_exit_code() == ExitCode.WALLTIME_EXCEEDED
    assert result["2099.pbs01"].state is JobState.LOST


def test_a_job_left_out_of_the_json_is_asked_for_alone(tmp_path: Path, fakes: FakeCommands) -> None:
    """Some OpenPBS builds print only the first of several jobs with -F json."""
    first_only = json.loads(fixture("qstat_xf_active.json"))
    first_only["Jobs"] = {"2003.pbs01": first_only["Jobs"]["2003.pbs01"]}
    fakes.add("qstat", stdout=json.dumps(first_only))
    running = handle(tmp_path, "2003.pbs01")
    other = handle(tmp_path, "2004.pbs01")
    write_control(other.control_dir, EXIT_CODE_FILE, "0\n")
    result = scheduler().status([running, other])
    assert fakes.calls()[1] == ["-x", "-f", "-F", "json", "2004.pbs01"]
    assert result["2003.pbs01"].state is JobState.RUNNING
    # Still not listed: settled from the exit code the script recorded.
    assert result["2004.pbs01"].state is JobState.COMPLETED


def test_a_memory_notice_refines_a_signal(tmp_path: Path, fakes: FakeCommands) -> None:
    fakes.add("qstat", stdout=fixture("qstat_xf_finished.json"))
    job = handle(tmp_path, "2013.pbs01")  # 265 under its limits
    write_control(job.control_dir, SCHEDULER_OUTPUT_FILE, fixture("scheduler_out_memory.txt"))
    result = scheduler().status([job])[job.native_id]
    assert (result.state, result.signal) == (JobState.OUT_OF_MEMORY, 9)
    assert result.bridge_exit_code() == ExitCode.OUT_OF_MEMORY


def test_finished_job_uses_the_recorded_exit_code(tmp_path: Path, fakes: FakeCommands) -> None:
    fakes.add("qstat", stdout=fixture("qstat_xf_finished.json"))
    job = handle(tmp_path, "2011.pbs01")
    write_control(job.control_dir, EXIT_CODE_FILE, "3\n")
    assert scheduler().status([job])[job.native_id] == JobOutcome(
        JobState.FAILED, exit_code=3, reason="solver exited with code 3"
    )


def test_submit_and_cancel(tmp_path: Path, fakes: FakeCommands) -> None:
    fakes.add("qsub", stdout="2042.pbs01\n")
    spec = make_spec(tmp_path, resources=Resources(cpus=2, memory_mb=100))
    native_id = scheduler().submit(spec)
    assert native_id == "2042.pbs01"
    script = (Path(spec.control_dir) / "job.sh").read_text()
    assert "#PBS -l select=1:ncpus=2:mem=100mb\n" in script
    fakes.add("qdel")
    scheduler().cancel(handle(tmp_path, native_id))
    assert fakes.calls()[-1] == ["2042.pbs01"]  # plain qdel: -x would purge the history


def test_cancel_of_a_finished_job(tmp_path: Path, fakes: FakeCommands) -> None:
    fakes.add("qdel", stderr="qdel: Job has finished\n", code=35)
    scheduler().cancel(handle(tmp_path, "2010.pbs01"))


def test_lookup_uses_qselect(fakes: FakeCommands) -> None:
    fakes.add("qselect", stdout="2003.pbs01\n")
    assert scheduler().find_by_name("mb9a8b7c6d5e4f3") == "2003.pbs01"
    assert fakes.calls() == [["-N", "mb9a8b7c6d5e4f3"]]


# --- recovering a submit whose id was never recorded -----------------------------------------


def test_the_script_records_pbs_jobid_first(tmp_path: Path) -> None:
    spec = make_spec(tmp_path)
    script = Path(spec.control_dir) / "job.sh"
    script.write_text(
        render_script(spec, directives(spec), id_variables=PbsProScheduler.job_id_variables)
    )
    env = {"PATH": "/usr/bin:/bin", "PBS_JOBID": "2042.pbs01"}
    proc = subprocess.run(["bash", str(script)], env=env, capture_output=True)
    assert proc.returncode == 0, proc.stderr
    assert (Path(spec.control_dir) / SELF_ID_FILE).read_text() == "2042.pbs01\n"


def test_recover_by_recorded_id_then_by_qselect(tmp_path: Path, fakes: FakeCommands) -> None:
    spec = make_spec(tmp_path)
    fakes.add("qselect", stdout="2043.pbs01\n")
    assert scheduler().recover(spec) == "2043.pbs01"  # still queued: found by its name
    write_control(spec.control_dir, SELF_ID_FILE, "2043.pbs01\n")
    assert scheduler().recover(spec) == "2043.pbs01"
    assert fakes.calls() == [["-N", job_name(spec.job_id)]]  # the record needs no command


def test_recover_refuses_a_recorded_id_that_is_not_a_pbs_id(
    tmp_path: Path, fakes: FakeCommands
) -> None:
    spec = make_spec(tmp_path)
    write_control(spec.control_dir, SELF_ID_FILE, "-x all\n")
    with pytest.raises(SchedulerError, match="not a PBS job id"):
        scheduler().recover(spec)


def test_recover_fails_when_the_server_is_busy(tmp_path: Path, fakes: FakeCommands) -> None:
    fakes.add("qselect", stderr="qselect: Server is currently too busy\n", code=1)
    with pytest.raises(SchedulerError) as caught:
        scheduler().recover(make_spec(tmp_path))
    assert caught.value.transient


# --- output captured from a real OpenPBS 23.06.06 (see fixtures/pbspro/README.md) ------------


def test_real_finished_jobs() -> None:
    statuses = parse_status(fixture("real_qstat_xf_finished.json"))
    assert statuses["0.pbstest"] == NativeStatus(
        JobState.COMPLETED, 0, None, "solver exited with code 0 (PBS exit status 0)"
    )
    assert statuses["1.pbstest"] == NativeStatus(
        JobState.FAILED, 3, None, "solver exited with code 3 (PBS exit status 3)"
    )
    assert statuses["2.pbstest"] == NativeStatus(
        JobState.TIMEOUT,
        reason="job exceeded its walltime (JOB_EXEC_KILL_WALLTIME, PBS exit status -29)",
    )
    assert statuses["3.pbstest"] == NativeStatus(
        JobState.CANCELLED, signal=15, reason="deleted while running (qdel; PBS exit status 271)"
    )
    # Deleted while queued: no comment at all, and no empty "(PBS comment: )" either.
    assert statuses["4.pbstest"] == NativeStatus(JobState.CANCELLED, reason="deleted before it ran")


def test_real_layout_four_spaces_obittime_and_host_prefixed_paths() -> None:
    text = fixture("real_qstat_xf_finished.json")
    assert '\n    "pbs_version":"23.06.06",\n' in text
    job = parse_qstat_json(text)["0.pbstest"]
    assert job["obittime"] == "Thu Dec  3 12:00:15 2026"
    assert "session_id" not in job
    assert job["Output_Path"] == "pbstest:/srv/mint/work/ok.out"


def test_real_early_running_job_has_no_usage_yet() -> None:
    job = parse_qstat_json(fixture("real_qstat_f_running.json"))["3.pbstest"]
    assert (job["job_state"], job["substate"]) == ("R", 41)
    assert not {"resources_used", "session_id", "jobdir"} & set(job)
    assert job_status(job) == NativeStatus(
        JobState.RUNNING, reason="PBS state R: Job run at Thu Dec 03 at 12:00 on (pbstest:ncpus=1)"
    )


def test_real_invalid_escape_is_read_as_a_backslash() -> None:
    text = fixture("real_qstat_xf_invalid_escape.json")
    with pytest.raises(json.JSONDecodeError, match="Invalid \\\\escape"):
        json.loads(text)
    job = parse_qstat_json(text)["6.pbstest"]
    assert job["Submit_arguments"].endswith('-- /usr/bin/tr "\\0" x')
    assert job_status(job).state is JobState.COMPLETED


def test_a_value_that_cannot_be_repaired_is_dropped_not_the_pass() -> None:
    text = fixture("real_qstat_f_running.json").replace('"Priority":0', '"Priority":0x1f')
    job = parse_qstat_json(text)["3.pbstest"]
    assert job["Priority"] is None
    assert job["job_state"] == "R"


# --- job history off (PBS's default) ---------------------------------------------------------


def test_without_history_qstat_is_asked_again_without_x(
    tmp_path: Path, fakes: FakeCommands
) -> None:
    fakes.add(
        "qstat",
        stdout=fixture("real_qstat_x_no_history.json"),
        stderr=fixture("real_qstat_x_no_history.stderr"),
    )
    spec = make_spec(tmp_path)
    write_control(spec.control_dir, EXIT_CODE_FILE, "0\n")
    adapter = scheduler()
    handle = JobHandle(spec.job_id, "0.pbstest", spec.control_dir)
    result = adapter.status([handle])["0.pbstest"]
    assert result == JobOutcome(JobState.COMPLETED, 0, reason="solver exited with code 0")
    assert fakes.calls() == [
        ["-x", "-f", "-F", "json", "0.pbstest"],
        ["-f", "-F", "json", "0.pbstest"],
        ["-x", "-f", "-F", "json", "0.pbstest"],  # is history on by now? once per ended job
    ]
    assert adapter.history is False
    adapter.status([handle])
    assert fakes.calls()[3] == ["-f", "-F", "json", "0.pbstest"]


@pytest.mark.parametrize(
    ("files", "state", "words"),
    [
        ({EXIT_CODE_FILE: "3\n"}, JobState.FAILED, "solver exited with code 3"),
        (
            {SELF_ID_FILE: "0.pbstest\n", "scheduler.out": "@walltime"},
            JobState.TIMEOUT,
            "killed for exceeding its walltime: =>> PBS: job killed: walltime 5 exceeded limit 4",
        ),
        (  # SIGTERM reached the solver and the script lived to record 143
            {SELF_ID_FILE: "0.pbstest\n", EXIT_CODE_FILE: "143\n", "scheduler.out": "@walltime"},
            JobState.TIMEOUT,
            "job killed: walltime 5 exceeded limit 4; pbspro no longer lists job 0.pbstest",
        ),
        ({SELF_ID_FILE: "0.pbstest\n", "batch-cancel": "1\n"}, JobState.CANCELLED, "(qdel)"),
        ({SELF_ID_FILE: "0.pbstest\n"}, JobState.LOST, "recorded no exit code"),
        ({}, JobState.LOST, "never started"),
    ],
)
def test_a_job_pbs_no_longer_lists_is_settled_from_its_control_dir(
    tmp_path: Path, fakes: FakeCommands, files: dict[str, str], state: JobState, words: str
) -> None:
    fakes.add("qstat", stdout=fixture("real_qstat_x_no_history.json"))
    spec = make_spec(tmp_path)
    for name, text in files.items():
        body = fixture("real_scheduler_out_walltime.txt") if text == "@walltime" else text
        write_control(spec.control_dir, name, body)
    result = scheduler().status([JobHandle(spec.job_id, "0.pbstest", spec.control_dir)])
    assert result["0.pbstest"].state is state
    assert words in result["0.pbstest"].reason
