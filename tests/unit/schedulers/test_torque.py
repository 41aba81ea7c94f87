"""The Torque adapter: its parser on output in Torque's format and on output captured from
slurm-wlm-torque, its state and exit-status tables, the job script it builds, and its status,
submit, lookup and cancel logic against scripted stand-ins for the Torque commands."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from bridge.core.errors import ExitCode, SchedulerError, SiteConfigInvalid
from bridge.core.job import JobOutcome, JobState
from bridge.core.workdir_files import EXIT_CODE_FILE, SCHEDULER_OUTPUT_FILE, SELF_ID_FILE
from schedulers import get_scheduler
from schedulers.base import JobHandle, Resources, SchedulerOptions
from schedulers.batch import NativeStatus
from schedulers.batch_script import job_name, render_script
from schedulers.pbs_base import (
    check_native_id,
    hms,
    parse_qselect,
    parse_qsub,
    parse_size,
    parse_walltime,
    unknown_ids_only,
)
from schedulers.pbs_outcome import kill_notice
from schedulers.torque import (
    JOB_EXEC,
    STATES,
    TorqueScheduler,
    directives,
    find_job_named,
    job_status,
    parse_qstat_full,
    parse_status,
)
from tests.support.pbs_fakes import FakeCommands, make_spec, write_control

FIXTURES = Path(__file__).parent / "fixtures" / "torque"
SERVER = "torque01.example.org"


def fixture(name: str) -> str:
    return (FIXTURES / name).read_text(encoding="utf-8")


def outcome(status: NativeStatus) -> JobOutcome:
    """A parsed status as the bridge would receive it (what bridge_exit_code is computed on)."""
    return JobOutcome(status.state, status.exit_code, status.signal, status.reason)


@pytest.fixture
def fakes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeCommands:
    return FakeCommands(tmp_path, monkeypatch)


def scheduler() -> TorqueScheduler:
    adapter = get_scheduler("torque", SchedulerOptions(retries=1))
    assert isinstance(adapter, TorqueScheduler)
    return adapter


# --- parsing qstat -f --------------------------------------------------------------------


def test_one_line_format_gives_every_job_and_attribute() -> None:
    jobs = parse_qstat_full(fixture("qstat_f1_active.txt"))
    assert list(jobs) == [f"{n}.{SERVER}" for n in range(1040, 1046)]
    running = jobs[f"1042.{SERVER}"]
    assert running["job_state"] == "R"
    assert running["Job_Name"] == "mb9a8b7c6d5e4f3"
    assert running["resources_used.walltime"] == "00:10:31"
    assert running["Resource_List.mem"] == "4096mb"
    assert running["req_information.task_usage.0.task.0.host"] == "node07"
    queued = jobs[f"1040.{SERVER}"]
    assert queued["Variable_List"].endswith("PBS_O_WORKDIR=/home/mint")
    assert queued["comment"] == "Not Running: insufficient idle processors"


def test_folded_format_is_joined_back() -> None:
    """Without -1 Torque cuts long values at 79 columns and continues them after a tab."""
    jobs = parse_qstat_full(fixture("qstat_f_folded.txt"))
    assert list(jobs) == [f"{n}.{SERVER}" for n in (1070, 1071, 1072)]
    first = jobs[f"1070.{SERVER}"]
    work = "/lustre/project/mint-bridge/work/a1b2c3d4-e5f6-4a7b-8c9d-0e1f2a3b4c5d"
    assert first["Output_Path"] == f"login01.example.org:{work}/.mint-bridge/scheduler.out"
    assert first["exec_host"] == (
        "node13/0-23+node12/0-23+node11/0-23+node15/0-23+node16/0-23+node17/0-23"
    )
    assert (
        "PBS_O_PATH=/opt/torque/4.2.10/bin:/opt/torque/4.2.10/sbin:/usr/local/bin:/usr/bin:/bin,"
        in first["Variable_List"]
    )
    assert first["submit_args"].endswith(f"-j oe {work}/.mint-bridge/job.sh")
    assert first["job_state"] == "R" and first["Walltime.Remaining"] == "36440"
    # A value holding raw newlines: its unindented lines belong to it, not to a new attribute.
    completed = jobs[f"1071.{SERVER}"]
    assert "*** error from copy" in completed["sched_hint"]
    assert "/.mint-bridge/scheduler.out, error 1" in completed["sched_hint"]
    assert completed["etime"] == "Mon Mar  3 20:16:05 2025"
    assert completed["exit_status"] == "271"
    assert jobs[f"1072.{SERVER}"]["Resource_List.walltime"] == "48:00:00"


def test_slurm_wlm_torque_output_is_parsed() -> None:
    """Captured from slurm-wlm-torque: numeric ids, tab-indented attributes, no exit_status."""
    jobs = parse_qstat_full(fixture("slurm_wlm_torque_qstat_f1.txt"))
    assert list(jobs) == ["4", "5", "6"]
    assert jobs["5"]["job_state"] == "R"
    assert jobs["5"]["Job_Name"] == "mb4d1c2b3a5e6f7"
    assert jobs["4"]["job_state"] == "C" and "exit_status" not in jobs["4"]
    statuses = parse_status(fixture("slurm_wlm_torque_qstat_f1.txt"))
    assert statuses["5"].state is JobState.RUNNING
    assert statuses["6"].state is JobState.QUEUED


def test_empty_and_noise_give_no_jobs() -> None:
    assert parse_qstat_full("") == {}
    assert parse_qstat_full("qstat: some warning\n\n") == {}


# --- the state table ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("letter", "state"),
    [
        ("Q", JobState.QUEUED),
        ("T", JobState.QUEUED),
        ("W", JobState.HELD),
        ("H", JobState.HELD),
        ("S", JobState.HELD),
        ("R", JobState.RUNNING),
        ("E", JobState.RUNNING),  # exiting: exit_status may show, the outcome is final at C
    ],
)
def test_state_table(letter: str, state: JobState) -> None:
    assert STATES[letter] is state
    assert job_status({"job_state": letter, "exit_status": "0"}).state is state


def test_fixture_states_follow_the_table() -> None:
    statuses = parse_status(fixture("qstat_f1_active.txt"))
    assert [s.state for s in statuses.values()] == [
        JobState.QUEUED,
        JobState.HELD,
        JobState.RUNNING,
        JobState.RUNNING,
        JobState.HELD,
        JobState.HELD,
    ]
    assert "insufficient idle processors" in statuses[f"1040.{SERVER}"].reason


def test_unknown_state_is_not_final() -> None:
    status = job_status({"job_state": "Z"})
    assert status.state is JobState.QUEUED and "'Z'" in status.reason


# --- exit statuses -----------------------------------------------------------------------

# (job number, our state, solver exit code, signal, what mint-bridge run exits with)
COMPLETED = [
    (1050, JobState.COMPLETED, 0, None, 0),
    (1051, JobState.FAILED, 3, None, 3),
    (1052, JobState.FAILED, None, 9, 137),  # 137: bash saw the solver die of SIGKILL
    (1053, JobState.FAILED, None, 9, 137),  # 265: the script's shell died of SIGKILL
    (1054, JobState.CANCELLED, None, 15, ExitCode.CANCELLED_AT_SITE),  # 271: qdel'd running
    (1055, JobState.CANCELLED, None, None, ExitCode.CANCELLED_AT_SITE),  # deleted while queued
]
LIMITS = [
    (1060, JobState.TIMEOUT, None, None, ExitCode.WALLTIME_EXCEEDED),  # -11 OVERLIMIT_WT
    (1061, JobState.OUT_OF_MEMORY, None, None, ExitCode.OUT_OF_MEMORY),  # -10 OVERLIMIT_MEM
    (1062, JobState.TIMEOUT, None, 15, ExitCode.WALLTIME_EXCEEDED),  # 271 past its walltime
    (1063, JobState.OUT_OF_MEMORY, None, 9, ExitCode.OUT_OF_MEMORY),  # 265 past its mem
    (1064, JobState.NODE_FAIL, None, None, ExitCode.NODE_FAILURE),  # -1 FAIL1
    (1065, JobState.FAILED, None, None, ExitCode.JOB_LOST),  # -9 STDOUTFAIL: no solver code
]


@pytest.mark.parametrize(
    ("name", "cases"), [("qstat_f1_completed.txt", COMPLETED), ("qstat_f1_limits.txt", LIMITS)]
)
def test_exit_statuses_reach_distinct_bridge_exit_codes(
    name: str, cases: list[tuple[int, JobState, int | None, int | None, int]]
) -> None:
    statuses = parse_status(fixture(name))
    assert len(statuses) == len(cases)
    for number, state, exit_code, signal, bridge_code in cases:
        status = statuses[f"{number}.{SERVER}"]
        assert (status.state, status.exit_code, status.signal) == (state, exit_code, signal), (
            number,
            status,
        )
        result = outcome(status)
        assert result.bridge_exit_code() == bridge_code, (number, status)
        # What goes over the wire must pass the protocol's own checks.
        assert JobOutcome.from_message(result.to_message()) == result


def test_reasons_name_the_torque_code() -> None:
    statuses = parse_status(fixture("qstat_f1_limits.txt"))
    assert "JOB_EXEC_OVERLIMIT_WT" in statuses[f"1060.{SERVER}"].reason
    assert "JOB_EXEC_FAIL1" in statuses[f"1064.{SERVER}"].reason
    assert "604 s of its 600 s walltime" in statuses[f"1062.{SERVER}"].reason
    assert "exit status 265" in statuses[f"1063.{SERVER}"].reason


@pytest.mark.parametrize(
    ("code", "state"),
    [
        (-3, JobState.NODE_FAIL),
        (-8, JobState.FAILED),
        (-12, JobState.TIMEOUT),
        (-13, JobState.NODE_FAIL),
        (-14, JobState.NODE_FAIL),
        (-99, JobState.NODE_FAIL),  # unknown to this table: a start failure all the same
    ],
)
def test_job_exec_codes(code: int, state: JobState) -> None:
    status = job_status({"job_state": "C", "exit_status": str(code)})
    assert status.state is state
    assert f"exit status {code}" in status.reason
    if code in JOB_EXEC:
        assert JOB_EXEC[code][0] in status.reason


@pytest.mark.parametrize(
    ("raw", "state", "signal"),
    [
        ("256", JobState.FAILED, None),  # 0x100 + 0 is no signal
        ("399", JobState.FAILED, None),  # beyond any signal number
        ("270", JobState.FAILED, 14),
        ("junk", JobState.FAILED, None),
    ],
)
def test_odd_exit_statuses_fail_without_inventing_codes(
    raw: str, state: JobState, signal: int | None
) -> None:
    status = job_status({"job_state": "C", "exit_status": raw})
    assert (status.state, status.exit_code, status.signal) == (state, None, signal)


def test_walltime_kill_without_usage_is_a_plain_signal() -> None:
    status = job_status({"job_state": "C", "exit_status": "265"})
    assert (status.state, status.signal) == (JobState.FAILED, 9)


# --- small parsers -------------------------------------------------------------------------


def test_qsub_output() -> None:
    assert parse_qsub(f"1042.{SERVER}\n") == f"1042.{SERVER}"
    assert parse_qsub("12\n") == "12"  # slurm-wlm-torque
    assert parse_qsub("qsub: warning: defaulting queue\n77[].srv\n") == "77[].srv"
    with pytest.raises(SchedulerError) as caught:
        parse_qsub("There was an error running the Slurm sbatch command.\n")
    assert caught.value.transient  # qsub exited 0: look the job up before submitting again


@pytest.mark.parametrize("bad", ["-x", "1 2", "123\n", "", "12.-srv", "$(id)"])
def test_only_job_ids_reach_qstat_and_qdel(bad: str) -> None:
    with pytest.raises(SchedulerError):
        check_native_id(bad)


def test_qselect_output() -> None:
    assert parse_qselect(f"\n1042.{SERVER}\n1043.{SERVER}\n") == f"1042.{SERVER}"
    assert parse_qselect("") is None


def test_durations_and_sizes() -> None:
    assert hms(90.2) == "00:01:31"
    assert hms(0.1) == "00:00:01"
    assert hms(100 * 3600) == "100:00:00"
    assert parse_walltime("72:00:00") == 259200
    assert parse_walltime("10:04") == 604
    assert parse_walltime("bogus") is None
    assert parse_size("1873412kb") == 1873412 * 1024
    assert parse_size("4096mb") == 4096 << 20
    assert parse_size("2gb") == 2 << 30
    assert parse_size("512") == 512
    assert parse_size("10kw") == 10 * 1024 * 8
    assert parse_size("lots") is None


def test_unknown_ids_only() -> None:
    stderr = fixture("qstat_unknown_job.stderr")
    assert unknown_ids_only(153, "", stderr)
    assert unknown_ids_only(153, "", "")  # slurm-wlm-torque: nothing known, nothing said
    assert not unknown_ids_only(1, "", "")
    noise = "Cannot connect to default server host 'torque01' - check pbs_server daemon\n"
    assert not unknown_ids_only(1, "", stderr + noise)


@pytest.mark.parametrize(
    ("name", "state"),
    [
        ("scheduler_out_walltime.txt", JobState.TIMEOUT),
        ("scheduler_out_memory.txt", JobState.OUT_OF_MEMORY),
        ("slurm_wlm_torque_scheduler_out_timeout.txt", JobState.TIMEOUT),
        ("slurm_wlm_torque_scheduler_out_memory.txt", JobState.OUT_OF_MEMORY),
        ("slurm_wlm_torque_scheduler_out_cancelled.txt", JobState.CANCELLED),
    ],
)
def test_kill_notices(name: str, state: JobState) -> None:
    notice = kill_notice(fixture(name))
    assert notice is not None and notice[0] is state


def test_no_kill_notice_in_ordinary_output() -> None:
    assert kill_notice("started\nsolver finished\n") is None


def test_find_job_named() -> None:
    text = fixture("slurm_wlm_torque_qstat_f1.txt")
    assert find_job_named(text, "mb4d1c2b3a5e6f7") == "5"
    assert find_job_named(text, "mbnosuchjob0000") is None


# --- the job script ----------------------------------------------------------------------


def test_directives(tmp_path: Path) -> None:
    spec = make_spec(
        tmp_path,
        walltime=3600.5,
        resources=Resources(
            cpus=2,
            nodes=1,
            tasks=4,
            memory_mb=4096,
            queue="batch",
            account="proj01",
            extra=("-l feature=bigmem", "-m n"),
        ),
    )
    lines = directives(spec)
    assert lines == [
        f"#PBS -N {job_name(spec.job_id)}",
        "#PBS -S /bin/bash",
        "#PBS -r n",
        "#PBS -j oe",
        f"#PBS -o {spec.control_dir}/{SCHEDULER_OUTPUT_FILE}",
        "#PBS -l walltime=01:00:01",
        "#PBS -l nodes=1:ppn=8",
        "#PBS -l mem=4096mb",
        "#PBS -q batch",
        "#PBS -A proj01",
        "#PBS -l feature=bigmem",
        "#PBS -m n",
    ]
    assert len(job_name(spec.job_id)) <= 15  # Torque's limit on job names


def test_several_nodes_use_pmem(tmp_path: Path) -> None:
    spec = make_spec(tmp_path, resources=Resources(nodes=2, tasks=6, memory_mb=1000))
    lines = directives(spec)
    assert "#PBS -l nodes=2:ppn=3" in lines
    assert "#PBS -l pmem=334mb" in lines  # per process slot, rounded up
    assert not any("walltime" in line for line in lines)


def test_no_resources_no_resource_lines(tmp_path: Path) -> None:
    lines = directives(make_spec(tmp_path))
    assert not any(line.startswith("#PBS -l") for line in lines)


def test_unsafe_path_stays_out_of_directives_but_reaches_qsub(tmp_path: Path) -> None:
    spec = make_spec(tmp_path, workdir_name="work dir 'quoted'")
    lines = directives(spec)
    assert not any(line.startswith("#PBS -o") for line in lines)
    argv = TorqueScheduler().submit_argv("/x/job.sh", spec)
    assert argv == [
        "qsub",
        "-o",
        f"{spec.control_dir}/{SCHEDULER_OUTPUT_FILE}",
        "-j",
        "oe",
        "/x/job.sh",
    ]


def test_script_keeps_hostile_values_inert(tmp_path: Path) -> None:
    """Run the script Torque would run: spaces, quotes and $(...) are data, not shell."""
    marker = tmp_path / "pwned"
    spec = make_spec(
        tmp_path,
        workdir_name="a dir with 'quotes' and $(touch " + str(marker) + ")",
        argv=["/bin/sh", "-c", 'printf "%s|" "$@" > args.txt', "sh", "$(touch x)", "a b", "'q'"],
        env={"MINT_PARAM_TITLE": '$(touch y) "x" `id`'},
        walltime=60,
    )
    script = render_script(spec, directives(spec))
    body = script.splitlines()
    # Every directive sits before the first command: qsub stops reading them there.
    first_command = next(i for i, line in enumerate(body) if line and not line.startswith("#"))
    assert all(not line.startswith("#PBS") for line in body[first_command:])
    path = Path(spec.control_dir) / "job.sh"
    path.write_text(script, encoding="utf-8")
    proc = subprocess.run(["bash", str(path)], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    assert (Path(spec.workdir) / "args.txt").read_text() == "$(touch x)|a b|'q'|"
    assert not marker.exists()
    assert not (Path(spec.workdir) / "x").exists() and not (Path(spec.workdir) / "y").exists()
    assert (Path(spec.control_dir) / EXIT_CODE_FILE).read_text() == "0\n"


# --- against scripted Torque commands -------------------------------------------------------


def handle(tmp_path: Path, native_id: str) -> JobHandle:
    control = tmp_path / "jobs" / native_id / ".mint-bridge"
    control.mkdir(parents=True)
    return JobHandle("0f8fad5b-d9cb-469f-a165-70867728950e", native_id, str(control))


def test_one_qstat_call_for_all_jobs_and_unknown_ids_do_not_fail_the_pass(
    tmp_path: Path, fakes: FakeCommands
) -> None:
    # Real Torque prints the jobs it knows, names the others on stderr and exits 153.
    fakes.add(
        "qstat",
        stdout=fixture("qstat_f1_active.txt"),
        stderr=fixture("qstat_unknown_job.stderr") + f"qstat: Unknown Job Id Error 1098.{SERVER}\n",
        code=153,
    )
    running = handle(tmp_path, f"1042.{SERVER}")
    gone_with_code = handle(tmp_path, f"1099.{SERVER}")
    write_control(gone_with_code.control_dir, EXIT_CODE_FILE, "4\n")
    gone = handle(tmp_path, f"1098.{SERVER}")
    result = scheduler().status([running, gone_with_code, gone])
    assert fakes.calls() == [["-f", "-1", f"1042.{SERVER}", f"1099.{SERVER}", f"1098.{SERVER}"]]
    assert result[running.native_id].state is JobState.RUNNING
    assert result[gone_with_code.native_id] == JobOutcome(
        JobState.FAILED, exit_code=4, reason="solver exited with code 4"
    )
    assert result[gone.native_id].state is JobState.LOST
    assert result[gone.native_id].bridge_exit_code() == ExitCode.JOB_LOST


def test_slurm_wlm_torque_knowing_none_of_the_ids(tmp_path: Path, fakes: FakeCommands) -> None:
    fakes.add("qstat", code=153)  # prints nothing at all
    job = handle(tmp_path, "41")
    write_control(job.control_dir, EXIT_CODE_FILE, "0\n")
    assert scheduler().status([job])["41"].state is JobState.COMPLETED


def test_other_qstat_failures_hold_the_last_known_state(
    tmp_path: Path, fakes: FakeCommands
) -> None:
    adapter = scheduler()
    job = handle(tmp_path, f"1042.{SERVER}")
    fakes.add("qstat", stdout=fixture("qstat_f1_active.txt"))
    assert adapter.status([job])[job.native_id].state is JobState.RUNNING
    fakes.add("qstat", stderr="Problem loading jobs.\n", code=255)  # slurmctld away
    assert adapter.status([job])[job.native_id].state is JobState.RUNNING
    fakes.add("qstat", stderr="qstat: Unauthorized Request  MSG=error\n", code=159)
    with pytest.raises(SchedulerError):
        adapter.status([job])


def test_completed_without_exit_status_yields_to_the_recorded_code(
    tmp_path: Path, fakes: FakeCommands
) -> None:
    """slurm-wlm-torque lists every ended job as C without an exit_status."""
    fakes.add("qstat", stdout=fixture("slurm_wlm_torque_qstat_f1.txt"))
    job = handle(tmp_path, "4")
    write_control(job.control_dir, EXIT_CODE_FILE, "3\n")
    assert scheduler().status([job])["4"] == JobOutcome(
        JobState.FAILED, exit_code=3, reason="solver exited with code 3"
    )


@pytest.mark.parametrize(
    ("notice", "state", "code"),
    [
        ("slurm_wlm_torque_scheduler_out_timeout.txt", JobState.TIMEOUT, 82),
        ("slurm_wlm_torque_scheduler_out_memory.txt", JobState.OUT_OF_MEMORY, 83),
        ("slurm_wlm_torque_scheduler_out_cancelled.txt", JobState.CANCELLED, 86),
    ],
)
def test_kill_notice_names_how_an_ended_job_died(
    tmp_path: Path, fakes: FakeCommands, notice: str, state: JobState, code: int
) -> None:
    fakes.add("qstat", stdout=fixture("slurm_wlm_torque_qstat_f1.txt"))
    job = handle(tmp_path, "4")
    write_control(job.control_dir, SCHEDULER_OUTPUT_FILE, fixture(notice))
    result = scheduler().status([job])["4"]
    assert result.state is state
    assert result.bridge_exit_code() == code


def test_torque_notice_turns_a_signal_into_a_timeout(tmp_path: Path, fakes: FakeCommands) -> None:
    fakes.add("qstat", stdout=fixture("qstat_f1_completed.txt"))
    job = handle(tmp_path, f"1053.{SERVER}")  # 265, usage under the limits
    write_control(job.control_dir, SCHEDULER_OUTPUT_FILE, fixture("scheduler_out_walltime.txt"))
    result = scheduler().status([job])[job.native_id]
    assert (result.state, result.signal) == (JobState.TIMEOUT, 9)
    assert "walltime 3610 exceeded limit 3600" in result.reason


def test_submit_writes_the_script_and_runs_qsub(tmp_path: Path, fakes: FakeCommands) -> None:
    fakes.add("qsub", stdout=f"1042.{SERVER}\n")
    spec = make_spec(tmp_path, walltime=120, resources=Resources(cpus=4))
    assert scheduler().submit(spec) == f"1042.{SERVER}"
    script = Path(spec.control_dir) / "job.sh"
    assert fakes.calls() == [
        ["-o", f"{spec.control_dir}/{SCHEDULER_OUTPUT_FILE}", "-j", "oe", str(script)]
    ]
    text = script.read_text()
    assert text.startswith("#!/bin/bash\n#PBS -N mb")
    assert "#PBS -l walltime=00:02:00\n#PBS -l nodes=1:ppn=4\n" in text
    assert os.stat(script).st_mode & 0o777 == 0o700


def test_submit_failure_carries_qsub_s_message(tmp_path: Path, fakes: FakeCommands) -> None:
    fakes.add(
        "qsub",
        stderr="qsub: submit error (Unknown queue MSG=cannot locate queue)\n",
        code=170,
    )
    with pytest.raises(SchedulerError, match="Unknown queue") as caught:
        scheduler().submit(make_spec(tmp_path))
    assert not caught.value.transient


def test_lookup_uses_qselect_when_there_is_one(fakes: FakeCommands) -> None:
    fakes.add("qselect", stdout=f"1042.{SERVER}\n")
    assert scheduler().find_by_name("mb9a8b7c6d5e4f3") == f"1042.{SERVER}"
    assert fakes.calls() == [["-N", "mb9a8b7c6d5e4f3"]]


def test_lookup_reads_job_names_without_qselect(fakes: FakeCommands) -> None:
    fakes.add("qstat", stdout=fixture("slurm_wlm_torque_qstat_f1.txt"))
    assert scheduler().find_by_name("mb4d1c2b3a5e6f7") == "5"
    assert fakes.calls() == [["-f", "-1"]]
    fakes.add("qstat", code=153)  # no jobs at all
    assert scheduler().find_by_name("mb4d1c2b3a5e6f7") is None


def test_cancel(tmp_path: Path, fakes: FakeCommands) -> None:
    job = handle(tmp_path, f"1042.{SERVER}")
    fakes.add("qdel")
    scheduler().cancel(job)
    assert fakes.calls() == [[f"1042.{SERVER}"]]


@pytest.mark.parametrize(
    "message",
    [
        f"qdel: Unknown Job Id Error {SERVER}\n",
        "qdel: Request invalid for state of job MSG=invalid state for job - COMPLETE\n",
    ],
)
def test_cancel_of_an_ended_job_is_not_an_error(
    tmp_path: Path, fakes: FakeCommands, message: str
) -> None:
    fakes.add("qdel", stderr=message, code=153)
    scheduler().cancel(handle(tmp_path, f"1050.{SERVER}"))


def test_cancel_asks_qstat_when_qdel_says_nothing(tmp_path: Path, fakes: FakeCommands) -> None:
    """slurm-wlm-torque's qdel exits 1 silently for a job that has ended."""
    fakes.add("qdel", code=1)
    fakes.add("qstat", stdout=fixture("slurm_wlm_torque_qstat_f1.txt"))
    scheduler().cancel(handle(tmp_path, "4"))  # C: ended, fine
    with pytest.raises(SchedulerError):
        scheduler().cancel(handle(tmp_path, "5"))  # R: the cancel really failed


