"""Staging throughput and small-job latency of ``mint-bridge run``, against OpenSSH ``scp``.

Run: ``.venv/bin/python benchmarks/ssh_staging.py [--size-mib N] [--repeat K] [--runs R]
[--site-user NAME]``.

Everything happens on this machine: a private OpenSSH sshd on 127.0.0.1 (started with
``tests.support.sshd.start_sshd``) whose first key is forced to ``mint-bridge site serve-ssh``
and whose second, unrestricted key is used by ``scp``. Nothing is sent anywhere else.

The site side runs under its own account, as at a real site, which runs mint-bridge under a
dedicated unprivileged account rather than root. As root, every SSH login of the bench (both
bridge clients and ``scp``) is ``--site-user`` (default ``mint-bench``, created if missing: a
system account with ``/bin/sh``, no password, home ``/var/lib/mint-bench``; it stays for later
runs, and the JSON says whether this run created it). The reason: sshd runs every command (the
forced command, scp's sftp server) as ``$SHELL -c ...``, and bash started by sshd sources
``~/.bashrc``; root's here starts pyenv, ~0.2 s per SSH session, which belongs to this machine's
root account, not to mint-bridge or to ``scp``. ``shell_session_seconds`` reports that cost for
the site account and for root (``ssh ... true`` over an open master). The site account owns the
site's directories (work dirs, payload, scp's destination, log; the payload must be its own
because the ``source`` command hard-links it, which fs.protected_hardlinks allows only to the
owner) and runs this venv's packages on hard links of this interpreter, which lives under
``/root`` (see ``benchmarks/site_account.py``). Not root, or ``--site-user ''``: everything
runs as the current user.

Both SSH clients of the bridge are measured side by side, against the same sshd and site:
``paramiko`` (in-process; site ``site``, the figures without a client in their name) and
``openssh`` (the system's ``ssh`` as a child; site ``site-openssh``, sharing one connection
through a control socket in a private directory, and for the small job also
``site-openssh-unshared``, one connection per job).

What is measured (MB = 10**6 bytes):

- bridge in: ``mint-bridge run`` of a command whose program (``/bin/true``) ignores its one
  input and returns nothing; bridge out: a command whose program hard-links a pre-made site
  file into the work dir (``ln``, ~0 cost), so the result is the same bytes coming back. Each
  with either client (``bridge_in``/``bridge_out``: paramiko; ``bridge_openssh_in``/``_out``).
- scp in / out: ``scp`` of the same files against the same sshd, with its default cipher (the
  comparison the targets refer to) and with aes128-gcm (paramiko's preferred cipher). The
  fixture's sshd has no sftp subsystem, which today's scp speaks; one is added (SIGHUP).
- Each big transfer's wall time minus the median wall time of the same operation with a 1-byte
  payload (connection set-up, process start, job start) gives the transfer time; MB/s comes
  from that. The gross figures (no subtraction) are reported too. Methods take turns, and
  every run starts after ``sync``, so drifts and write-back hit all of them alike. The first
  1-byte run of the shared openssh site opens its connection; the median hides it. The
  1-byte runs' times are in ``details.*.fixed_runs``: a stall in them (load from elsewhere)
  inflates that method's net MB/s, which the gross figure does not.
- CPU seconds used by all processes of a transfer (client, sshd, site or sftp server, and the
  shared connection's ``ssh`` master, which lives outside the run's process tree): on a
  shared machine these vary much less than wall times. Processes that outlive one transfer
  (the master and its sshd) count only the CPU time used during it.
- Peak RSS of the ``mint-bridge run`` process (``bridge``: paramiko, ``bridge_openssh``), of
  the site's ``serve-ssh`` process, and, not the bridge's own memory but reported apart, of
  the ``ssh`` child of an openssh run (``ssh_client``) and of the shared master
  (``ssh_master``); sampled with psutil every 20 ms (each sample also reads the kernel's
  high-water mark, VmHWM).
- A kousoku-sized job: three 10-byte inputs, a program (``dd``) writing 400 kB into the work
  dir; total wall time of ``mint-bridge run`` against the same program run directly;
  overhead = difference of medians. Methods: ``ssh`` (paramiko), ``ssh_openssh`` (shared
  connection already open: one first run opens it and is reported apart as
  ``cold_seconds``), ``ssh_openssh_unshared`` and ``local`` (no SSH: the site runs as the
  bench's own user).

At the end every shared master is told to exit (``ssh -O exit``) and any process still naming
the bench's directories is killed and reported (``leftover_processes``; should be empty).

Prints one JSON object on stdout and a one-line summary on stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import json
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks.scp_baseline import (  # noqa: E402
    MIB,
    clean_dir,
    enable_sftp,
    make_file,
    scp_argv,
    ssh_options,
    staging_commands,
)
from benchmarks.site_account import (  # noqa: E402
    DEFAULT_SITE_USER,
    SiteAccount,
    hand_over,
    site_account,
    site_python,
)
from tests.support.sshd import Sshd, keygen, start_sshd  # noqa: E402

MB = 1_000_000
SAMPLE_SECONDS = 0.02
TREE_EVERY = 5  # samples between walks of the process tree
TARGET_RATIO = 0.9
TARGET_RSS_MIB = 100.0
TARGET_OVERHEAD_S = 0.5
KOUSOKU_OUTPUT_BYTES = 400_000
TINY_RUNS = 3
# Unix socket paths are short; the bridge config refuses a longer control_dir.
MAX_CONTROL_DIR = 60
SSH_CLIENTS = ("paramiko", "openssh")
SHELL_RUNS = 7
# Two markers no random payload holds: the scan runs over every byte and finds nothing.
POLICY_MARKERS = ("MINT-BRIDGE-BENCH-MARKER-1", "MINT-BRIDGE-BENCH-MARKER-2")
TARGET_POLICY_RATIO = 0.95


# --- the environment: site config, sshd, bridge config, scp key -----------------------------


@dataclass
class Bench:
    root: Path
    sshd: Sshd
    bridge_config: Path
    scp_key: Path
    work_base: Path
    payload: Path  # site-side pre-made files (big.bin, tiny.bin)
    client: Path  # bridge-side input files
    scp_dest: Path  # site-side directory scp uploads into
    control_dir: Path  # control sockets of the openssh client's shared connections
    timeout: float
    account: SiteAccount  # every SSH login (both bridge clients, scp) is this account
    python: str  # shell words starting the site's interpreter (the forced command's)


def site_config_text(work_base: Path, payload: Path, log_dir: Path, private: Path) -> str:
    dd = shutil.which("dd")
    return f"""
