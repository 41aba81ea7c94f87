"""The SSH push path under faults: real ``mint-bridge run`` processes (paramiko), a real sshd
whose forced command is the site entry, and the fault proxy between the two.

Every scenario runs one tiny job and checks the same things as the pull path's: exactly one
terminal state (the site's ``exit.json``: completed, exit code 0, recorded once and delivered),
the solver ran once (its counter file), the inputs reached the solver byte for byte and the
result came back byte for byte (SHA-256), and the run ended within the lease plus 60 s (the
run's own timeout, never a timing assertion). A ``mint-bridge run`` killed with SIGKILL is run
again with the same job id, which is how a user (or MInt) recovers: the re-run must follow the
job the first one started, never start it again.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import random
import re
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

from tests.support.fault_proxy import Fault, FaultProxy
from tests.support.pull import wait_until
from tests.support.site_toml import write_site_toml
from tests.support.sshd import Sshd, start_sshd_for_test

SOLVER = Path(__file__).parent / "programs" / "solver.py"
LEASE = 10  # seconds: the pull path's lease; the same bound keeps both suites comparable
KiB, MiB = 1 << 10, 1 << 20
INPUT, RESULT = 1 * MiB, 1 * MiB
SLOW = 512 * KiB  # bytes per second: a throttle that holds a 1 MiB transfer open for ~2 s


@dataclass
class SshRig:
    root: Path
    sshd: Sshd
    proxy: FaultProxy
    config: Path
    work: Path
    counter: Path

    def runs(self, job_id: str) -> int:
        lines = self.counter.read_text().splitlines() if self.counter.exists() else []
        return sum(1 for line in lines if line.split()[0] == job_id)

    def control(self, job_id: str, name: str) -> Path:
        return self.work / job_id / ".mint-bridge" / name

    def site_entries(self) -> list[psutil.Process]:
        """The forced command's processes serving connections now (not the job supervisors
        they fork, which run on in their own sessions under the same command line)."""
        found = []
        for conn in self.sshd.connection_processes():
            with contextlib.suppress(psutil.Error):
                for proc in conn.children(recursive=True):
                    with contextlib.suppress(psutil.Error):
                        parent = proc.parent()
                        if "serve-ssh" in " ".join(proc.cmdline()) and parent is not None and (
                            "serve-ssh" not in " ".join(parent.cmdline())
                        ):
                            found.append(proc)
        return found


def _write_site(root: Path) -> Path:
    return write_site_toml(
        root / "site.toml",
        # idle_timeout: a session whose bridge vanished mid-upload holds the job's lock until
        # then; 5 s keeps the black-hole scenario short (the default is 60 s).
        site={"name": "res-ssh", "work_base": root / "work", "log_file": root / "site.log",
              "idle_timeout": "5s"},
        commands={"solve": {
            "program": SOLVER, "args": [root / "counter.txt", "{seconds}", "{size}"],
            "params": {"seconds": {"type": "float", "default": 1.0},
                       "size": {"type": "int", "default": RESULT}},
        }},
    )  # fmt: skip


def _write_bridge(root: Path, sshd: Sshd, proxy: FaultProxy) -> Path:
    host = sshd.host_key.with_suffix(".pub").read_text().split()
    known = root / "known_hosts"
    known.write_text(
        "".join(f"[127.0.0.1]:{port} {host[0]} {host[1]}\n" for port in (sshd.port, proxy.port))
    )
    ssh_config = root / "ssh_config"
    ssh_config.write_text("".join(
        f"Host {alias}\n  HostName 127.0.0.1\n  Port {port}\n  User {psutil.Process().username()}"
        f"\n  IdentityFile {sshd.client_key}\n"
        for alias, port in (("direct", sshd.port), ("proxied", proxy.port))
    ))  # fmt: skip
    config = root / "bridge.toml"
    config.write_text("".join(
        f'[sites.{alias}]\nmethod = "ssh"\nhost = "{alias}"\nssh_config = "{ssh_config}"\n'
        f'known_hosts = "{known}"\nreconnect_attempts = 8\n'
        # Each run its own connection (a shared master would carry one run's faults into the
        # next), and keepalives every 2 s so a black hole is found in seconds, not a minute.
        "share_connection = false\nkeepalive = 2\n\n"
        for alias in ("direct", "proxied")
    ))  # fmt: skip
    return config


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SshRig]:
    """One sshd whose forced command serves site ``res-ssh``; the bridge reaches it as
    ``direct`` and as ``proxied`` (through the fault proxy)."""
    root = tmp_path_factory.mktemp("ssh-resilience")
    (root / "work").mkdir()
    site = _write_site(root)
    sshd = start_sshd_for_test(root / "sshd", site)
    proxy = FaultProxy(sshd.port)
    yield SshRig(root, sshd, proxy, _write_bridge(root, sshd, proxy), root / "work",
                 root / "counter.txt")  # fmt: skip
    proxy.close()
    sshd.stop()


@dataclass
class Outcome:
    job_id: str
    code: int
    out: str
    err: str
    module: Path
    blob: bytes


def start_run(rig: SshRig, site: str, job_id: str, seconds: float) -> subprocess.Popen[bytes]:
    module = rig.root / "modules" / job_id
    if not module.exists():
        module.mkdir(parents=True)
        (module / "in.bin").write_bytes(random.Random(job_id).randbytes(INPUT))
    argv = [sys.executable, "-m", "bridge.cli", "run", "--config", str(rig.config),
            "--site", site, "--command", "solve", "-p", f"seconds={seconds}", "-i", "in.bin",
            "--job-id", job_id]  # fmt: skip
    return subprocess.Popen(argv, cwd=module, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def finish(rig: SshRig, job_id: str, proc: subprocess.Popen[bytes]) -> Outcome:
    try:
        out, err = proc.communicate(timeout=LEASE + 60)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        raise AssertionError(f"{job_id} stuck past lease + 60 s: {err.decode()[-2000:]}") from None
    module = rig.root / "modules" / job_id
    blob = (module / "in.bin").read_bytes()
    return Outcome(job_id, proc.returncode, out.decode(errors="replace"),
                   err.decode(errors="replace"), module, blob)  # fmt: skip


def run_solver(rig: SshRig, site: str = "proxied", seconds: float = 1.0,
               during: Callable[[str], object] | None = None,
               job_id: str | None = None) -> Outcome:  # fmt: skip
    job_id = job_id or str(uuid.uuid4())
    proc = start_run(rig, site, job_id, seconds)
    try:
        if during is not None:
            during(job_id)
    except BaseException:
        proc.kill()
        proc.communicate()
        raise
    return finish(rig, job_id, proc)


def assert_proven(rig: SshRig, got: Outcome, acked: bool = True,
                  end_file: str = "exit.json") -> None:  # fmt: skip
    """``end_file``: the site's record of the end state (a batch job's is ``outcome.json``)."""
    assert got.code == 0, got.err[-3000:]
    record = json.loads(rig.control(got.job_id, end_file).read_text())
    assert record["state"] == "completed" and record["exit_code"] == 0, record
    if acked:  # the site records the ack a moment after the bridge has sent it and exited
        wait_until(rig.control(got.job_id, "delivered").exists, "the site to record the ack", 10)
    assert rig.runs(got.job_id) == 1, "the solver must run exactly once"
    expected = hashlib.sha256(random.Random(got.job_id).randbytes(RESULT)).hexdigest()
    assert hashlib.sha256((got.module / "result.bin").read_bytes()).hexdigest() == expected
    sums = (rig.work / got.job_id / "sums.txt").read_text()
    assert sums == f"{hashlib.sha256(got.blob).hexdigest()}  in.bin\n"
    lines = got.out.splitlines()
    assert lines[0] == f"started {got.job_id}", got.out
    assert lines[-1] == "done", got.out


def job_log(err: str) -> str:
    """The run's own log (its path is the first line on stderr): what a user looks at."""
    found = re.search(r"; log: (\S+)", err)
    assert found, err
    return Path(found.group(1)).read_text(errors="replace")


