"""Real jobs through ``mint-bridge run`` on a real single-node Slurm (the ``slurm`` scheduler).

The bridge reaches the site with the ``local`` method (the site entry as a child process, the
same code SSH runs); every command of the site config runs under ``scheduler = "slurm"``.
The walltime test needs Slurm's smallest time limit (1 minute, checked every 30 s), so its job
starts when the module does and is only collected by the last test.
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

from bridge.core.errors import ExitCode
from schedulers.batch_script import job_name
from schedulers.slurm_output import LIVE_STATES, parse_scontrol
from tests.support.slurm import SlurmCluster
from tests.support.waiting import native_id, wait_until

# The session-wide `slurm` fixture (a real cluster), shared with other Slurm-backed test modules.
pytest_plugins = ["tests.integration.slurm_fixtures"]

TESTPROG = Path(__file__).parent / "programs" / "testprog.py"
# Characters a work dir may hold that mean something to a shell or to sbatch; a backslash
# is the one Slurm cannot write output under (the adapter refuses it with a clear message).
HOSTILE = "a b 'q' \"d\" $(touch pwned) `touch pwned2` #h ; 50% %j"
MEMHOG = """#!/usr/bin/env python3
import time
blocks = []
for _ in range(40):  # 800 MB in 20 MB steps, each written so it counts as resident
    blocks.append(b"\\1" * (20 << 20))
    time.sleep(0.05)
time.sleep(30)
"""


@dataclass
class SlurmSite:
    root: Path
    bridge_config: Path
    work_base: Path
    hostile_work_base: Path
    env: dict[str, str]


def toml_string(value: object) -> str:
    return json.dumps(str(value))  # a JSON string is a valid TOML basic string


def site_config(work_base: Path, log_file: Path, memhog: Path) -> str:
    prog = toml_string(TESTPROG)
    return f"""
[site]
name = "slurm-test"
work_base = {toml_string(work_base)}
retention = "1h"
log_file = {toml_string(log_file)}

[scheduler]
poll_interval = 0.5
retries = 5
retry_wait = "0.1s"
command_timeout = 20

[commands.checksum]
program = {prog}
args = ["checksum"]
scheduler = "slurm"

[commands.fail]
program = {prog}
args = ["exit", "{{code}}"]
scheduler = "slurm"
[commands.fail.params.code]
type = "int"
default = 3

[commands.ticks]
program = {prog}
args = ["ticks", "{{count}}", "{{delay}}"]
scheduler = "slurm"
[commands.ticks.params.count]
type = "int"
default = 3
[commands.ticks.params.delay]
type = "float"
default = 0.2

[commands.argv]
program = {prog}
args = ["argv", "{{label}}", "{{free}}"]
scheduler = "slurm"
[commands.argv.params.label]
type = "string"
default = "x"
[commands.argv.params.free]
type = "string"
pattern = ".*"
default = ""

[commands.memhog]
program = {toml_string(memhog)}
scheduler = "slurm"
[commands.memhog.resources]
memory = "100MiB"
cpus = 1
"""


@pytest.fixture(scope="module")
def slurm_site(slurm: SlurmCluster, tmp_path_factory: pytest.TempPathFactory) -> SlurmSite:
    root = tmp_path_factory.mktemp("slurm-site")
    work_base, hostile = root / "work", root / HOSTILE / "work"
    work_base.mkdir()
    hostile.mkdir(parents=True)
    memhog = root / "memhog.py"
    memhog.write_text(MEMHOG)
    memhog.chmod(0o755)
    (root / "site.toml").write_text(site_config(work_base, root / "site.log", memhog))
    (root / "hostile.toml").write_text(site_config(hostile, root / "hostile.log", memhog))
    bridge_config = root / "bridge.toml"
    bridge_config.write_text(
        f"""
[sites.slurm]
method = "local"
site_config = {toml_string(root / "site.toml")}

[sites.hostile]
method = "local"
site_config = {toml_string(root / "hostile.toml")}
"""
    )
    return SlurmSite(root, bridge_config, work_base, hostile, dict(slurm.env))


def start_bridge(
    site: SlurmSite, cwd: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    argv = [sys.executable, "-m", "bridge.cli", "run", "--config", str(site.bridge_config)]
    return subprocess.Popen(
        [*argv, *args],
        cwd=cwd,
        env=env or site.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def run_bridge(
    site: SlurmSite, cwd: Path, *args: str, env: dict[str, str] | None = None
) -> tuple[int, bytes, bytes]:
    proc = start_bridge(site, cwd, *args, env=env)
    out, err = proc.communicate(timeout=120)
    return proc.returncode, out, err


def live_state(cluster: SlurmCluster, job: str) -> str:
    """The job's state if squeue lists it as not ended, else ''."""
    # squeue fails with "Invalid job id specified" for a single id it no longer knows.
    out = cluster.run(
        "squeue", "-h", f"--jobs={job}", f"--states={','.join(LIVE_STATES)}", "--format=%T"
    ).stdout
    return out.strip()