def test_an_extra_line_cannot_start_a_line_of_shell(tmp_path: Path) -> None:
    spec = make_spec(tmp_path, resources=Resources(extra=("-l mem=1gb\ntouch /tmp/pwned",)))
    with pytest.raises(SchedulerError, match="printable"):
        directives(spec)


def test_a_colon_in_the_output_path_names_the_submit_host(tmp_path: Path) -> None:
    spec = make_spec(tmp_path, workdir_name="work:2025")
    path = TorqueScheduler().submit_argv("/x/job.sh", spec)[2]
    host, _, rest = path.partition(":")
    assert host and rest == f"{spec.control_dir}/{SCHEDULER_OUTPUT_FILE}"
    assert not any(line.startswith("#PBS -o") for line in directives(spec))


def test_a_kill_notice_beats_exit_status_0_without_a_recorded_code(
    tmp_path: Path, fakes: FakeCommands
) -> None:
    """Torque before 2.5.6 reported limit kills as exit_status 0."""
    fakes.add("qstat", stdout=fixture("qstat_f1_completed.txt"))
    killed = handle(tmp_path, f"1050.{SERVER}")
    write_control(killed.control_dir, SCHEDULER_OUTPUT_FILE, fixture("scheduler_out_walltime.txt"))
    assert scheduler().status([killed])[killed.native_id].state is JobState.TIMEOUT
    write_control(killed.control_dir, EXIT_CODE_FILE, "0\n")  # the script did finish after all
    assert scheduler().status([killed])[killed.native_id].state is JobState.COMPLETED


