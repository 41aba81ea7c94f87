"""A real OpenPBS (server, scheduler, comm, mom and its datastore) in namespaces of its own.

OpenPBS refuses a host whose name resolves only to loopback, and the machine itself must never
get another address for it. So everything PBS runs in a network, mount, UTS and PID namespace
made by ``unshare``: a veth pair inside it carries a private address, the host name is set to
``HOST``, and a private ``/etc/hosts``, ``/etc/pbs.conf`` and ``PBS_HOME`` (a copy of the
installed ``/var/spool/pbs`` skeleton) are bind-mounted over the system's, in that mount
namespace only. Traffic stays inside; nothing system-wide is changed.

    pbs = start_openpbs(root)               # raises OpenPbsUnavailable if it cannot start
    pbs.run("qstat", "-B")                  # a command inside the namespaces, as root
    pbs.run("qsub", ..., user=True)         # ... as the ordinary account jobs run as
    pbs.set_history(True)                   # qmgr: job_history_enable on or off
    pbs.stop()                              # SIGKILL to the namespace's init: all of PBS ends

The namespace's first process (``init``) holds it; its host PID is what ``nsenter`` joins and
what ``stop`` kills, which ends every process of the PID namespace at once. Settings chosen for
tests: output delivered by copy (``$usecp *:/ /``), limits checked every 1-2 s
(``$min_check_poll``/``$max_check_poll``), the queue's ``kill_delay`` (SIGTERM to SIGKILL)
2 s, history off as PBS ships it, the server's default ``workq``. Must run as root (PBS's
daemons and ``unshare`` need it); jobs are submitted as ``USER`` (root is refused by PBS).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

PBS_EXEC = Path("/opt/pbs")
PBS_HOME_SKELETON = Path("/var/spool/pbs")  # written by pbs_postinstall; only ever copied
HOST = "pbstest"
ADDRESS = "10.254.19.1"  # on the namespace's own veth pair, never on the machine
USER = "mbpbs"
# PBS's commands first: slurm-wlm-torque installs a qsub/qstat of its own into /usr/bin.
PATH = f"{PBS_EXEC / 'bin'}:{PBS_EXEC / 'sbin'}:/usr/sbin:/usr/bin:/sbin:/bin"

PBS_CONF = f"""PBS_SERVER={HOST}
PBS_START_SERVER=1
PBS_START_SCHED=1
PBS_START_COMM=1
PBS_START_MOM=1
PBS_EXEC={PBS_EXEC}
PBS_HOME={PBS_HOME_SKELETON}
PBS_CORE_LIMIT=unlimited
PBS_SCP=/usr/bin/scp
"""
# Output delivered by copy; limits (walltime, mem) checked every 1-2 s instead of 10-120 s.
MOM_CONFIG = f"$clienthost {HOST}\n$usecp *:/ /\n$min_check_poll 1\n$max_check_poll 2\n"
# Run by bash as the namespace's init: network, host name and the private files, then it
# waits for `stop`. "ready" tells the starter that the namespaces are set up.
BOOT = """set -eu
ip link set lo up
ip link add pbs0 type veth peer name pbs1
ip addr add {address}/24 dev pbs0
ip link set pbs1 up
ip link set pbs0 up
mount --bind {root}/hosts /etc/hosts
mount --bind {root}/pbs.conf /etc/pbs.conf
mount --bind {root}/home {pbs_home}
hostname {host}
{expose}
echo ready
exec sleep infinity
"""


class OpenPbsUnavailable(RuntimeError):
    """OpenPBS is not installed, or it did not come up (the message says why)."""


@dataclass
class OpenPbs:
    root: Path  # pbs.conf, hosts, the private PBS_HOME (home/) and the logs of the start
    init: psutil.Process  # the namespace's first process, as the machine sees it
    holder: subprocess.Popen[bytes]  # unshare, its parent
    uid: int
    gid: int

    def argv(self, argv: list[str], user: bool = False, cwd: Path | None = None) -> list[str]:
        """``argv`` run inside the namespaces (as ``USER`` when ``user``) in ``cwd`` (``/``);
        nsenter itself sets it, as joining the mount namespace resets it."""
        enter = ["nsenter", "-t", str(self.init.pid), "-n", "-m", "-u", "-p"]
        enter += [f"--wdns={cwd or '/'}", "--"]
        if user:
            enter += ["setpriv", f"--reuid={self.uid}", f"--regid={self.gid}", "--init-groups"]
        return [*enter, *argv]

    def env(self, **extra: str) -> dict[str, str]:
        """The environment for commands inside: PBS's own commands first on PATH."""
        base = {k: v for k, v in os.environ.items() if not k.startswith(("PBS_", "SLURM_"))}
        return {**base, "PATH": PATH, "HOME": str(self.root), **extra}

    def run(
        self, *argv: str, user: bool = False, timeout: float = 30, input: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run a command inside the namespaces (never raises on a non-zero exit)."""
        return subprocess.run(
            self.argv(list(argv), user),
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            input=input,
        )

    def qmgr(self, command: str) -> None:
        done = self.run("qmgr", "-c", command)
        if done.returncode != 0:
            raise OpenPbsUnavailable(f"qmgr -c {command!r}: {done.stderr.strip()}")

    def set_history(self, enabled: bool) -> None:
        """Keep ended jobs in ``qstat -x`` (and their Exit_status), or not (PBS's default)."""
        self.qmgr(f"set server job_history_enable={'true' if enabled else 'false'}")

    def job_ids(self) -> list[str]:
        """Ids of the jobs the server lists now (without history)."""
        out = self.run("qselect").stdout
        return [line.strip() for line in out.splitlines() if line.strip()]

    def log(self, daemon: str = "server") -> str:
        """Today's log of ``server``, ``mom``, ``sched`` or ``comm``, for failure messages."""
        logs = sorted((self.root / "home" / f"{daemon}_logs").glob("*"))
        return logs[-1].read_text(errors="replace") if logs else ""

    def stop(self) -> None:
        """SIGKILL to the namespace's init: the kernel then ends every process inside it."""
        with contextlib.suppress(psutil.NoSuchProcess):
            self.init.send_signal(signal.SIGKILL)
        try:
            self.holder.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.holder.kill()
            self.holder.wait()


def ensure_user(name: str = USER) -> pwd.struct_passwd:
    """The ordinary account jobs run as, made once. pbs_mom cds to its home before a job
    starts and fails the job (JOB_EXEC_FAIL2) without one, so a missing home becomes ``/``."""
    try:
        account = pwd.getpwnam(name)
    except KeyError:
        subprocess.run(["useradd", "-M", "-d", "/", "-s", "/bin/bash", name], check=True)
        return pwd.getpwnam(name)
    if not os.path.isdir(account.pw_dir):
        subprocess.run(["usermod", "-d", "/", name], check=True)
        account = pwd.getpwnam(name)
    return account


def user_dir(prefix: str) -> Path:
    """A fresh directory the job account owns, outside pytest's root-only temp tree."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    account = ensure_user()
    os.chown(path, account.pw_uid, account.pw_gid)
    return path


def start_openpbs(root: Path, timeout: float = 120) -> OpenPbs:
    """Start OpenPBS in namespaces of its own under ``root`` and wait until its node is free."""
    for program in ("bin/qsub", "sbin/pbs_server", "libexec/pbs_init.d"):
        if not (PBS_EXEC / program).exists():
            raise OpenPbsUnavailable(
                f"{PBS_EXEC / program} is missing: build OpenPBS with scripts/build_openpbs.sh"
            )
    if os.geteuid() != 0:
        raise OpenPbsUnavailable("a test OpenPBS needs root (its daemons and unshare)")
    for tool in ("unshare", "nsenter", "ip", "setpriv", "useradd"):
        if shutil.which(tool) is None:
            raise OpenPbsUnavailable(f"{tool} is not installed (util-linux, iproute2, passwd)")
    account = ensure_user()
    root.mkdir(parents=True, exist_ok=True)
    (root / "pbs.conf").write_text(PBS_CONF)
    (root / "hosts").write_text(f"127.0.0.1 localhost\n{ADDRESS} {HOST}\n")
    home = root / "home"
    shutil.copytree(PBS_HOME_SKELETON, home, symlinks=True)
    (home / "mom_priv" / "config").write_text(MOM_CONFIG)
    boot = root / "boot.sh"
    expose = "\n".join(_expose_interpreter(root, Path(os.path.realpath(sys.executable))))
    boot.write_text(
        BOOT.format(
            address=ADDRESS, root=root, pbs_home=PBS_HOME_SKELETON, host=HOST, expose=expose
        )
    )
    with open(root / "boot.out", "wb") as out:
        holder = subprocess.Popen(
            ["unshare", "--net", "--mount", "--uts", "--pid", "--fork", "--mount-proc",
             "--kill-child", "bash", str(boot)],
            stdin=subprocess.DEVNULL, stdout=out, stderr=out, cwd="/",
        )  # fmt: skip
    pbs: OpenPbs | None = None
    try:
        init = _wait_for_init(holder, root / "boot.out")
        pbs = OpenPbs(root, init, holder, account.pw_uid, account.pw_gid)
        started = pbs.run(str(PBS_EXEC / "libexec" / "pbs_init.d"), "start", timeout=timeout)
        printed = started.stdout + started.stderr
        (root / "start.out").write_text(printed)
        if started.returncode != 0:
            raise OpenPbsUnavailable(
                f"pbs_init.d start exited {started.returncode}: {_tail(printed)}"
            )
        _wait_for_node(pbs, timeout)
        pbs.qmgr("set queue workq kill_delay=2")
    except BaseException:
        if pbs is not None:
            pbs.stop()
        else:
            holder.kill()
            holder.wait()
        raise
    return pbs


def _expose_interpreter(root: Path, interpreter: Path) -> list[str]:
    """Boot lines that let the job account reach this Python inside the namespace.

    The site code runs as ``USER`` with the test run's own interpreter, which may live under a
    directory only root may enter (a pyenv build in ``/root``). Inside the mount namespace
    that directory is covered with an empty tmpfs and only the interpreter's tree is
    bind-mounted back; outside, nothing changes."""
    for parent in interpreter.parents:
        if parent == parent.parent or os.stat(parent).st_mode & 0o001:
            continue
        child = interpreter.relative_to(parent).parts[0]
        stage = root / "expose"
        return [
            f"mkdir -p {stage}",
            f"mount --bind {parent / child} {stage}",
            f"mount -t tmpfs -o mode=755 mb-expose {parent}",
            f"mkdir -p {parent / child}",
            f"mount --bind {stage} {parent / child}",
        ]
    return []


def _wait_for_init(holder: subprocess.Popen[bytes], boot_out: Path) -> psutil.Process:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if holder.poll() is not None:
            raise OpenPbsUnavailable(
                f"the namespace did not come up (exit {holder.returncode}): "
                f"{_tail(boot_out.read_text(errors='replace'))}"
            )
        children = psutil.Process(holder.pid).children()
        if children and "ready" in boot_out.read_text(errors="replace"):
            return children[0]
        time.sleep(0.05)
    raise OpenPbsUnavailable("the namespace did not come up within 15 s")


def _wait_for_node(pbs: OpenPbs, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    state = ""
    while time.monotonic() < deadline:
        done = pbs.run("pbsnodes", HOST, timeout=10)
        state = next(
            (line.split("=", 1)[1].strip() for line in done.stdout.splitlines()
             if line.strip().startswith("state =")),
            "",
        )  # fmt: skip
        if state == "free":
            return
        time.sleep(0.3)
    raise OpenPbsUnavailable(
        f"the PBS node is {state or 'unknown'} after {timeout:.0f} s: {_tail(pbs.log('server'))}"
    )


def _tail(text: str) -> str:
    return " | ".join(text.strip().splitlines()[-5:])