def slurm_jobs_named(cluster: SlurmCluster, job_id: str) -> list[str]:
    """Every Slurm job (any state) submitted for this mint-bridge job."""
    out = cluster.run("squeue", "-h", "--states=all", f"--name={job_name(job_id)}", "--format=%i")
    return out.stdout.split()


# --- the walltime job runs from the start of the module (Slurm's limit is 1 minute at least) ---


@pytest.fixture(scope="module", autouse=True)
def walltime_job(
    slurm_site: SlurmSite, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    job_id = str(uuid.uuid4())
    proc = start_bridge(
        slurm_site, tmp_path_factory.mktemp("walltime"), "--site", "slurm", "--command", "ticks",
        "-p", "count=100000", "-p", "delay=0.5", "--walltime", "1m", "--job-id", job_id,
    )  # fmt: skip
    yield proc, job_id
    if proc.poll() is None:  # the module was cut short: cancel the job like qdel would
        proc.terminate()
        try:
            proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()


# --- jobs ------------------------------------------------------------------------------------


def test_a_job_runs_under_slurm_and_returns_its_results(
    slurm_site: SlurmSite,
    slurm: SlurmCluster,
    tmp_path: Path,
) -> None:
    data = os.urandom(100_000)
    (tmp_path / "input.bin").write_bytes(data)
    job_id = str(uuid.uuid4())
    code, out, err = run_bridge(
        slurm_site, tmp_path, "--site", "slurm", "--command", "checksum", "-i", "input.bin",
        "--job-id", job_id,
    )  # fmt: skip
    assert code == 0, err.decode()
    assert out == b"checked 1 files\n"
    assert b"a line on stderr" in err
    digest = hashlib.sha256(data).hexdigest()
    assert (tmp_path / "sums.txt").read_text() == f"{digest}  input.bin\n"
    assert (tmp_path / "sub" / "dir" / "nested.txt").read_text() == "nested result\n"
    assert not (tmp_path / ".mint-bridge").exists()
    slurm_id = native_id(slurm_site.work_base, job_id)
    assert slurm_id.isdigit()
    assert slurm_jobs_named(slurm, job_id) == [slurm_id]
    state = parse_scontrol(slurm.run("scontrol", "show", "job", "-o", slurm_id).stdout)
    assert state[slurm_id].state.value == "completed"


def test_the_solvers_exit_code_comes_back(slurm_site: SlurmSite, tmp_path: Path) -> None:
    code, out, err = run_bridge(
        slurm_site, tmp_path, "--site", "slurm", "--command", "fail", "-p", "code=3"
    )
    assert code == 3, err.decode()
    assert out == b"about to fail\n"
    assert b"failure detail" in err


def test_hostile_work_dir_and_argument_stay_inert(
    slurm_site: SlurmSite,
    slurm: SlurmCluster,
    tmp_path: Path,
) -> None:
    job_id = str(uuid.uuid4())
    code, _, err = run_bridge(
        slurm_site, tmp_path, "--site", "hostile", "--command", "argv", "-p", "label=x",
        "-p", f"free={HOSTILE}", "--job-id", job_id,
    )  # fmt: skip
    assert code == 0, err.decode()
    assert json.loads((tmp_path / "argv.json").read_text()) == ["x", HOSTILE]
    slurm_id = native_id(slurm_site.hostile_work_base, job_id)
    show = slurm.run("scontrol", "show", "job", slurm_id).stdout
    assert f"WorkDir={slurm_site.hostile_work_base / job_id}\n" in show
    assert not [p for p in slurm_site.root.rglob("pwned*")]
    assert not list(tmp_path.rglob("pwned*"))


def test_a_memory_kill_reaches_the_bridge_as_out_of_memory(
    slurm_site: SlurmSite, tmp_path: Path
) -> None:
    code, _, err = run_bridge(slurm_site, tmp_path, "--site", "slurm", "--command", "memhog")
    assert code == ExitCode.OUT_OF_MEMORY, err.decode()
    assert b"memory" in err


def test_sigterm_cancels_the_slurm_job(
    slurm_site: SlurmSite,
    slurm: SlurmCluster,
    tmp_path: Path,
) -> None:
    job_id = str(uuid.uuid4())
    proc = start_bridge(
        slurm_site, tmp_path, "--site", "slurm", "--command", "ticks", "-p", "count=1000",
        "--job-id", job_id,
    )  # fmt: skip
    wait_until(lambda: bool(native_id(slurm_site.work_base, job_id)), "the Slurm job id")
    slurm_id = native_id(slurm_site.work_base, job_id)
    wait_until(lambda: live_state(slurm, slurm_id) == "RUNNING", "the Slurm job to run")
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == ExitCode.CANCELLED, err.decode()
    wait_until(lambda: not live_state(slurm, slurm_id), "the Slurm job to end", limit=10)
    show = parse_scontrol(slurm.run("scontrol", "show", "job", "-o", slurm_id).stdout)
    assert show[slurm_id].state.value == "cancelled"
    assert slurm_jobs_named(slurm, job_id) == [slurm_id]


def test_a_cancel_at_the_site_reaches_the_bridge_as_cancelled(
    slurm_site: SlurmSite,
    slurm: SlurmCluster,
    tmp_path: Path,
) -> None:
    job_id = str(uuid.uuid4())
    proc = start_bridge(
        slurm_site, tmp_path, "--site", "slurm", "--command", "ticks", "-p", "count=1000",
        "--job-id", job_id,
    )  # fmt: skip
    wait_until(lambda: bool(native_id(slurm_site.work_base, job_id)), "the Slurm job id")
    slurm_id = native_id(slurm_site.work_base, job_id)
    wait_until(lambda: live_state(slurm, slurm_id) == "RUNNING", "the Slurm job to run")
    assert slurm.run("scancel", slurm_id).returncode == 0  # the site's admin, not the bridge
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == ExitCode.CANCELLED_AT_SITE, err.decode()
    assert b"cancelled" in err


def test_a_restarted_site_entry_reattaches_to_the_same_slurm_job(
    slurm_site: SlurmSite,
    slurm: SlurmCluster,
    tmp_path: Path,
) -> None:
    job_id = str(uuid.uuid4())
    proc = start_bridge(
        slurm_site, tmp_path, "--site", "slurm", "--command", "ticks", "-p", "count=30",
        "-p", "delay=0.2", "--job-id", job_id, "-v",
    )  # fmt: skip
    stdout_log = slurm_site.work_base / job_id / ".mint-bridge" / "stdout"
    wait_until(
        lambda: stdout_log.exists() and b"tick 2\n" in stdout_log.read_bytes(), "the job to run"
    )
    slurm_id = native_id(slurm_site.work_base, job_id)
    entries = [
        child
        for child in psutil.Process(proc.pid).children()
        if "serve-ssh" in " ".join(child.cmdline())
    ]
    assert entries, "the local site entry must be a child of mint-bridge run"
    for entry in entries:
        entry.kill()
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err.decode()
    assert b"reconnecting" in err and b"re-attached" in err
    assert out == b"".join(f"tick {i}\n".encode() for i in range(30))  # resumed, no repeats
    assert (tmp_path / "ticks.txt").read_text() == "30\n"
    assert native_id(slurm_site.work_base, job_id) == slurm_id
    assert slurm_jobs_named(slurm, job_id) == [slurm_id], "exactly one Slurm job"


# --- transient scheduler failures ------------------------------------------------------------


def flaky(
    tmp_path: Path, site: SlurmSite, program: str, fails: int, submit_first: bool = False
) -> tuple[dict[str, str], Path]:
    """An environment whose PATH starts with a ``program`` that fails its first ``fails`` calls
    with Slurm's timeout message (after really submitting, with ``submit_first``)."""
    real = shutil.which(program, path=site.env.get("PATH"))
    assert real is not None
    wrappers, counter = tmp_path / "wrappers", tmp_path / f"{program}.calls"
    wrappers.mkdir()
    really = f'{shlex.quote(real)} "$@" > /dev/null 2>&1' if submit_first else ":"
    script = wrappers / program
    script.write_text(
        f"""#!/bin/bash
n=$(cat {shlex.quote(str(counter))} 2>/dev/null || echo 0)
echo $((n + 1)) > {shlex.quote(str(counter))}
if [ "$n" -lt {fails} ]; then
    {really}
    echo "{program}: error: Socket timed out on send/recv operation" >&2
    exit 1
fi
exec {shlex.quote(real)} "$@"
"""
    )
    script.chmod(0o755)
    env = dict(site.env, PATH=f"{wrappers}{os.pathsep}{site.env.get('PATH', '')}")
    return env, counter


def test_submit_retries_a_controller_timeout(
    slurm_site: SlurmSite,
    slurm: SlurmCluster,
    tmp_path: Path,
) -> None:
    env, calls = flaky(tmp_path, slurm_site, "sbatch", fails=2)
    job_id = str(uuid.uuid4())
    code, out, err = run_bridge(
        slurm_site, tmp_path, "--site", "slurm", "--command", "ticks", "--job-id", job_id, env=env
    )
    assert code == 0, err.decode()
    assert out == b"tick 0\ntick 1\ntick 2\n"
    assert calls.read_text() == "3\n"
    assert slurm_jobs_named(slurm, job_id) == [native_id(slurm_site.work_base, job_id)]


def test_a_submit_that_reached_slurm_before_timing_out_runs_once(
    slurm_site: SlurmSite,
    slurm: SlurmCluster,
    tmp_path: Path,
) -> None:
    env, calls = flaky(tmp_path, slurm_site, "sbatch", fails=1, submit_first=True)
    job_id = str(uuid.uuid4())
    code, out, err = run_bridge(
        slurm_site, tmp_path, "--site", "slurm", "--command", "ticks", "--job-id", job_id, env=env
    )
    assert code == 0, err.decode()
    assert out == b"tick 0\ntick 1\ntick 2\n"
    assert calls.read_text() == "1\n", "found by its name: sbatch must not run again"
    jobs = slurm_jobs_named(slurm, job_id)
    assert jobs == [native_id(slurm_site.work_base, job_id)], "exactly one Slurm job"


# A site process that submits through a slow sbatch: it is killed after the job reached Slurm,
# before its id came back, while the submit command is still running.
CUT_OFF_SUBMITTER = """
import sys
from bridge.core.job import JobRequest
from bridge.site import accepted_job, job_start
from bridge.site.workdir import WorkDir
from bridge.site.config import load_site_config

site = load_site_config(sys.argv[1])
request = JobRequest.from_message(
    {"job_id": sys.argv[2], "command": "ticks", "params": {"count": 10, "delay": 0.2}}
)
command, values = site.check_request(request)
wd = WorkDir(site.work_base, request.job_id)
wd.create()
job = accepted_job.AcceptedJob(request, command, values, wd)
with wd.locked():
    accepted_job.save_accepted(job)
    wd.write_json("inputs.json", {})
    job_start.start(job, site.scheduler(command))
"""


def test_a_site_killed_between_submit_and_record_runs_the_job_once(
    slurm_site: SlurmSite,
    slurm: SlurmCluster,
    tmp_path: Path,
) -> None:
    real = shutil.which("sbatch", path=slurm_site.env.get("PATH"))
    assert real is not None
    wrappers = tmp_path / "wrappers"
    wrappers.mkdir()
    (wrappers / "sbatch").write_text(
        f'#!/bin/bash\nout=$({shlex.quote(real)} "$@")\nsleep 3\necho "$out"\n'
    )
    (wrappers / "sbatch").chmod(0o755)
    env = dict(slurm_site.env, PATH=f"{wrappers}{os.pathsep}{slurm_site.env.get('PATH', '')}")
    job_id = str(uuid.uuid4())
    site_toml = str(slurm_site.root / "site.toml")
    submitter = subprocess.Popen(
        [sys.executable, "-c", CUT_OFF_SUBMITTER, site_toml, job_id], env=env
    )
    try:
        wait_until(lambda: bool(slurm_jobs_named(slurm, job_id)), "the job to reach Slurm")
    finally:
        submitter.kill()  # SIGKILL: nothing of the site process runs after this
        submitter.wait()
    assert native_id(slurm_site.work_base, job_id) == "", "killed before it recorded the id"

    code, out, err = run_bridge(
        slurm_site, tmp_path, "--site", "slurm", "--command", "ticks", "-p", "count=10",
        "-p", "delay=0.2", "--job-id", job_id,
    )  # fmt: skip
    assert code == 0, err.decode()
    assert out == b"".join(f"tick {i}\n".encode() for i in range(10))
    (slurm_id,) = slurm_jobs_named(slurm, job_id)  # exactly one Slurm job
    assert native_id(slurm_site.work_base, job_id) == slurm_id


def test_status_rides_out_controller_timeouts(slurm_site: SlurmSite, tmp_path: Path) -> None:
    env, calls = flaky(tmp_path, slurm_site, "squeue", fails=3)
    code, out, err = run_bridge(
        slurm_site, tmp_path, "--site", "slurm", "--command", "ticks", env=env
    )
    assert code == 0, err.decode()
    assert out == b"tick 0\ntick 1\ntick 2\n"
    assert int(calls.read_text()) > 3


# --- last: collect the walltime job started with the module ----------------------------------


@pytest.mark.timeout(300)  # alone, this test waits out the whole 1-minute limit and more
def test_walltime_kill_reaches_the_bridge_as_a_time_limit(
    walltime_job: tuple[subprocess.Popen[bytes], str],
    slurm_site: SlurmSite,
    slurm: SlurmCluster,
) -> None:
    proc, job_id = walltime_job
    _, err = proc.communicate(timeout=180)  # 1 minute limit, checked by Slurm every 30 s
    assert proc.returncode == ExitCode.WALLTIME_EXCEEDED, err.decode()
    assert b"time limit" in err
    slurm_id = native_id(slurm_site.work_base, job_id)
    show = parse_scontrol(slurm.run("scontrol", "show", "job", "-o", slurm_id).stdout)
    assert show[slurm_id].state.value == "timeout"
