"""Checks run at a site (``mint-bridge health --site-side``), on the site's own machine.

    site.config          the site config loads and validates
    site.program.<cmd>   each command's program exists, is a file, is executable (and so is
                         its ``#!`` interpreter)
    site.scheduler.<s>   each scheduler the commands use answers (``sinfo``, ``qstat -B``),
                         on the login node when ``[scheduler] login_host`` is set
    site.login_node      the login node: reachable, pinned, sharing the work dir
                         (``login_node``)
    site.path_shim       the python3 a program starts through PATH (#!/usr/bin/env) is no
                         pyenv/conda shim (value: what the shim adds to each job, measured)
    site.work_base       the work base exists and this account can create job dirs in it
    site.disk_free       free space where work dirs go (psutil), against thresholds
    site.inodes          free inodes there (a full inode table fails jobs like a full disk)
    site.stale_workdirs  work dirs past retention that `site cleanup` would remove
    site.login_shell     an SSH site: the account's login shell, which sshd runs before every
                         job, starts fast and prints nothing (``login_shell``)
    site.agent           the broker agent runs (a pull site: the config has [agent])
    broker.*             a pull site's broker, as its agent sees it (site token)

Nothing here changes anything: cleanup is asked for a dry run, schedulers only for status.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections import Counter
from dataclasses import dataclass

import psutil

from bridge.core.errors import BridgeError, ConfigError, SchedulerError
from bridge.core.units import parse_size
from bridge.site.cleanup import remove_expired
from bridge.site.config import SiteConfig, load_site_config
from bridge.site.programs import program_problem
from node_setup.health.broker import check_broker
from node_setup.health.broker_access import BrokerTarget
from node_setup.health.login_node import check_login_node, run_there
from node_setup.health.login_shell import check_login_shell
from node_setup.health.path_shims import check_programs_path
from node_setup.health.result import Probe
from node_setup.health.runner import Deadline, Job
from schedulers.login_host import LoginHost

# Node states (sinfo %T, lower case, flags like '*' or '~' stripped) that can run a job.
SLURM_USABLE = {"idle", "mixed", "allocated", "completing", "planned", "reserved"}


@dataclass(frozen=True)
class Threshold:
    """Free space below which a check warns or fails: a percentage or a size in bytes."""

    percent: float | None = None
    size: int | None = None

    def crossed(self, free: int, total: int) -> bool:
        if self.percent is not None:
            return total > 0 and free * 100 / total < self.percent
        return self.size is not None and free < self.size

    def __str__(self) -> str:
        return f"{self.percent:g}%" if self.percent is not None else f"{self.size} B"


def parse_threshold(text: str) -> Threshold:
    text = text.strip()
    if text.endswith("%"):
        try:
            percent = float(text[:-1])
        except ValueError:
            raise ValueError(f"{text!r} is not a percentage; write e.g. 10%") from None
        if not 0 <= percent <= 100:
            raise ValueError(f"{text!r}: a percentage is between 0% and 100%")
        return Threshold(percent=percent)
    return Threshold(size=parse_size(text))


@dataclass(frozen=True)
class SiteThresholds:
    # Like df's alarms: at 10 % free there are days to act; at 2 % jobs start failing.
    disk_warn: Threshold = Threshold(percent=10)
    disk_fail: Threshold = Threshold(percent=2)
    inodes_warn: Threshold = Threshold(percent=10)
    inodes_fail: Threshold = Threshold(percent=2)


def site_side_jobs(
    config_path: str, timeout: float, thresholds: SiteThresholds, agent: bool | None
) -> dict[str, Job]:
    """The site's own checks and, for a pull site, its agent's view of the broker."""
    jobs: dict[str, Job] = {
        "site": lambda probe: check_site_side(config_path, probe, timeout, thresholds, agent)
    }
    try:
        site = load_site_config(config_path)
    except BridgeError:
        return jobs  # the site job reports it
    if site.agent is not None:
        target = BrokerTarget(
            url=site.agent.url,
            token_file=site.agent.token_file,
            ca_bundle=site.agent.ca_bundle,
            allow_http=site.agent.allow_http,
            expected_scope="site",
        )
        jobs["broker"] = lambda probe: check_broker(target, probe, timeout)
    return jobs


def check_site_side(
    config_path: str,
    probe: Probe,
    timeout: float,
    thresholds: SiteThresholds | None = None,
    agent: bool | None = None,
) -> None:
    """All site-side checks; ``agent`` None: the agent is checked when [agent] is set."""
    deadline = Deadline(timeout)
    thresholds = thresholds or SiteThresholds()
    probe.start("site.config")
    try:
        site = load_site_config(config_path)
    except BridgeError as exc:
        fix = exc.fix if isinstance(exc, ConfigError) else "fix the key the message names"
        probe.fail("site.config", config_path, "", str(exc), fix)
        return
    probe.ok("site.config", config_path, "", f"site {site.name}, commands: {len(site.commands)}")
    check_programs(site, probe)
    check_programs_path(probe, [c.program for c in site.commands.values()])
    login = site.scheduler_options.login
    if login is None or check_login_node(login, site.work_base, probe, deadline.left()):
        check_schedulers(site, probe, deadline)
    if check_work_base(site, probe):
        check_disk(site.work_base, probe, thresholds)
        check_stale(site, probe)
    if site.agent is None:  # sshd runs our forced command through the login shell
        check_login_shell(probe, deadline.left())
    if agent or (agent is None and site.agent is not None):
        check_agent(config_path, probe)


# --- programs -------------------------------------------------------------------------------


def check_programs(site: SiteConfig, probe: Probe) -> None:
    for name, command in sorted(site.commands.items()):
        check = f"site.program.{name}"
        probe.start(check)
        problem = program_problem(command.program)
        if problem:
            probe.fail(
                check,
                command.program,
                "",
                problem,
                f"install the program or fix commands.{name}.program in {site.path}",
            )
        else:
            probe.ok(check, command.program, "", "exists and is executable")


# --- schedulers -------------------------------------------------------------------------------

_PROBES = {
    "slurm": ["sinfo", "-h", "-o", "%T"],
    "torque": ["qstat", "-B"],
    "pbspro": ["qstat", "-B"],
}


def check_schedulers(site: SiteConfig, probe: Probe, deadline: Deadline) -> None:
    used = sorted({c.scheduler for c in site.commands.values()} - {"local"})
    limit = site.scheduler_options.command_timeout
    login = site.scheduler_options.login
    for name in used:
        check = f"site.scheduler.{name}"
        probe.start(check, f"`{' '.join(_PROBES[name])}` hangs: the scheduler's server is stuck")
        argv = _PROBES[name]
        if login is not None:  # the commands run there, whatever this machine has on PATH
            _run_probe(name, argv, probe, min(limit, deadline.left()), login)
            continue
        program = shutil.which(argv[0])
        if program is None:
            probe.fail(
                check,
                argv[0],
                "",
                f"{argv[0]} is not on PATH ({os.environ.get('PATH', '')})",
                f"install the {name} client commands or add their directory to PATH "
                "(also in the agent's unit or the account's login environment)",
            )
            continue
        _run_probe(name, [program, *argv[1:]], probe, min(limit, deadline.left()))


def _run_probe(
    name: str, argv: list[str], probe: Probe, timeout: float, login: LoginHost | None = None
) -> None:
    check = f"site.scheduler.{name}"
    shown = " ".join([os.path.basename(argv[0]), *argv[1:]])
    where = f" on login host {login.where}" if login else ""
    try:
        if login is not None:
            proc = run_there(login, argv, timeout)
        else:
            proc = subprocess.run(
                argv, capture_output=True, text=True, timeout=timeout, check=False
            )
    except SchedulerError as exc:
        message, _, fix = exc.message.rpartition("; ")
        probe.fail(check, shown, "", message or exc.message, fix or "see the message")
        return
    except subprocess.TimeoutExpired:
        probe.fail(
            check,
            timeout,
            "s",
            f"`{shown}`{where} gave no answer within {timeout:g} s",
            f"the {name} server does not answer: ask the cluster admins",
        )
        return
    except OSError as exc:
        probe.fail(check, shown, "", f"cannot run `{shown}`: {exc}", "check the installation")
        return
    if proc.returncode != 0:
        said = (proc.stderr.strip().splitlines() or ["no message"])[-1][:300]
        probe.fail(
            check,
            proc.returncode,
            "exit status",
            f"`{shown}`{where} failed: {said}",
            f"the {name} client{where} cannot reach its server: check its config and daemons",
        )
        return
    if name == "slurm":
        _slurm_states(proc.stdout, probe)
    else:
        probe.ok(check, "answers", "", f"`{shown}`{where} answered")


def _slurm_states(output: str, probe: Probe) -> None:
    states = Counter(re.sub(r"[*~#!%$@^+-]+$", "", s.strip().lower()) for s in output.split())
    summary = ", ".join(f"{count} {state}" for state, count in sorted(states.items()))
    if not any(state in SLURM_USABLE for state in states):
        probe.warn(
            "site.scheduler.slurm",
            summary or "no nodes",
            "",
            "no node can run jobs",
            "jobs will wait in the queue: ask the cluster admins to resume the nodes",
        )
    else:
        probe.ok("site.scheduler.slurm", summary, "", "sinfo answered")


# --- work base, disk and inodes --------------------------------------------------------------


def check_work_base(site: SiteConfig, probe: Probe) -> bool:
    probe.start("site.work_base")
    path = site.work_base
    if not os.path.isdir(path):
        probe.fail(
            "site.work_base",
            path,
            "",
            "does not exist or is not a directory",
            f"create it (mkdir -m 700 {path}) or fix [site] work_base in {site.path}",
        )
        return False
    if not os.access(path, os.W_OK | os.X_OK):
        probe.fail(
            "site.work_base",
            path,
            "",
            "this account cannot create job dirs in it",
            "give the account write access or choose another work_base",
        )
        return False
    probe.ok("site.work_base", path, "", "job dirs can be created")
    return True


def check_disk(path: str, probe: Probe, limits: SiteThresholds) -> None:
    probe.start("site.disk_free")
    usage = psutil.disk_usage(path)
    free, total = int(usage.free), int(usage.total)
    seen = f"{_gib(free)} free of {_gib(total)} in {path}"
    fix = f"free space in {path} (`mint-bridge site cleanup`, old files) or move work_base"
    if limits.disk_fail.crossed(free, total):
        probe.fail("site.disk_free", free, "B", f"{seen}: below {limits.disk_fail}", fix)
    elif limits.disk_warn.crossed(free, total):
        probe.warn("site.disk_free", free, "B", f"{seen}: below {limits.disk_warn}", fix)
    else:
        probe.ok("site.disk_free", free, "B", seen)
    _check_inodes(path, probe, limits)


def _check_inodes(path: str, probe: Probe, limits: SiteThresholds) -> None:
    probe.start("site.inodes")
    st = os.statvfs(path)
    total, free = int(st.f_files), int(st.f_favail)
    if total == 0:  # btrfs and some network file systems have no fixed inode table
        probe.ok("site.inodes", None, "", "the file system has no inode limit")
        return
    seen = f"{free} of {total} inodes free in {path}"
    fix = f"remove many small files under {path} (old work dirs: `mint-bridge site cleanup`)"
    if limits.inodes_fail.crossed(free, total):
        probe.fail("site.inodes", free, "inodes", f"{seen}: below {limits.inodes_fail}", fix)
    elif limits.inodes_warn.crossed(free, total):
        probe.warn("site.inodes", free, "inodes", f"{seen}: below {limits.inodes_warn}", fix)
    else:
        probe.ok("site.inodes", free, "inodes", seen)


def _gib(size: int) -> str:
    return f"{size / 2**30:.1f} GiB" if size >= 2**30 else f"{size / 2**20:.1f} MiB"


def check_stale(site: SiteConfig, probe: Probe) -> None:
    probe.start("site.stale_workdirs")
    stale = remove_expired(site, dry_run=True)
    if stale:
        probe.warn(
            "site.stale_workdirs",
            len(stale),
            "dirs",
            f"{len(stale)} work dirs are past their retention, e.g. {stale[0]}",
            f"run `mint-bridge site cleanup --config {site.path}` hourly from cron",
        )
    else:
        probe.ok("site.stale_workdirs", 0, "dirs", "none past retention")


# --- the broker agent -------------------------------------------------------------------------


def check_agent(config_path: str, probe: Probe) -> None:
    probe.start("site.agent")
    pids = agent_pids(config_path)
    if pids:
        probe.ok("site.agent", pids[0], "pid", f"mint-bridge agent runs ({len(pids)} process)")
    else:
        probe.fail(
            "site.agent",
            None,
            "",
            f"no `mint-bridge agent` process runs for {config_path}",
            "start it: systemctl enable --now mint-bridge-agent.service "
            "(then: journalctl -u mint-bridge-agent)",
        )


def agent_pids(config_path: str) -> list[int]:
    """PIDs of agents serving ``config_path``: ``mint-bridge agent --config FILE`` or
    ``python -m bridge.site.agent FILE``."""
    wanted = os.path.abspath(config_path)
    found: list[int] = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        argv = proc.info.get("cmdline") or []
        configs = _agent_configs(argv)
        if configs is not None and (not configs or wanted in configs):
            found.append(int(proc.info["pid"]))
    return sorted(found)


def _agent_configs(argv: list[str]) -> list[str] | None:
    """The config paths an agent's command line names; None when it is not an agent."""
    if "bridge.site.agent" in argv:
        index = argv.index("bridge.site.agent")
        return [os.path.abspath(a) for a in argv[index + 1 : index + 2]]
    is_cli = any(os.path.basename(a) == "mint-bridge" or a == "bridge.cli" for a in argv)
    if not is_cli or "agent" not in argv:
        return None
    return [os.path.abspath(argv[i + 1]) for i, a in enumerate(argv[:-1]) if a == "--config"]