[site]
name = "bench-site"
work_base = "{work_base}"
retention = "1h"
log_file = "{log_dir / "site.log"}"
{staging_commands(payload)}
[egress]
private_dirs = ["{private}"]
private_index = "{log_dir / "private-index.json"}"

{policy_command(payload)}
[commands.kousoku]
description = "Write {KOUSOKU_OUTPUT_BYTES} bytes into the work dir and nothing else"
program = "{dd}"
args = {json.dumps(kousoku_args())}
"""


def policy_command(payload: Path) -> str:
    """``source`` with every content rule on: the result is hashed and searched for markers
    in one pass before it is sent, and compared with the private file of the same size (the
    most a policy reads: the index's only file has the payload's size, so it is checked)."""
    ln = shutil.which("ln")
    return f"""[commands.source_policy]
description = "source, with the egress policy's content rules on"
program = "{ln}"
args = ["{payload}/{{which}}.bin", "result.bin"]
[commands.source_policy.params.which]
type = "choice"
choices = ["big", "tiny"]
default = "tiny"
[commands.source_policy.egress]
deny_markers = {json.dumps(list(POLICY_MARKERS))}
deny_private = true
"""


def kousoku_args() -> list[str]:
    return ["if=/dev/zero", "of=result.dat", f"bs={KOUSOKU_OUTPUT_BYTES}", "count=1", "status=none"]


def bridge_config_text(sshd: Sshd, site_config: Path, control_dir: Path) -> str:
    ssh_site = f"""method = "ssh"
host = "site"
ssh_config = "{sshd.ssh_config}"
known_hosts = "{sshd.known_hosts}"
reconnect_attempts = 1
"""
    openssh = f'client = "openssh"\ncontrol_dir = "{control_dir}"\n'
    return f"""
[sites.site]
{ssh_site}
[sites.site-openssh]
{ssh_site}{openssh}
[sites.site-openssh-unshared]
{ssh_site}{openssh}share_connection = false

[sites.local]
method = "local"
site_config = "{site_config}"
reconnect_attempts = 1
"""


def make_control_dir(root: Path) -> Path:
    """Inside the bench's root if the path is short enough for a socket, else under /tmp."""
    inside = root / "ctl"
    if len(str(inside).encode()) <= MAX_CONTROL_DIR:
        inside.mkdir(mode=0o700)
        return inside
    return Path(tempfile.mkdtemp(prefix="mb-ctl-", dir="/tmp"))