# --- recovering a submit whose id was never recorded -----------------------------------------


@pytest.mark.parametrize(
    ("env", "recorded"),
    [
        ({"PBS_JOBID": f"1042.{SERVER}", "SLURM_JOB_ID": "9"}, f"1042.{SERVER}\n"),
        ({"SLURM_JOB_ID": "5"}, "5\n"),  # slurm-wlm-torque leaves PBS_JOBID unset
    ],
)
def test_the_script_records_its_own_id_first(
    tmp_path: Path, env: dict[str, str], recorded: str
) -> None:
    spec = make_spec(tmp_path)
    script = Path(spec.control_dir) / "job.sh"
    script.write_text(
        render_script(spec, directives(spec), id_variables=TorqueScheduler.job_id_variables)
    )
    proc = subprocess.run(
        ["bash", str(script)], env={"PATH": "/usr/bin:/bin", **env}, capture_output=True
    )
    assert proc.returncode == 0, proc.stderr
    assert (Path(spec.control_dir) / SELF_ID_FILE).read_text() == recorded


def test_recover_reads_the_recorded_id_before_asking_torque(
    tmp_path: Path, fakes: FakeCommands
) -> None:
    spec = make_spec(tmp_path)
    write_control(spec.control_dir, SELF_ID_FILE, f"1042.{SERVER}\n")
    assert scheduler().recover(spec) == f"1042.{SERVER}"
    assert fakes.calls() == []


