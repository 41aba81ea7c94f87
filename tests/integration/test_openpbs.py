"""The PBS Pro and Torque adapters against a real OpenPBS 23.06.06, through ``mint-bridge run``.

OpenPBS runs in namespaces of its own (``tests.support.openpbs``); every command of these tests
and the site code itself (``mint-bridge run`` with a ``local`` site whose commands use
``scheduler = "pbspro"`` or ``"torque"``) run inside them as an ordinary account. Job history
is PBS's default (off) unless a test turns it on; the ``history`` fixture runs a test both ways.

pbs_mom checks limits every 1-2 s and the queue's ``kill_delay`` is 2 s (SIGTERM to SIGKILL
after a walltime or ``qdel``), so the limit tests end in seconds.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import pytest

from bridge.core.errors import ExitCode
from tests.support.openpbs import OpenPbs, OpenPbsUnavailable, start_openpbs, user_dir
from tests.support.services import unavailable
from tests.support.site_toml import site_toml, toml_string
from tests.support.waiting import native_id, wait_until

TESTPROG = Path(__file__).parent / "programs" / "testprog.py"


@dataclass
class PbsSite:
    root: Path  # owned by the job account: site.toml, bridge.toml, work/, site.log
    bridge_config: Path
    work_base: Path


@pytest.fixture(scope="module")
def openpbs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OpenPbs]:
    try:
        pbs = start_openpbs(tmp_path_factory.mktemp("openpbs"))
    except (OpenPbsUnavailable, OSError, subprocess.SubprocessError) as exc:
        unavailable(f"cannot start OpenPBS: {exc}")
    yield pbs
    pbs.stop()


@pytest.fixture(params=[False, True], ids=["history-off", "history-on"])
def history(request: pytest.FixtureRequest, openpbs: OpenPbs) -> Iterator[bool]:
    openpbs.set_history(request.param)
    yield request.param
    openpbs.set_history(False)


def commands(scheduler: str) -> dict[str, dict[str, Any]]:
    def on(command: dict[str, Any]) -> dict[str, Any]:
        return {**command, "scheduler": scheduler}

    return {
        f"checksum-{scheduler}": on({"program": TESTPROG, "args": ["checksum"]}),
        f"fail-{scheduler}": on({
            "program": TESTPROG,
            "args": ["exit", "{code}"],
            "params": {"code": {"type": "int", "default": 3}},
        }),
        f"ticks-{scheduler}": on({
            "program": TESTPROG,
            "args": ["ticks", "{count}", "{delay}"],
            "params": {
                "count": {"type": "int", "default": 3},
                "delay": {"type": "float", "default": 0.2},
            },
        }),
    }


@pytest.fixture(scope="module")
def pbs_site(openpbs: OpenPbs) -> Iterator[PbsSite]:
    root = user_dir("mb-pbs-site-")
    work_base = root / "work"
    work_base.mkdir()
    shutil.chown(work_base, openpbs.uid, openpbs.gid)
    audit_dir = root / "audit"  # the site account's own: it writes the site's audit log
    audit_dir.mkdir(mode=0o700)
    shutil.chown(audit_dir, openpbs.uid, openpbs.gid)
    (root / "site.toml").write_text(
        site_toml(
            site={
                "name": "pbs-test",
                "work_base": work_base,
                "retention": "1h",
                "log_file": root / "site.log",
                "audit_dir": audit_dir,
            },
            scheduler={"poll_interval": 0.5, "retries": 3, "retry_wait": "0.2s"},
            commands={**commands("pbspro"), **commands("torque")},
        )
    )
    bridge_config = root / "bridge.toml"
    bridge_config.write_text(
        f'[sites.pbs]\nmethod = "local"\nsite_config = {toml_string(root / "site.toml")}\n'
    )
    yield PbsSite(root, bridge_config, work_base)
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def cwd() -> Iterator[Path]:
    """Where ``mint-bridge run`` starts (inputs, results): owned by the job account."""
    path = user_dir("mb-pbs-run-")
    yield path
    shutil.rmtree(path, ignore_errors=True)


def start_bridge(pbs: OpenPbs, site: PbsSite, cwd: Path, *args: str) -> subprocess.Popen[bytes]:
    argv = [sys.executable, "-m", "bridge.cli", "run", "--config", str(site.bridge_config)]
    return subprocess.Popen(
        pbs.argv([*argv, "--site", "pbs", *args], user=True, cwd=cwd),
        cwd=cwd,
        env=pbs.env(HOME=str(site.root)),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def run_bridge(
    pbs: OpenPbs, site: PbsSite, cwd: Path, *args: str, timeout: float = 120
) -> tuple[int, bytes, bytes]:
    proc = start_bridge(pbs, site, cwd, *args)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        raise AssertionError(f"mint-bridge run did not end: {err.decode()[-2000:]}") from None
    return proc.returncode, out, err


# --- pbspro: the everyday cases -----------------------------------------------------------


def test_a_job_runs_and_returns_its_results(
    openpbs: OpenPbs, pbs_site: PbsSite, cwd: Path, history: bool
) -> None:
    data = b"some input\n" * 1000
    (cwd / "input.bin").write_bytes(data)
    shutil.chown(cwd / "input.bin", openpbs.uid, openpbs.gid)
    job_id = str(uuid.uuid4())
    code, out, err = run_bridge(
        openpbs, pbs_site, cwd, "--command", "checksum-pbspro", "-i", "input.bin",
        "--job-id", job_id,
    )  # fmt: skip
    assert code == 0, err.decode()
    assert out == b"checked 1 files\n"
    assert b"a line on stderr" in err
    digest = hashlib.sha256(data).hexdigest()
    assert (cwd / "sums.txt").read_text() == f"{digest}  input.bin\n"
    assert (cwd / "sub" / "dir" / "nested.txt").read_text() == "nested result\n"
    assert native_id(pbs_site.work_base, job_id).endswith(".pbstest")


def test_the_solvers_exit_code_comes_back_while_pbs_keeps_the_job_or_not(
    openpbs: OpenPbs, pbs_site: PbsSite, cwd: Path, history: bool
) -> None:
    # Long enough to be polled while it runs: without history, qstat -x lists no running job.
    code, out, err = run_bridge(
        openpbs, pbs_site, cwd, "--command", "ticks-pbspro", "-p", "count=8", "-p", "delay=0.5"
    )
    assert code == 0, err.decode()
    assert out == b"".join(b"tick %d\n" % i for i in range(8))
    assert (cwd / "ticks.txt").read_text() == "8\n"
    code, out, err = run_bridge(openpbs, pbs_site, cwd, "--command", "fail-pbspro")
    assert code == 3, err.decode()
    assert out == b"about to fail\n"


def test_walltime_exceeded_is_reported_as_such(
    openpbs: OpenPbs, pbs_site: PbsSite, cwd: Path, history: bool
) -> None:
    job_id = str(uuid.uuid4())
    code, _, err = run_bridge(
        openpbs, pbs_site, cwd, "--command", "ticks-pbspro", "-p", "count=1000", "-p",
        "delay=0.5", "--walltime", "3s", "--job-id", job_id,
    )  # fmt: skip
    assert code == ExitCode.WALLTIME_EXCEEDED, err.decode()
    control = pbs_site.work_base / job_id / ".mint-bridge"
    outcome = json.loads((control / "outcome.json").read_text())
    assert outcome["state"] == "timeout"
    # With history PBS says JOB_EXEC_KILL_WALLTIME; without, pbs_mom's notice says it.
    expected = "JOB_EXEC_KILL_WALLTIME" if history else "job killed: walltime"
    assert expected in outcome["reason"], outcome


def test_sigterm_cancels_the_job_and_its_outcome_is_kept(
    openpbs: OpenPbs, pbs_site: PbsSite, cwd: Path, history: bool
) -> None:
    job_id = str(uuid.uuid4())
    proc = start_bridge(
        openpbs, pbs_site, cwd, "--command", "ticks-pbspro", "-p", "count=1000",
        "--job-id", job_id,
    )  # fmt: skip
    wait_until(
        lambda: (cwd / "ticks.txt").exists() or bool(native_id(pbs_site.work_base, job_id)), "an id"
    )
    native = native_id(pbs_site.work_base, job_id)
    control = pbs_site.work_base / job_id / ".mint-bridge"
    wait_until(lambda: (control / "scheduler_job_id").exists(), "the job to start")
    bridge = next(
        p for p in psutil.Process(proc.pid).children(recursive=True) if "bridge.cli" in p.cmdline()
    )
    bridge.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == ExitCode.CANCELLED, err.decode()
    other = user_dir("mb-pbs-other-")

    def settled() -> bool:
        # Not over within the cancel's few seconds of confirmation: the site's next status
        # pass, made for any other job, settles it.
        if not (control / "outcome.json").exists():
            argv = [sys.executable, "-c", POLL_SNIPPET, str(pbs_site.work_base), str(other)]
            done = openpbs.run(*argv, user=True)
            assert done.returncode == 0, done.stderr
        return (control / "outcome.json").exists()

    try:
        wait_until(settled, "a status pass to settle the job")
    finally:
        shutil.rmtree(other, ignore_errors=True)
    assert native not in openpbs.job_ids()
    outcome = json.loads((control / "outcome.json").read_text())
    assert outcome["state"] == "cancelled", outcome
    assert "deleted" in outcome["reason"], outcome


POLL_SNIPPET = """
import sys
from bridge.site.status_cache import SharedStatus
from schedulers.base import JobHandle
from schedulers.pbspro import PbsProScheduler
adapter = PbsProScheduler()
adapter.poll_interval = 5.0  # the shared pass over all of the site's jobs
SharedStatus(sys.argv[1], adapter).get(JobHandle("x", "999999.pbstest", sys.argv[2]))
"""


# --- OpenPBS's JSON as it stands ------------------------------------------------------------

STATUS_SNIPPET = """
import json, sys
from schedulers.base import JobHandle
from schedulers.pbspro import PbsProScheduler
pairs = zip(sys.argv[1::2], sys.argv[2::2])
handles = [JobHandle("j", native, control) for native, control in pairs]
outcomes = PbsProScheduler().status(handles)
print(json.dumps({k: v.to_message() for k, v in outcomes.items()}))
"""


def test_a_job_printing_invalid_json_fails_no_other_job(
    openpbs: OpenPbs, pbs_site: PbsSite, cwd: Path, history: bool
) -> None:
    # OpenPBS 23.06.06 prints Submit_arguments unescaped: tr '\"\0\"' is "Invalid \escape".
    broken = openpbs.run("qsub", "-h", "--", "/usr/bin/tr", '\\"\\0\\"', "x", user=True)
    plain = openpbs.run("qsub", "-h", "--", "/bin/true", user=True)
    assert broken.returncode == 0 and plain.returncode == 0, broken.stderr + plain.stderr
    ids = [broken.stdout.strip(), plain.stdout.strip()]
    try:
        raw = openpbs.run("qstat", "-f", "-F", "json", ids[0], user=True).stdout
        with pytest.raises(json.JSONDecodeError, match="Invalid \\\\escape"):
            json.loads(raw)
        argv = [sys.executable, "-c", STATUS_SNIPPET]
        for native in ids:
            argv += [native, str(cwd)]
        done = openpbs.run(*argv, user=True)
        assert done.returncode == 0, done.stderr
        outcomes = json.loads(done.stdout)
        assert {k: v["state"] for k, v in outcomes.items()} == dict.fromkeys(ids, "held")
    finally:
        openpbs.run("qdel", *ids, user=True)


# --- the torque adapter meets PBS's commands ------------------------------------------------


def test_torque_against_pbs_pro_says_which_scheduler_to_use_and_submits_nothing(
    openpbs: OpenPbs, pbs_site: PbsSite, cwd: Path
) -> None:
    openpbs.set_history(True)  # so that even an ended job would still be listed
    try:
        before = openpbs.run("qselect", "-x").stdout.split()
        code, _, err = run_bridge(openpbs, pbs_site, cwd, "--command", "checksum-torque")
        assert code == ExitCode.CONFIG_INVALID, err.decode()
        assert b'set scheduler = "pbspro"' in err
        assert b"OpenPBS 23.06.06" in err
        assert openpbs.run("qselect", "-x").stdout.split() == before  # nothing was submitted
    finally:
        openpbs.set_history(False)


# --- many jobs, and a site process killed mid-job ----------------------------------------

MANY_SNIPPET = """
import json, os, sys, uuid
from schedulers.base import JobHandle, JobSpec
from schedulers.pbspro import PbsProScheduler
root = sys.argv[1]
adapter = PbsProScheduler()
handles = []
for _ in range(20):
    job_id = str(uuid.uuid4())
    control = os.path.join(root, job_id, ".mint-bridge")
    os.makedirs(control)
    spec = JobSpec(job_id, os.path.dirname(control), control, ["/bin/sleep", "20"], {},
                   os.path.join(control, "stdout"), os.path.join(control, "stdout"))
    handles.append(JobHandle(job_id, adapter.submit(spec), control))