@contextlib.contextmanager
def bench_env(size: int, timeout: float, account: SiteAccount) -> Iterator[Bench]:
    root = Path(tempfile.mkdtemp(prefix="mint-bridge-bench-"))
    control_dir = make_control_dir(root)
    sshd: Sshd | None = None
    try:
        names = ("work", "payload", "client", "scp-dest", "sshd", "log", "private")
        dirs = {name: root / name for name in names}
        for path in dirs.values():
            path.mkdir(mode=0o700)
        site_config = root / "site.toml"
        site_config.write_text(
            site_config_text(dirs["work"], dirs["payload"], dirs["log"], dirs["private"])
        )
        for where in (dirs["payload"], dirs["client"]):
            make_file(where / "big.bin", size)
            make_file(where / "tiny.bin", 1)
        make_file(dirs["private"] / "model.bin", size)  # same size, other bytes: not withheld
        python = sys.executable
        if account.dedicated:
            site_dirs = [dirs[name] for name in ("work", "payload", "scp-dest", "log", "private")]
            hand_over(account, root, site_dirs, readable=dirs["sshd"])
            python = site_python(root / "python")
        sshd = start_sshd(dirs["sshd"], site_config, user=account.user, python=python)
        enable_sftp(sshd)
        scp_key = root / "scp_ed25519"
        keygen(scp_key, "mint-bridge-bench-scp")
        sshd.authorize(f'from="127.0.0.1" {scp_key.with_suffix(".pub").read_text().strip()}')
        bridge_config = root / "bridge.toml"
        bridge_config.write_text(bridge_config_text(sshd, site_config, control_dir))
        yield Bench(
            root, sshd, bridge_config, scp_key, dirs["work"], dirs["payload"], dirs["client"],
            dirs["scp-dest"], control_dir, timeout, account, python,
        )  # fmt: skip
    finally:
        stop_masters(control_dir)  # while sshd still runs, so they can say goodbye
        if sshd is not None:
            sshd.stop()
        # As root: the work dirs and the payload belong to the site account.
        shutil.rmtree(root, ignore_errors=True)
        shutil.rmtree(control_dir, ignore_errors=True)


# --- the openssh client's shared connections ---------------------------------------------


def processes_naming(text: str) -> list[psutil.Process]:
    """Processes, other than this one, whose command line contains ``text``."""
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        if proc.pid != os.getpid() and text in " ".join(proc.info["cmdline"] or ()):
            found.append(proc)
    return found


def masters(control_dir: Path) -> list[psutil.Process]:
    """Shared-connection masters: OpenSSH retitles them ``ssh: SOCKET [mux]``."""
    return [p for p in processes_naming(str(control_dir)) if "[mux]" in " ".join(p.cmdline())]


def stop_masters(control_dir: Path) -> None:
    """Ask each master to exit (``ssh -O exit``); kill any ssh still naming the directory."""
    sockets = list(control_dir.iterdir()) if control_dir.is_dir() else []
    for socket_path in sockets:
        argv = ["ssh", "-F", "/dev/null", "-o", f"ControlPath={socket_path}", "-O", "exit", "site"]
        with contextlib.suppress(subprocess.SubprocessError):
            subprocess.run(argv, capture_output=True, timeout=10)
    if not wait_gone(str(control_dir), 5.0):
        for proc in processes_naming(str(control_dir)):
            with contextlib.suppress(psutil.Error):
                proc.kill()
        wait_gone(str(control_dir), 5.0)


def wait_gone(text: str, timeout: float) -> bool:
    """Whether, within ``timeout``, no process names ``text`` any more."""
    deadline = time.monotonic() + timeout
    while processes_naming(text):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def leftover_processes(bench: Bench) -> list[str]:
    """After the bench: processes that still name its directories (sshd, site, ssh)."""
    left: dict[int, psutil.Process] = {}
    for path in (bench.root, bench.control_dir):
        wait_gone(str(path), 3.0)
        left |= {proc.pid: proc for proc in processes_naming(str(path))}
    described = []
    for proc in left.values():
        with contextlib.suppress(psutil.Error):
            described.append(f"{proc.pid} {' '.join(proc.cmdline())[:200]}")
            proc.kill()
    return described


# --- peak memory and CPU time by sampling -------------------------------------------------