def test_recover_finds_a_queued_job_with_qselect(tmp_path: Path, fakes: FakeCommands) -> None:
    spec = make_spec(tmp_path)
    fakes.add("qselect", stdout=f"1043.{SERVER}\n")
    assert scheduler().recover(spec) == f"1043.{SERVER}"
    assert fakes.calls() == [["-N", job_name(spec.job_id)]]
    fakes.add("qselect")
    assert scheduler().recover(spec) is None


def test_recover_fails_when_the_server_does_not_answer(tmp_path: Path, fakes: FakeCommands) -> None:
    fakes.add("qselect", stderr="qselect: cannot connect to server torque01 (errno=111)\n", code=1)
    with pytest.raises(SchedulerError) as caught:
        scheduler().recover(make_spec(tmp_path))
    assert caught.value.transient


def test_submit_refuses_a_pbs_pro_server_before_qsub(tmp_path: Path, fakes: FakeCommands) -> None:
    version = (Path(__file__).parent / "fixtures" / "pbspro" / "real_qstat_version.txt").read_text()
    fakes.add("qstat", stdout=version)
    fakes.add("qsub", stdout=f"1042.{SERVER}\n")
    with pytest.raises(SiteConfigInvalid, match='set scheduler = "pbspro"') as caught:
        scheduler().submit(make_spec(tmp_path))
    assert caught.value.exit_code == ExitCode.CONFIG_INVALID
    assert "OpenPBS 23.06.06" in caught.value.message
    assert fakes.calls() == [["--version"]]  # no qsub: nothing left running unfollowed


def test_submit_goes_ahead_on_torque(tmp_path: Path, fakes: FakeCommands) -> None:
    fakes.add("qstat", stdout="Version: 6.1.3\nCommit: abc\n")
    fakes.add("qsub", stdout=f"1042.{SERVER}\n")
    adapter = scheduler()
    assert adapter.submit(make_spec(tmp_path)) == f"1042.{SERVER}"
    assert adapter.submit(make_spec(tmp_path)) == f"1042.{SERVER}"
    assert fakes.calls().count(["--version"]) == 1  # asked once per adapter
