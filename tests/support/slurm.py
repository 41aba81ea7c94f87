"""A real single-node Slurm cluster (munged, slurmctld, slurmd) in a private directory.

For tests and benchmarks of the batch scheduler adapters (Slurm itself, and the Torque-style
``qsub``/``qstat``/``qdel`` of ``slurm-wlm-torque``, which talk to the same controller).

    cluster = start_slurm(tmp_dir)          # raises SlurmUnavailable if it cannot start
    cluster.env                             # os.environ + SLURM_CONF: pass it to every command
    cluster.run("squeue", "-h")             # a client command with that environment
    cluster.stop()                          # cancels leftover jobs, stops the daemons by PID

Everything lives under ``root``: the generated ``slurm.conf``, state and spool dirs, logs, the
job completion file (``jobcomp.log``, read by ``sacct -c``), and a munged of our own on a
private socket (``AuthInfo=socket=...``), so nothing system-wide is touched and two clusters
can run side by side. Ports are free ones picked at start. Must run as root (Slurm runs jobs
as the submitting user and slurmd must be able to become them).

Settings chosen for tests: ``KillWait=2`` (SIGTERM to SIGKILL after a walltime or cancel),
``OverTimeLimit=0``, the default ``MinJobAge`` (finished jobs stay visible to ``squeue`` and
``scontrol`` for 5 minutes), memory tracked and enforced by polling (``OverMemoryKill``,
there are no cgroups here), and 16 CPUs declared (``config_overrides``) so a few test jobs
run at once on a 2-core machine.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.net import free_port

MUNGED = "/usr/sbin/munged"
SLURMCTLD = "/usr/sbin/slurmctld"
SLURMD = "/usr/sbin/slurmd"
MUNGE_KEY = "/etc/munge/munge.key"
NODE_CPUS = 16
NODE_MEMORY_MB = 16000


class SlurmUnavailable(RuntimeError):
    """Slurm or munge is not installed, or a daemon did not come up (the message says why)."""


@dataclass
class SlurmCluster:
    root: Path
    conf: Path
    jobcomp: Path  # the jobcomp/filetxt file `sacct -c` reads
    env: dict[str, str]
    munge_dir: Path  # munged's socket, pid, seed and log (removed by stop)
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def run(self, *argv: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        """Run a Slurm client command against this cluster (never raises on a non-zero exit)."""
        return subprocess.run(
            list(argv), env=self.env, capture_output=True, text=True, timeout=timeout, check=False
        )

    def job_ids(self) -> list[str]:
        """Ids of the jobs the controller still lists (any state)."""
        out = self.run("squeue", "-h", "-t", "all", "-o", "%i").stdout
        return [line.strip() for line in out.splitlines() if line.strip()]

    def log(self, daemon: str) -> str:
        """A daemon's log file (``slurmctld``, ``slurmd`` or ``munged``), for failure messages."""
        path = self.munge_dir / "munged.log" if daemon == "munged" else self.root / f"{daemon}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        """Cancel our jobs, then stop slurmd, slurmctld and munged (each by its own PID)."""
        if self.procs.get("slurmctld") is not None and self.procs["slurmctld"].poll() is None:
            live = self.run("squeue", "-h", "-o", "%i", timeout=10).stdout.split()
            if live:
                self.run("scancel", *live, timeout=10)
                # Give slurmstepd the KillWait to end the jobs' processes before slurmd goes.
                deadline = time.monotonic() + 10
                while (
                    time.monotonic() < deadline
                    and self.run("squeue", "-h", "-o", "%i", timeout=10).stdout.strip()
                ):
                    time.sleep(0.2)
        for name in ("slurmd", "slurmctld", "munged"):
            proc = self.procs.pop(name, None)
            if proc is None or proc.poll() is not None:
                continue
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        shutil.rmtree(self.munge_dir, ignore_errors=True)


def slurm_conf(root: Path, munge_socket: Path, extra: list[str] | None = None) -> str:
    """The minimal single-node configuration; ``extra`` lines are appended (later ones win)."""
    lines = [
        "ClusterName=mbtest",
        "SlurmctldHost=localhost",
        f"SlurmctldPort={free_port()}",
        f"SlurmdPort={free_port()}",
        "SlurmUser=root",
        "SlurmdUser=root",
        "AuthType=auth/munge",
        "CredType=cred/munge",
        f"AuthInfo=socket={munge_socket}",
        f"StateSaveLocation={root / 'state'}",
        f"SlurmdSpoolDir={root / 'spool'}",
        f"SlurmctldPidFile={root / 'slurmctld.pid'}",
        f"SlurmdPidFile={root / 'slurmd.pid'}",
        f"SlurmctldLogFile={root / 'slurmctld.log'}",
        f"SlurmdLogFile={root / 'slurmd.log'}",
        "SlurmctldDebug=info",
        "SlurmdDebug=info",
        "ProctrackType=proctrack/linuxproc",
        "TaskPlugin=task/none",
        "SelectType=select/cons_tres",
        "SelectTypeParameters=CR_Core_Memory",
        "DefMemPerCPU=100",
        # Memory is enforced by polling the processes' RSS (no cgroups on this machine).
        "JobAcctGatherType=jobacct_gather/linux",
        "JobAcctGatherFrequency=task=1",
        "JobAcctGatherParams=OverMemoryKill",
        "AccountingStorageType=accounting_storage/none",
        "JobCompType=jobcomp/filetxt",
        f"JobCompLoc={root / 'jobcomp.log'}",
        "MailProg=/bin/true",
        "MpiDefault=none",
        "ReturnToService=2",
        "KillWait=2",
        "OverTimeLimit=0",
        "SlurmdParameters=config_overrides",
        f"NodeName=localhost NodeAddr=127.0.0.1 CPUs={NODE_CPUS} RealMemory={NODE_MEMORY_MB} "
        "State=UNKNOWN",
        "PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP",
        *(extra or []),
    ]
    return "\n".join(lines) + "\n"


def start_slurm(
    root: Path, extra_conf: list[str] | None = None, timeout: float = 30
) -> SlurmCluster:
    """Start munged, slurmctld and slurmd under ``root`` and wait until the node is idle."""
    for program in (MUNGED, SLURMCTLD, SLURMD):
        if not os.path.exists(program):
            raise SlurmUnavailable(
                f"{program} is not installed (apt-get install slurmctld slurmd slurm-client munge)"
            )
    for client in ("sbatch", "squeue", "sinfo", "scancel", "munge"):
        if shutil.which(client) is None:
            raise SlurmUnavailable(
                f"{client} is not installed (apt-get install slurm-client munge)"
            )
    if os.geteuid() != 0:
        raise SlurmUnavailable("a test Slurm cluster needs root (slurmd runs jobs as their user)")
    if not os.path.exists(MUNGE_KEY):
        raise SlurmUnavailable(f"{MUNGE_KEY} is missing (reinstall munge, or run mungekey)")
    root.mkdir(parents=True, exist_ok=True)
    for sub in ("state", "spool"):
        (root / sub).mkdir(exist_ok=True)
    # munged runs as the munge user and must reach its socket: not under root, whose parents
    # may be private (pytest's are 0700), and short (a socket path has at most 107 bytes).
    munge_dir = Path(tempfile.mkdtemp(prefix="mb-munge-"))
    munge_user = pwd.getpwnam("munge")
    os.chown(munge_dir, munge_user.pw_uid, munge_user.pw_gid)
    munge_dir.chmod(0o755)
    munge_socket = munge_dir / "munge.socket"
    conf = root / "slurm.conf"
    conf.write_text(slurm_conf(root, munge_socket, extra_conf))
    env = dict(os.environ, SLURM_CONF=str(conf))
    cluster = SlurmCluster(root, conf, root / "jobcomp.log", env, munge_dir)
    try:
        cluster.procs["munged"] = _spawn(
            [
                "setpriv",
                f"--reuid={munge_user.pw_uid}",
                f"--regid={munge_user.pw_gid}",
                "--init-groups",
                MUNGED,
                "--foreground",
                f"--socket={munge_socket}",
                f"--pid-file={munge_dir / 'munged.pid'}",
                f"--log-file={munge_dir / 'munged.log'}",
                f"--seed-file={munge_dir / 'munged.seed'}",
            ],
            root / "munged.out",
            env,
        )
        _wait(
            cluster,
            "munged",
            lambda: cluster.run("munge", "-n", f"--socket={munge_socket}").returncode == 0,
            timeout,
        )
        cluster.procs["slurmctld"] = _spawn(
            [SLURMCTLD, "-D", "-i", "-f", str(conf)], root / "slurmctld.out", env
        )
        cluster.procs["slurmd"] = _spawn(
            [SLURMD, "-D", "-N", "localhost", "-f", str(conf)], root / "slurmd.out", env
        )
        _wait(
            cluster,
            "slurmd",
            lambda: cluster.run("sinfo", "-h", "-o", "%T", timeout=5).stdout.strip() == "idle",
            timeout,
        )
    except BaseException:
        cluster.stop()
        raise
    return cluster


def _spawn(argv: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:
        return subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out, env=env, cwd="/"
        )


def _wait(cluster: SlurmCluster, what: str, ready: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for name, proc in cluster.procs.items():
            if proc.poll() is not None:
                raise SlurmUnavailable(
                    f"{name} exited with {proc.returncode}: {_tail(cluster, name)}"
                )
        try:
            if ready():
                return
        except subprocess.TimeoutExpired:
            pass
        time.sleep(0.2)
    raise SlurmUnavailable(f"{what} not ready after {timeout:.0f} s: {_tail(cluster, what)}")


def _tail(cluster: SlurmCluster, name: str) -> str:
    """The last lines a daemon wrote (its log file, else what it printed on start)."""
    text = cluster.log(name)
    printed = cluster.root / f"{name}.out"
    if printed.exists():
        text += printed.read_text(errors="replace")
    return " | ".join(text.strip().splitlines()[-5:])