@dataclass
class Watch:
    """Samples, every 20 ms, the processes of one operation: the command it started, that
    command's descendants and sshd's (the site process, the sftp server), plus the openssh
    client's shared masters, which have left the run's process tree.

    Records peak RSS by role (each sample also reads the kernel's high-water mark, VmHWM, so a
    peak between samples counts): the ``mint-bridge run`` process (its role is given), the
    ``serve-ssh`` site processes, the ``ssh`` children of a bridge run and the shared masters;
    and the CPU seconds every watched process used during the operation.
    """

    sshd_pid: int
    control_dir: Path | None = None  # where the masters' sockets are; None: no masters
    peaks: dict[str, int] = field(default_factory=lambda: {"bridge": 0, "site": 0})
    _cpu: dict[tuple[int, float], float] = field(default_factory=dict)
    _base: dict[tuple[int, float], float] = field(default_factory=dict)
    _roles: dict[int, str | None] = field(default_factory=dict)
    _ssh_role: str | None = None
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def snapshot(self) -> None:
        """Before an operation starts: CPU time already used by processes that outlive one
        operation (a shared master and its sshd process) is not the operation's."""
        self._cpu.clear()
        self._roles = {}
        self._discover_lasting()
        self._sample_all()
        self._base = dict(self._cpu)

    def start(self, pid: int, role: str | None) -> None:
        self._roles[pid] = role
        self._ssh_role = "ssh_client" if role and role.startswith("bridge") else None
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, args=(pid,), daemon=True)
        self._thread.start()

    def stop(self) -> float:
        """Stops sampling; the CPU seconds the operation's processes used."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._discover_lasting()  # a master this operation opened, and its final CPU time
        self._sample_all()
        return sum(max(0.0, cpu - self._base.get(key, 0.0)) for key, cpu in self._cpu.items())

    def _discover_lasting(self) -> None:
        self._discover_children(self.sshd_pid)
        if self.control_dir is not None:
            for master in masters(self.control_dir):
                self._roles[master.pid] = "ssh_master"

    def _sample_all(self) -> None:
        for known, role in list(self._roles.items()):
            self._sample(known, role)

    def _loop(self, pid: int) -> None:
        tick = 0
        while not self._stop.is_set():
            if tick % TREE_EVERY == 0:  # walking all of /proc costs; a pid's stats do not
                for root in (pid, self.sshd_pid):
                    self._discover_children(root)
            self._sample_all()
            tick += 1
            self._stop.wait(SAMPLE_SECONDS)

    def _discover_children(self, root: int) -> None:
        with contextlib.suppress(psutil.Error):
            for child in psutil.Process(root).children(recursive=True):
                if self._roles.get(child.pid) != "ssh_master":
                    # Asked again each time: a forked sshd becomes the site once it execs.
                    self._roles[child.pid] = self._role(child)

    def _role(self, proc: psutil.Process) -> str | None:
        with contextlib.suppress(psutil.Error):
            if "serve-ssh" in proc.cmdline():
                return "site"
            if proc.name() == "ssh":  # scp's ssh child too, but then there is no ssh role
                return self._ssh_role
        return None

    def _sample(self, pid: int, role: str | None) -> None:
        with contextlib.suppress(psutil.Error, OSError):
            proc = psutil.Process(pid)
            times = proc.cpu_times()
            self._cpu[(pid, proc.create_time())] = times.user + times.system
            if role is not None:
                rss = max(proc.memory_info().rss, _vm_hwm(pid))
                self.peaks[role] = max(self.peaks.get(role, 0), rss)


def _vm_hwm(pid: int) -> int:
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


# --- one timed operation -----------------------------------------------------------------


@dataclass(frozen=True)
class Timing:
    seconds: float
    cpu_seconds: float


def timed(argv: list[str], timeout: float, watch: Watch, role: str | None = None) -> Timing:
    """Wall time and CPU time of ``argv``; raises if it fails or runs past ``timeout``."""
    os.sync()  # earlier runs' dirty pages are not flushed on this run's clock
    watch.snapshot()
    start = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    watch.start(proc.pid, role)
    try:
        _, err = proc.communicate(timeout=timeout)
        elapsed = time.perf_counter() - start  # the watch's last samples are not the run's
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise RuntimeError(f"timed out after {timeout} s: {argv}") from None
    finally:
        cpu = watch.stop()
    if proc.returncode != 0:
        raise RuntimeError(f"exit {proc.returncode}: {argv}\n{err.decode()[-2000:]}")
    return Timing(elapsed, cpu)


def bridge_argv(bench: Bench, site: str, command: str, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "bridge.cli", "run", "--config", str(bench.bridge_config),
        "--site", site, "--command", command, *extra,
    ]  # fmt: skip


def remote(bench: Bench, path: Path) -> str:
    return f"{bench.account.user}@127.0.0.1:{path}"


# --- the transfers -----------------------------------------------------------------------

# Bridge site and peak-RSS role of the ``mint-bridge run`` process, per SSH client.
CLIENT_SITE = {"paramiko": ("site", "bridge"), "openssh": ("site-openssh", "bridge_openssh")}


def bridge_in(bench: Bench, which: str, out: Path, watch: Watch, client: str) -> Timing:
    site, role = CLIENT_SITE[client]
    argv = bridge_argv(bench, site, "sink", "-i", str(bench.client / f"{which}.bin"))
    return timed([*argv, "-o", str(out)], bench.timeout, watch, role)


def bridge_out(
    bench: Bench, which: str, out: Path, watch: Watch, client: str, command: str = "source"
) -> Timing:
    site, role = CLIENT_SITE[client]
    argv = bridge_argv(bench, site, command, "-p", f"which={which}", "-o", str(out))
    timing = timed(argv, bench.timeout, watch, role)
    expected = (bench.payload / f"{which}.bin").stat().st_size
    if (out / "result.bin").stat().st_size != expected:
        raise RuntimeError("bridge out: result has the wrong size")
    return timing


def scp_in(bench: Bench, which: str, watch: Watch, cipher: str | None) -> Timing:
    source = str(bench.client / f"{which}.bin")
    dest = remote(bench, bench.scp_dest / f"{which}.bin")
    return timed(scp_argv(bench.sshd, bench.scp_key, source, dest, cipher), bench.timeout, watch)


def scp_out(bench: Bench, which: str, out: Path, watch: Watch, cipher: str | None) -> Timing:
    source = remote(bench, bench.payload / f"{which}.bin")
    argv = scp_argv(bench.sshd, bench.scp_key, source, str(out / f"{which}.bin"), cipher)
    return timed(argv, bench.timeout, watch)


@dataclass
class Series:
    """Timings of one operation: big payload runs and 1-byte runs."""

    big: list[Timing] = field(default_factory=list)
    tiny: list[Timing] = field(default_factory=list)

    def summary(self, size: int) -> dict[str, Any]:
        fixed = statistics.median(t.seconds for t in self.tiny)
        big = statistics.median(t.seconds for t in self.big)
        cpu = statistics.median(t.cpu_seconds for t in self.big)
        return {
            "mbps": round(size / MB / max(big - fixed, 1e-9), 1),
            "mbps_gross": round(size / MB / big, 1),
            "seconds": [round(t.seconds, 3) for t in self.big],
            "fixed_seconds": round(fixed, 3),
            "fixed_runs": [round(t.seconds, 3) for t in self.tiny],
            "cpu_seconds": round(cpu, 2),
            "cpu_seconds_fixed": round(statistics.median(t.cpu_seconds for t in self.tiny), 2),
        }


Operation = Callable[[str, Path], Timing]


def run_once(bench: Bench, op: Operation, which: str) -> Timing:
    out = bench.root / "out"
    out.mkdir(exist_ok=True)
    try:
        return op(which, out)
    finally:
        for path in (out, bench.work_base, bench.scp_dest):
            clean_dir(path)


def operations(bench: Bench, watch: Watch, egress_only: bool = False) -> dict[str, Operation]:
    gcm = "aes128-gcm@openssh.com"
    policy = {
        "bridge_out": lambda w, o: bridge_out(bench, w, o, watch, "paramiko"),
        "bridge_out_policy": lambda w, o: bridge_out(
            bench, w, o, watch, "paramiko", "source_policy"
        ),
        "bridge_openssh_out": lambda w, o: bridge_out(bench, w, o, watch, "openssh"),
        "bridge_openssh_out_policy": lambda w, o: bridge_out(
            bench, w, o, watch, "openssh", "source_policy"
        ),
    }
    if egress_only:
        return policy
    return policy | {
        "bridge_in": lambda w, o: bridge_in(bench, w, o, watch, "paramiko"),
        "bridge_out": lambda w, o: bridge_out(bench, w, o, watch, "paramiko"),
        "bridge_openssh_in": lambda w, o: bridge_in(bench, w, o, watch, "openssh"),
        "bridge_openssh_out": lambda w, o: bridge_out(bench, w, o, watch, "openssh"),
        "scp_in": lambda w, o: scp_in(bench, w, watch, None),
        "scp_out": lambda w, o: scp_out(bench, w, o, watch, None),
        "scp_gcm_in": lambda w, o: scp_in(bench, w, watch, gcm),
        "scp_gcm_out": lambda w, o: scp_out(bench, w, o, watch, gcm),
    }


def measure_transfers(
    bench: Bench, repeat: int, egress_only: bool = False
) -> tuple[dict[str, Series], dict[str, int]]:
    watch = Watch(bench.sshd.pid, bench.control_dir)
    ops = operations(bench, watch, egress_only)
    series = {name: Series() for name in ops}
    for name, op in ops.items():  # the 1-byte runs also warm caches up
        series[name].tiny = [run_once(bench, op, "tiny") for _ in range(TINY_RUNS)]
    for round_no in range(repeat):
        for name, op in ops.items():  # interleaved, so drifts hit every method alike
            timing = run_once(bench, op, "big")
            series[name].big.append(timing)
            progress(
                f"round {round_no + 1}/{repeat} {name}: {timing.seconds:.2f} s, "
                f"{timing.cpu_seconds:.2f} CPU s"
            )
    return series, watch.peaks


# --- the kousoku-sized job ---------------------------------------------------------------


KOUSOKU_SITES = {
    "ssh": "site",
    "ssh_openssh": "site-openssh",
    "ssh_openssh_unshared": "site-openssh-unshared",
    "local": "local",
}


def kousoku(bench: Bench, runs: int) -> dict[str, Any]:
    inputs = kousoku_inputs(bench)
    direct = [shutil.which("dd") or "dd", *kousoku_args()]
    baseline = statistics.median(direct_run(bench, direct) for _ in range(runs))
    result: dict[str, Any] = {"baseline_seconds": round(baseline, 4)}
    watch = Watch(bench.sshd.pid)
    for method, site in KOUSOKU_SITES.items():
        argv = bridge_argv(bench, site, "kousoku", *inputs)
        cold = None
        if method == "ssh_openssh":  # the first run opens the shared connection
            stop_masters(bench.control_dir)  # the transfers' connection must not make it warm
            cold = kousoku_once(bench, argv, watch)
        times = [kousoku_once(bench, argv, watch) for _ in range(runs)]
        result[method] = kousoku_figures(times, baseline, cold)
    return result


def kousoku_inputs(bench: Bench) -> list[str]:
    inputs = []
    for name in ("yield_strength.dat", "tensile_strength.dat", "reduction_area.dat"):
        path = bench.client / name
        path.write_bytes(b"123.4567\n\n")
        inputs += ["-i", str(path)]
    return inputs


def kousoku_figures(times: list[float], baseline: float, cold: float | None) -> dict[str, Any]:
    total = statistics.median(times)
    figures: dict[str, Any] = {
        "total_seconds": round(total, 3),
        "overhead_seconds": round(total - baseline, 3),
        "runs": [round(t, 3) for t in times],
    }
    if cold is not None:
        figures["cold_seconds"] = round(cold, 3)
        figures["cold_overhead_seconds"] = round(cold - baseline, 3)
    return figures


def kousoku_once(bench: Bench, argv: list[str], watch: Watch) -> float:
    return run_once(bench, lambda _, out: timed([*argv, "-o", str(out)], 60, watch), "").seconds


def direct_run(bench: Bench, argv: list[str]) -> float:
    out = bench.root / "direct"
    out.mkdir(exist_ok=True)
    try:
        start = time.perf_counter()
        subprocess.run(argv, cwd=out, check=True, timeout=60)
        return time.perf_counter() - start
    finally:
        shutil.rmtree(out)


# --- machine info and report -------------------------------------------------------------


def machine_info(bench: Bench) -> dict[str, Any]:
    return {
        "cpus": os.cpu_count(),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        "cpu_model": _cpu_model(),
        "memory_gib": round(psutil.virtual_memory().total / (1 << 30), 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "paramiko": importlib.metadata.version("paramiko"),
        "cryptography": importlib.metadata.version("cryptography"),
        "openssh": subprocess.run(["ssh", "-V"], capture_output=True, text=True).stderr.strip(),
        "cipher_bridge": _bridge_cipher(bench),
        "cipher_bridge_openssh": _openssh_cipher(bench),
        "cipher_scp_default": _scp_cipher(bench),
    }


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor()


def _bridge_cipher(bench: Bench) -> str:
    """What paramiko negotiates with this sshd (no channel opened, so no site process)."""
    from bridge.client.node_config import SshSite, load_bridge_config
    from bridge.client.transports.paramiko_ssh import SshConnector

    site = load_bridge_config(str(bench.bridge_config)).site("site")
    assert isinstance(site, SshSite)
    connection = SshConnector(site).connect()
    try:
        transport = connection.clients[-1].get_transport()  # type: ignore[attr-defined]
        cipher = str(transport.local_cipher)
        mac = "<implicit>" if "gcm" in cipher else transport.local_mac  # AEAD: no separate MAC
        return f"{cipher} / {mac}"
    finally:
        connection.close()


def _openssh_cipher(bench: Bench) -> str:
    """What the openssh client negotiates: its own command line, with debug logging."""
    from bridge.client.node_config import SshSite, load_bridge_config
    from bridge.client.transports.openssh import openssh_argv

    site = load_bridge_config(str(bench.bridge_config)).site("site-openssh-unshared")
    assert isinstance(site, SshSite)
    argv = [
        "LogLevel=DEBUG1" if arg == "LogLevel=ERROR" else arg for arg in openssh_argv(site, None)
    ]
    # No input: the site's serve-ssh sees end of stream at once and exits.
    proc = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=30)  # fmt: skip
    return _kex_cipher(proc.stderr)


def _scp_cipher(bench: Bench) -> str:
    ssh = [*shell_argv(bench, bench.account.user), "-v", "127.0.0.1", "true"]
    proc = subprocess.run(ssh, capture_output=True, text=True, timeout=30)
    return _kex_cipher(proc.stderr)


def site_account_info(bench: Bench) -> dict[str, Any]:
    """Who the site runs as, and the Python its forced command runs (checked over SSH)."""
    check = "import sys, bridge; print(sys.version.split()[0])"
    argv = [*shell_argv(bench, bench.account.user), "127.0.0.1", f"{bench.python} -c '{check}'"]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=True)
    return {
        "user": bench.account.user,
        "shell": bench.account.shell,
        "created_this_run": bench.account.created,  # left in place, re-used by the next run
        "python": proc.stdout.strip(),
    }


def shell_sessions(bench: Bench) -> dict[str, float | None]:
    """What sshd's ``$SHELL -c`` costs per session, for the site account and (when running as
    root) for root: bash started by sshd sources ``~/.bashrc``, and every SSH command of the
    bench (forced command, sftp server) goes through that shell."""
    root = shell_session(bench, "root") if os.geteuid() == 0 else None
    return {"site_account": shell_session(bench, bench.account.user), "root": root}


def shell_session(bench: Bench, user: str) -> float:
    """Median wall time of ``ssh ... true`` over an already-open master (unrestricted key)."""
    control = bench.control_dir / f"shell-{user}"
    ssh = [*shell_argv(bench, user), "-o", f"ControlPath={control}"]
    master = [*ssh, "-o", "ControlMaster=yes", "-o", "ControlPersist=yes", "-f", "-N"]
    # No pipes: the master lives on in the background, holding them open.
    subprocess.run([*master, "127.0.0.1"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   timeout=30, check=True)  # fmt: skip
    try:
        times = []
        for _ in range(SHELL_RUNS):
            start = time.perf_counter()
            subprocess.run([*ssh, "127.0.0.1", "true"], capture_output=True, timeout=30,
                           check=True)  # fmt: skip
            times.append(time.perf_counter() - start)
        return round(statistics.median(times), 3)
    finally:
        subprocess.run([*ssh, "-O", "exit", "127.0.0.1"], capture_output=True, timeout=10)
        wait_gone(str(control), 5.0)  # not to be taken for a bridge master later


def shell_argv(bench: Bench, user: str) -> list[str]:
    return ["ssh", *ssh_options(bench.sshd, bench.scp_key), "-p", str(bench.sshd.port), "-l", user]


def _kex_cipher(debug_log: str) -> str:
    found = re.search(r"kex: client->server cipher: (\S+) MAC: (\S+)", debug_log)
    return f"{found.group(1)} / {found.group(2)}" if found else "unknown"


def report(
    size: int, repeat: int, series: dict[str, Series], peaks: dict[str, int], small: dict[str, Any],
    machine: dict[str, Any],
) -> dict[str, Any]:  # fmt: skip
    figures = {name: s.summary(size) for name, s in series.items()}
    ratio = ratios(figures, "bridge", "scp")
    ratio_openssh = ratios(figures, "bridge_openssh", "scp")
    rss = {role: round(peak / MIB, 1) for role, peak in peaks.items()}
    return {
        "size_bytes": size,
        "repeat": repeat,
        "mbps": {name: f["mbps"] for name, f in figures.items()},
        # CPU seconds all processes of one big transfer used (client, sshd, site or sftp
        # server, shared ssh master): less sensitive than wall time to other load.
        "cpu_seconds": {name: f["cpu_seconds"] for name, f in figures.items()},
        "ratio_bridge_over_scp": ratio,
        "ratio_bridge_over_scp_aes128gcm": ratios(figures, "bridge", "scp_gcm"),
        "ratio_bridge_openssh_over_scp": ratio_openssh,
        "ratio_bridge_openssh_over_scp_aes128gcm": ratios(figures, "bridge_openssh", "scp_gcm"),
        # bridge, bridge_openssh: the mint-bridge run process; ssh_client, ssh_master: the
        # openssh client's ssh processes (OpenSSH's memory, not the bridge's).
        "peak_rss_mib": rss,
        "kousoku": small,
        "targets_met": targets(ratio, ratio_openssh, rss, small),
        "egress_policy": egress_policy(figures),
        "details": figures,
        "machine": machine,
    }


def egress_policy(figures: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Results out with the content rules on against off, per client (target 0.95)."""
    result: dict[str, Any] = {}
    for client, off in (("paramiko", "bridge_out"), ("openssh", "bridge_openssh_out")):
        on = figures[f"{off}_policy"]
        ratio = round(on["mbps"] / figures[off]["mbps"], 3)
        gross = round(on["mbps_gross"] / figures[off]["mbps_gross"], 3)
        result[client] = {
            "mbps_off": figures[off]["mbps"], "mbps_on": on["mbps"],
            "ratio_on_over_off": ratio, "ratio_gross": gross,
            "cpu_seconds_off": figures[off]["cpu_seconds"], "cpu_seconds_on": on["cpu_seconds"],
            "target_met": ratio >= TARGET_POLICY_RATIO,
        }  # fmt: skip
    return result