calls = []
execute = adapter.execute
def counting(argv, *args, **kwargs):
    calls.append(argv)
    return execute(argv, *args, **kwargs)
adapter.execute = counting
first = adapter.status(handles)
first_calls, calls[:] = list(calls), []
outcomes = adapter.status(handles)
print(json.dumps({"first": first_calls, "calls": calls, "ids": [h.native_id for h in handles],
                  "states": [outcomes[h.native_id].state.value for h in handles]}))
"""


def test_twenty_jobs_are_polled_with_one_qstat(
    openpbs: OpenPbs, cwd: Path, history: bool
) -> None:
    done = openpbs.run(sys.executable, "-c", MANY_SNIPPET, str(cwd), user=True, timeout=120)
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    try:
        # Without history the first pass learns it (qstat -x, then qstat); later ones are one.
        options = [call[1:-20] for call in answer["first"]]
        assert options == ([["-x", "-f", "-F", "json"]] if history else [
            ["-x", "-f", "-F", "json"], ["-f", "-F", "json"]
        ])  # fmt: skip
        assert len(answer["calls"]) == 1, answer["calls"]
        assert answer["calls"][0][1:-20] == ["-x", "-f", "-F", "json"][(0 if history else 1) :]
        assert answer["calls"][0][-20:] == answer["ids"]
        assert set(answer["states"]) <= {"queued", "running"}
        assert answer["states"].count("queued") >= 18  # two CPUs: the rest wait
    finally:
        deleted = openpbs.run("qdel", *answer["ids"], user=True)
        # Gone before the next test submits, which would otherwise queue behind them.
        wait_until(lambda: not set(answer["ids"]) & set(openpbs.job_ids()), "the jobs to go")
    assert deleted.returncode == 0, deleted.stderr


def test_a_killed_bridge_reattaches_to_the_same_pbs_job(
    openpbs: OpenPbs, pbs_site: PbsSite, cwd: Path, history: bool
) -> None:
    job_id = str(uuid.uuid4())
    args = ["--command", "ticks-pbspro", "-p", "count=16", "-p", "delay=0.5", "--job-id", job_id]
    first = start_bridge(openpbs, pbs_site, cwd, *args)
    control = pbs_site.work_base / job_id / ".mint-bridge"
    wait_until(lambda: (control / "scheduler_job_id").exists(), "the job to start")
    native = native_id(pbs_site.work_base, job_id)
    for proc in psutil.Process(first.pid).children(recursive=True):
        proc.kill()  # the bridge and the site entry it started: gone without a word
    first.kill()
    first.communicate(timeout=30)
    code, out, err = run_bridge(openpbs, pbs_site, cwd, *args)
    assert code == 0, err.decode()
    assert out.endswith(b"tick 15\n")
    assert (cwd / "ticks.txt").read_text() == "16\n"
    assert native_id(pbs_site.work_base, job_id) == native
    name = f"job name = mb{job_id.replace('-', '')[:13]},"
    assert openpbs.log("server").count(name) == 1  # one qsub in all


def test_a_qdel_at_the_site_reaches_the_bridge(
    openpbs: OpenPbs, pbs_site: PbsSite, cwd: Path, history: bool
) -> None:
    job_id = str(uuid.uuid4())
    proc = start_bridge(
        openpbs, pbs_site, cwd, "--command", "ticks-pbspro", "-p", "count=1000",
        "--job-id", job_id,
    )  # fmt: skip
    control = pbs_site.work_base / job_id / ".mint-bridge"
    wait_until(lambda: (control / "scheduler_job_id").exists(), "the job to start")
    assert openpbs.run("qdel", native_id(pbs_site.work_base, job_id), user=True).returncode == 0
    _, err = proc.communicate(timeout=60)
    if history:  # Exit_status 271, substate 91: deleted while running
        assert proc.returncode == ExitCode.CANCELLED_AT_SITE, err.decode()
        assert b"deleted while running" in err
    else:  # PBS forgets the job and its Exit_status at once, and pbs_mom leaves no notice
        assert proc.returncode == ExitCode.JOB_LOST, err.decode()
        assert b"it started but recorded no exit code" in err
        assert b"deleted at the site" in err