def _describe(request: pytest.FixtureRequest, fault: str, expected: str) -> None:
    request.node.user_properties.extend(
        [("fault", fault), ("path", "ssh (paramiko, sshd, forced command)"),
         ("expected", expected)]
    )  # fmt: skip


def _live_offset(proxy: FaultProxy, direction: str) -> int:
    """Bytes the newest connection has carried in ``direction``: a fault armed at this offset
    fires on that connection's next bytes."""
    with proxy.lock:
        return proxy.conns[-1].carried[direction] if proxy.conns else 0


# --- the proxy between the bridge and sshd ----------------------------------------------------

FAULT_EXTRA: dict[str, dict[str, object]] = {"delay": {"seconds": 1.0}}


def _armed_at_start(action: str, step: str) -> Fault:
    # The bridge uploads inputs (up) and downloads results (down); all else is small, so half
    # the file's size in that direction lands inside the transfer.
    direction, at = ("up", INPUT // 2) if step == "staging_in" else ("down", RESULT // 2)
    return Fault(action, direction, at, **FAULT_EXTRA.get(action, {}))  # type: ignore[arg-type]


@pytest.mark.parametrize("step", ["staging_in", "running", "staging_out"])
@pytest.mark.parametrize("action", ["cut", "truncate", "blackhole", "delay"])
def test_ssh_proxy_fault_at_step(rig: SshRig, request: pytest.FixtureRequest, action: str,
                                 step: str) -> None:  # fmt: skip
    _describe(request, f"{action} at {step}", "completed, solver once, SHA-256 equal")
    rig.proxy.disarm()
    fired = len(rig.proxy.fired)

    def arm_while_running(job_id: str) -> None:
        wait_until(lambda: rig.runs(job_id) > 0, "the solver to start")
        # The site's next bytes (a log line, a heartbeat) trip it.
        at = _live_offset(rig.proxy, "down")
        rig.proxy.arm(Fault(action, "down", at, **FAULT_EXTRA.get(action, {})))  # type: ignore[arg-type]

    if step == "running":
        got = run_solver(rig, seconds=2.0, during=arm_while_running)
    else:
        rig.proxy.arm(_armed_at_start(action, step))
        got = run_solver(rig)
    rig.proxy.disarm()
    assert len(rig.proxy.fired) == fired + 1, "the fault must have fired"
    assert_proven(rig, got)
    if action != "delay":
        assert "reconnecting" in job_log(got.err), job_log(got.err)
    if (action, step) == ("blackhole", "staging_in"):
        # The operator's view: the site closed the stalled upload's session for the true reason.
        site_log = (rig.root / "site.log").read_text()
        assert f"{got.job_id}: peer" in site_log and "idle_timeout" in site_log, site_log[-2000:]


def test_ssh_site_unreachable_reports_the_true_reason(
    rig: SshRig, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """Every connection black-holed from its first byte: the run gives up with the reason, and
    the job never started at the site."""
    _describe(request, "every connection black-holed from byte 0, connect_timeout 2 s",
              "exit 69 naming the timeout; solver never ran")  # fmt: skip
    config = tmp_path / "bridge.toml"
    config.write_text(rig.config.read_text().replace(
        "reconnect_attempts = 8", "reconnect_attempts = 2\nconnect_timeout = 2"
    ))  # fmt: skip
    rig.proxy.disarm()
    rig.proxy.arm(Fault("blackhole", "down", 0, times=None))
    job_id = str(uuid.uuid4())
    module = tmp_path / "module"
    module.mkdir()
    (module / "in.bin").write_bytes(b"x")
    try:
        done = subprocess.run(
            [sys.executable, "-m", "bridge.cli", "run", "--config", str(config), "--site",
             "proxied", "--command", "solve", "-i", "in.bin", "--job-id", job_id],
            cwd=module, capture_output=True, timeout=LEASE + 60,
        )  # fmt: skip
    finally:
        rig.proxy.disarm()
    err = done.stderr.decode(errors="replace")
    assert done.returncode == 69, err
    assert "timed out" in err or "timeout" in err, err
    assert rig.runs(job_id) == 0
    assert not (rig.work / job_id).exists()


# --- processes killed with SIGKILL --------------------------------------------------------------

STEPS = ("staging_in", "submitted", "running", "collecting", "staging_out", "acknowledged")


def _slow_transfer(rig: SshRig, step: str) -> None:
    """Throttle the step's transfer (through the proxy) so a kill lands inside it."""
    if step == "staging_in":
        rig.proxy.arm(Fault("throttle", "up", INPUT // 4, rate=SLOW))
    if step == "staging_out":
        rig.proxy.arm(Fault("throttle", "down", RESULT // 4, rate=SLOW))


def _reach(rig: SshRig, job_id: str, step: str, alive: Callable[[], bool]) -> None:
    """Return once the job is at ``step``: mid-upload, scheduler id recorded, solver running,
    solver ended (results being collected), mid-download, or results acknowledged."""
    base = rig.proxy.carried.copy()
    ready: dict[str, Callable[[], bool]] = {
        "staging_in": lambda: rig.proxy.carried["up"] - base["up"] > INPUT // 2,
        "submitted": lambda: rig.control(job_id, "native_id").exists(),
        "running": lambda: rig.runs(job_id) > 0,
        "collecting": lambda: rig.control(job_id, "exit.json").exists(),
        "staging_out": lambda: rig.proxy.carried["down"] - base["down"] > RESULT // 2,
        "acknowledged": lambda: rig.control(job_id, "delivered").exists() or not alive(),
    }
    wait_until(ready[step], f"the job to reach {step}")


@pytest.mark.parametrize("step", STEPS)
def test_ssh_run_kill9_then_rerun(rig: SshRig, request: pytest.FixtureRequest,
                                  step: str) -> None:  # fmt: skip
    _describe(request, f"kill -9 of mint-bridge run at {step}, then the same run again",
              "first run killed (-9); the re-run completes, solver once, SHA-256 equal",
              )  # fmt: skip
    rig.proxy.disarm()
    _slow_transfer(rig, step)
    job_id = str(uuid.uuid4())
    first = start_run(rig, "proxied", job_id, 1.0)
    try:
        _reach(rig, job_id, step, lambda: first.poll() is None)
    finally:
        first.kill()
        first.communicate(timeout=30)
        rig.proxy.disarm()
    # What the user sees: the run died of the signal (a shell shows 137), and said nothing more.
    assert first.returncode in (-9, 0), first.returncode
    assert step == "acknowledged" or first.returncode == -9
    ran_before = rig.runs(job_id)
    assert ran_before <= 1
    got = run_solver(rig, site="direct", job_id=job_id)
    assert_proven(rig, got)


@pytest.mark.parametrize("step", STEPS)
def test_ssh_site_entry_kill9(rig: SshRig, request: pytest.FixtureRequest, step: str) -> None:
    _describe(request, f"kill -9 of the site entry (forced command) at {step}",
              "the run re-attaches; completed, solver once, SHA-256 equal")  # fmt: skip
    rig.proxy.disarm()
    _slow_transfer(rig, step)
    killed: list[int] = []

    def kill(job_id: str) -> None:
        _reach(rig, job_id, step, lambda: True)
        for proc in rig.site_entries():
            killed.append(proc.pid)
            with contextlib.suppress(psutil.Error):
                proc.kill()
        rig.proxy.disarm()  # the throttle ends with the killed connection; none for the next

    got = run_solver(rig, during=kill)
    reconnected = "reconnecting" in job_log(got.err)
    # Killed once the solver ended, the entry has often written every result byte into sshd's
    # buffers already: the bridge gets them all and acks to no one, so no "delivered" mark and
    # no reconnect (nothing else is lost). Before that, the run must reconnect and re-attach.
    assert_proven(rig, got, acked=reconnected or step == "acknowledged")
    if step in ("staging_in", "submitted", "running"):
        assert killed, "a site entry must have been serving the job"
        assert reconnected, job_log(got.err)
        assert "cannot reach" not in job_log(got.err), "a killed entry is not an unreachable host"