def egress_summary(result: dict[str, Any]) -> str:
    parts = [
        f"{client} out {r['mbps_off']} -> {r['mbps_on']} MB/s with the policy (ratio "
        f"{r['ratio_on_over_off']}, gross {r['ratio_gross']}; CPU s {r['cpu_seconds_off']} -> "
        f"{r['cpu_seconds_on']})"
        for client, r in result.items()
    ]
    return "egress policy on vs off: " + "; ".join(parts)


def ratios(figures: dict[str, dict[str, Any]], method: str, against: str) -> dict[str, float]:
    return {
        d: round(figures[f"{method}_{d}"]["mbps"] / figures[f"{against}_{d}"]["mbps"], 3)
        for d in ("in", "out")
    }


def targets(
    ratio: dict[str, float], ratio_openssh: dict[str, float], rss: dict[str, float],
    small: dict[str, Any],
) -> dict[str, Any]:  # fmt: skip
    """Each target per client (no suffix: paramiko), and whether some SSH client meets it."""
    met: dict[str, Any] = {}
    for suffix, r, bridge, ssh in (
        ("", ratio, "bridge", "ssh"), ("_openssh", ratio_openssh, "bridge_openssh", "ssh_openssh"),
    ):  # fmt: skip
        met[f"ratio_in{suffix}"] = r["in"] >= TARGET_RATIO
        met[f"ratio_out{suffix}"] = r["out"] >= TARGET_RATIO
        met[f"rss_bridge{suffix}"] = rss.get(bridge, 0.0) <= TARGET_RSS_MIB
        met[f"kousoku_overhead_ssh{suffix}"] = small[ssh]["overhead_seconds"] <= TARGET_OVERHEAD_S
    met["rss_site"] = rss["site"] <= TARGET_RSS_MIB
    met["kousoku_overhead_local"] = small["local"]["overhead_seconds"] <= TARGET_OVERHEAD_S
    keys = ("ratio_in", "ratio_out", "rss_bridge", "kousoku_overhead_ssh")
    suffixes = {"paramiko": "", "openssh": "_openssh"}
    met["any_ssh_client"] = {key: met[key] or met[f"{key}_openssh"] for key in keys} | {
        "clients_meeting_all": [
            client for client, sfx in suffixes.items() if all(met[f"{k}{sfx}"] for k in keys)
        ],
    }
    return met


def summary_line(result: dict[str, Any]) -> str:
    m, k, rss = result["mbps"], result["kousoku"], result["peak_rss_mib"]
    shell = result["shell_session_seconds"]
    r, ro = result["ratio_bridge_over_scp"], result["ratio_bridge_openssh_over_scp"]
    ko = k["ssh_openssh"]
    return (
        f"paramiko in {m['bridge_in']} / out {m['bridge_out']} MB/s (ratio {r['in']} / "
        f"{r['out']}); openssh in {m['bridge_openssh_in']} / out {m['bridge_openssh_out']} MB/s "
        f"(ratio {ro['in']} / {ro['out']}); scp in {m['scp_in']} / out {m['scp_out']} MB/s; "
        f"peak RSS bridge paramiko {rss['bridge']} / openssh {rss.get('bridge_openssh')} "
        f"(ssh {rss.get('ssh_client')}, master {rss.get('ssh_master')}) / site {rss['site']} "
        f"MiB; kousoku overhead paramiko {k['ssh']['overhead_seconds']} s / openssh "
        f"{ko['overhead_seconds']} s (cold {ko['cold_overhead_seconds']}, unshared "
        f"{k['ssh_openssh_unshared']['overhead_seconds']}) / local "
        f"{k['local']['overhead_seconds']} s; shell session {result['site_account']['user']} "
        f"{shell['site_account']} s / root {shell['root']} s"
    )


def progress(message: str) -> None:
    if os.environ.get("BENCH_VERBOSE"):
        print(message, file=sys.stderr, flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mib", type=int, default=1024, help="payload size (default 1024)")
    parser.add_argument("--repeat", type=int, default=3, help="big transfers per method")
    parser.add_argument("--runs", type=int, default=5, help="kousoku-sized jobs per method")
    parser.add_argument(
        "--site-user", default=DEFAULT_SITE_USER,
        help=f"as root: the account the site runs as, created if missing (default "
        f"{DEFAULT_SITE_USER}); '' or not root: the current user",
    )  # fmt: skip
    parser.add_argument(
        "--egress-only", action="store_true",
        help="measure only results out with the egress policy's content rules on vs off",
    )  # fmt: skip
    args = parser.parse_args()
    # A plain kill still stops sshd and removes the GiB-sized temp files (the finally clauses).
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    size = args.size_mib * MIB
    # Generous: even a pathological 5 MB/s moves the payload within it.
    timeout = 60 + size / (5 * MB)
    account = site_account(args.site_user)
    if account.created:
        print(f"created the account {account.user}; it stays for later runs", file=sys.stderr)
    with bench_env(size, timeout, account) as bench:
        machine = machine_info(bench)
        accounts = {"site_account": site_account_info(bench), "shell_session_seconds":
                    shell_sessions(bench)}  # fmt: skip
        series, peaks = measure_transfers(bench, args.repeat, args.egress_only)
        small = {} if args.egress_only else kousoku(bench, args.runs)
    machine["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    if args.egress_only:
        figures = {name: s.summary(size) for name, s in series.items()}
        doc = {"size_bytes": size, "repeat": args.repeat, "egress_policy": egress_policy(figures),
               "details": figures, "machine": machine, "leftover_processes":
               leftover_processes(bench)}  # fmt: skip
        json.dump(doc, sys.stdout, indent=2)
        print()
        print(egress_summary(doc["egress_policy"]), file=sys.stderr)
        return 0
    result = report(size, args.repeat, series, peaks, small, machine) | accounts
    result["leftover_processes"] = leftover_processes(bench)
    if result["leftover_processes"]:
        print(f"killed leftover processes: {result['leftover_processes']}", file=sys.stderr)
    json.dump(result, sys.stdout, indent=2)
    print()
    print(summary_line(result) + "; " + egress_summary(result["egress_policy"]), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
