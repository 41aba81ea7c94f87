"""``mint-bridge setup site``: prepare an external computer to run MInt's jobs.

Run by the site admin, as the account MInt's jobs run under. It detects schedulers, Python,
mint-bridge and the work base's free space, asks only for what it cannot know (MInt's IP and
public key for SSH; the broker's URL and the agent's token for the broker method), and then:

- creates the layout, each directory 0700: the site config dir, ``~/mint-site/programs``, the
  private data dir ``~/mint-site/private`` (read by the site's programs where it lies, never
  sent back), the log dir, and the work base if it is missing (a shared ``/tmp`` is left as is);
- writes a commented site config with one example command and its example program;
- SSH: adds exactly one ``authorized_keys`` line for MInt's key, forcing our entry point, with
  ``restrict`` and ``from=`` (see ``authorized_keys``);
- broker: stores the agent's token in a 0600 file and writes a sandboxed systemd unit for
  ``mint-bridge agent`` (see ``systemd``), checked with ``systemd-analyze verify``.

The closing notes say what is left to do; for SSH, also when the account's login shell (which
sshd runs before every job) is slow to start or unusable (``health.login_shell``).

The token is never taken from the command line, never printed, and never shown in a diff.
"""

from __future__ import annotations

import glob
import logging
import os
import pwd
import re
import stat
import subprocess
import tempfile
from dataclasses import dataclass, field

from bridge.core.broker_endpoint import check_broker_url
from bridge.core.errors import BridgeError
from bridge.site.config import load_site_config
from node_setup import authorized_keys as ak
from node_setup import changes, cleanup_timer, host_keys, scheduler_check, systemd
from node_setup.config_files import read_text
from node_setup.detect import Detected, detect
from node_setup.errors import MissingValue, SetupError
from node_setup.health.login_shell import startup_advice
from node_setup.login_node_setup import (
    LoginSetup,
    login_setup,
    render_scheduler_table,
    update_scheduler_table,
)
from node_setup.prompt import Prompter, need
from node_setup.site_config_edit import update_site_config
from node_setup.site_layout import SiteOptions, SitePaths, site_paths
from node_setup.site_templates import (
    EXAMPLE_PROGRAM,
    render_agent_table,
    render_site_config,
    toml_str,
)
from schedulers import NAMES as SCHEDULERS

SITE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")  # as site names in the bridge config
TOKEN = re.compile(r"[A-Za-z0-9._~+/=-]{16,512}")  # becomes an HTTP header value: no spaces
SYSTEM_UNIT_DIR = "/etc/systemd/system"
SSHD_TIMEOUT = 5.0  # seconds for this host's own sshd to answer a key exchange
LOW_DISK = 5 << 30  # below 5 GiB free in the work base, setup warns (solvers write a lot)

log = logging.getLogger(__name__)


@dataclass
class SiteSetupResult:
    paths: SitePaths
    steps: list[changes.Step]
    applied: bool
    notes: list[str] = field(default_factory=list)


def setup_site(options: SiteOptions, prompter: Prompter) -> SiteSetupResult:
    _check_choices(options)
    paths = site_paths(options)
    found = detect(paths.work_base)
    _report_detected(found, paths, prompter)
    scheduler = choose_scheduler(
        options.scheduler,
        working_schedulers(options.scheduler, found.schedulers, prompter),
        prompter,
    )
    login = login_setup(options, paths.config_dir, prompter)
    mint_bridge = options.mint_bridge or found.mint_bridge
    mint_bridge = need(prompter, mint_bridge, "--mint-bridge", "Path of the mint-bridge command")
    if not os.path.isabs(mint_bridge):
        raise SetupError(f"--mint-bridge {mint_bridge!r} must be an absolute path")
    broker = _broker_inputs(options, prompter) if options.method == "broker" else None
    plan = changes.Plan()
    _plan_layout(plan, paths)
    _plan_site_config(plan, options, paths, scheduler, broker, login)
    if broker is None:
        _plan_ssh(plan, options, paths, mint_bridge, prompter)
    else:
        _plan_agent(plan, options, paths, mint_bridge, broker, prompter)
    _plan_cleanup(plan, options, paths, mint_bridge)
    _plan_notes(plan, options, paths, mint_bridge)
    return _review_and_apply(plan, options, paths, prompter)


def _check_choices(options: SiteOptions) -> None:
    if not SITE_ID.fullmatch(options.site_id):
        raise SetupError(
            f"--site-id {options.site_id!r:.80}: use letters, digits, '_', '.', '-' "
            "(at most 64), e.g. rme-u-tokyo"
        )
    if options.method not in ("ssh", "broker"):
        raise SetupError(f"--method {options.method!r}: use ssh or broker")
    if options.scheduler is not None and options.scheduler not in SCHEDULERS:
        raise SetupError(f"--scheduler {options.scheduler!r}: use one of {', '.join(SCHEDULERS)}")


def _report_detected(found: Detected, paths: SitePaths, prompter: Prompter) -> None:
    schedulers = ", ".join(found.schedulers) or "none (jobs run as local processes)"
    prompter.echo(f"detected: schedulers on PATH: {schedulers}")
    prompter.echo(f"detected: Python {found.python}")
    prompter.echo(f"detected: mint-bridge: {found.mint_bridge or 'not found'}")
    if found.work_base_free is not None:
        prompter.echo(f"detected: {found.work_base_free / 2**30:.1f} GiB free in {paths.work_base}")
        if found.work_base_free < LOW_DISK:
            prompter.echo(
                f"warning: less than {LOW_DISK >> 30} GiB free in the work base "
                f"{paths.work_base}; choose another with --work-base"
            )
    if not found.python_ok:
        prompter.echo("warning: mint-bridge needs Python 3.11 or newer")


def working_schedulers(
    given: str | None, found: tuple[str, ...], prompter: Prompter
) -> tuple[str, ...]:
    """The schedulers found on PATH whose server answers; each one passed over is named."""
    if given or not found:
        return found  # the admin's --scheduler is taken as given (the cluster may come later)
    working: list[str] = []
    for result in scheduler_check.check_all(found):
        if result.answers:
            working.append(result.name)
        else:
            prompter.echo(f"scheduler {result.name} not chosen: {result.reason}")
    if not working:
        prompter.echo(
            "scheduler: local (no scheduler found on PATH answers); pass --scheduler to choose "
            "one anyway"
        )
    return tuple(working)


def choose_scheduler(given: str | None, found: tuple[str, ...], prompter: Prompter) -> str:
    """The flag, else the only scheduler found, else the admin's choice; none found: local."""
    if given:
        return given
    if not found:
        return "local"
    if len(found) == 1:
        return found[0]
    if not prompter.interactive:
        raise MissingValue(
            f"found the commands of several schedulers ({', '.join(found)}); "
            "pass --scheduler to say which one runs jobs here"
        )
    answer = prompter.ask(f"Scheduler ({', '.join([*found, 'local'])})", found[0]).strip()
    if answer not in SCHEDULERS:
        raise SetupError(f"{answer!r} is not a scheduler; use one of {', '.join(SCHEDULERS)}")
    return answer


# --- the plan -------------------------------------------------------------------------------


def _plan_layout(plan: changes.Plan, paths: SitePaths) -> None:
    for directory in (paths.config_dir, paths.site_dir, paths.programs, paths.private):
        plan.mkdir(directory, 0o700)
    plan.mkdir(paths.state_dir, 0o700)
    # A shared work base (/tmp) is left as it is: each job's own dir is created 0700.
    shared = os.path.isdir(paths.work_base)
    plan.mkdir(paths.work_base, 0o700, tighten=not shared)
    if shared:
        mode = stat.S_IMODE(os.stat(paths.work_base).st_mode)
        if mode & 0o002 and not mode & stat.S_ISVTX:
            raise SetupError(
                f"work base {paths.work_base} is writable by everyone without the sticky bit "
                f"(mode {mode:04o}); others could replace job dirs: chmod +t it or choose "
                "another with --work-base"
            )


def _plan_site_config(
    plan: changes.Plan,
    options: SiteOptions,
    paths: SitePaths,
    scheduler: str,
    broker: BrokerInputs | None,
    login: LoginSetup | None,
) -> None:
    planned = {} if login is None else {login.known_hosts: login.known_hosts_text}
    for path, content in planned.items():
        plan.write(path, content, 0o600, edit=True)
    old = read_text(paths.site_config)
    if old and not options.force:
        _plan_site_update(plan, options, paths, old, scheduler, broker, login)
        return
    text = render_site_config(options.site_id, paths, scheduler)
    if login is not None:
        text += render_scheduler_table(login)
    if broker is not None:
        text += render_agent_table(paths, broker.url, broker.ca_bundle, broker.allow_http)
    _validate_site_config(text, planned)
    plan.write(paths.site_config, text, 0o600)
    plan.write(paths.example_program, EXAMPLE_PROGRAM, 0o700)


def _plan_site_update(
    plan: changes.Plan,
    options: SiteOptions,
    paths: SitePaths,
    old: str,
    scheduler: str,
    broker: BrokerInputs | None,
    login: LoginSetup | None,
) -> None:
    """An existing config is the admin's: only the keys setup owns change (diff shown)."""
    agent = None if broker is None else (broker.url, broker.ca_bundle, broker.allow_http)
    text = update_site_config(paths.site_config, old, options.site_id, agent, paths)
    planned = {}
    if login is not None:
        text = update_scheduler_table(paths.site_config, text, login)
        planned[login.known_hosts] = login.known_hosts_text
    _validate_site_config(text, planned)
    plan.write(paths.site_config, text, 0o600, edit=True)
    if options.scheduler and f"scheduler = {toml_str(scheduler)}" not in text:
        plan.note(
            f"the commands in {paths.site_config} were left as they are: set scheduler = "
            f"{toml_str(scheduler)} in those that should use {scheduler} (or rerun with --force "
            "to write a new config, dropping your commands)"
        )


def _validate_site_config(text: str, planned: dict[str, str] | None = None) -> None:
    """The generated config must load with the same code the site entry uses; ``planned``
    files it names (not written yet) stand in from copies in a temporary directory."""
    with tempfile.TemporaryDirectory(prefix="mint-bridge-setup-") as tmp:
        for index, (planned_path, content) in enumerate((planned or {}).items()):
            stand_in = os.path.join(tmp, f"planned-{index}")
            with open(stand_in, "w", encoding="utf-8") as handle:
                handle.write(content)
            text = text.replace(toml_str(planned_path), toml_str(stand_in))
        path = os.path.join(tmp, "site.toml")
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(text)
        try:
            load_site_config(path)
        except BridgeError as exc:
            raise SetupError(f"the generated site config is invalid: {exc}") from exc


def _plan_ssh(
    plan: changes.Plan,
    options: SiteOptions,
    paths: SitePaths,
    mint_bridge: str,
    prompter: Prompter,
) -> None:
    mint_ip = need(prompter, options.mint_ip, "--mint-ip", "IP address of MInt's bridge node")
    key_file = need(prompter, options.mint_key, "--mint-key", "MInt's public key file (.pub)")
    key = ak.parse_public_key(_read_key_file(key_file), key_file)
    command = ak.forced_command(mint_bridge, paths.site_config)
    line = ak.key_line(key, command, mint_ip)
    existing = read_text(paths.authorized_keys)
    content, replaces = ak.merge(existing, line, key)
    plan.mkdir(paths.ssh_dir, 0o700)
    plan.write(paths.authorized_keys, content, 0o600, edit=True, needs_force=replaces)
    plan.note(f"MInt's key {key.fingerprint} may now run only the forced command, from {mint_ip}")


def _read_key_file(path: str) -> str:
    try:
        with open(os.path.expanduser(path), encoding="utf-8") as handle:
            return handle.read(16384)
    except FileNotFoundError as exc:
        raise MissingValue(f"--mint-key {path}: no such file; ask MInt's admin for it") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise SetupError(f"--mint-key {path}: cannot read it: {exc}") from exc


@dataclass(frozen=True)
class BrokerInputs:
    url: str
    token: str = field(repr=False)  # never shown, not even in a traceback's locals repr
    ca_bundle: str | None = None
    allow_http: bool = False


def _broker_inputs(options: SiteOptions, prompter: Prompter) -> BrokerInputs:
    url = need(prompter, options.broker_url, "--broker-url", "Broker URL (https://...)")
    url = check_broker_url(url, options.allow_http, "--broker-url")
    token = options.token
    if not token and prompter.interactive:
        token = prompter.ask("Agent token (input hidden)", hidden=True).strip()
    if not token:
        raise MissingValue(
            "the agent's token is required; pipe it in with --token-stdin or name a file with "
            "--token-file (never on the command line)"
        )
    if not TOKEN.fullmatch(token):
        raise SetupError("the agent token is not a token (one line, no spaces); nothing stored")
    ca_bundle = options.ca_bundle
    if ca_bundle:
        ca_bundle = os.path.abspath(os.path.expanduser(ca_bundle))
        if not os.path.isfile(ca_bundle):
            raise SetupError(f"--ca-bundle {ca_bundle}: no such file")
    return BrokerInputs(url, token, ca_bundle, options.allow_http)


def _plan_units_dir(plan: changes.Plan, paths: SitePaths) -> None:
    system_dir = paths.unit_dir == SYSTEM_UNIT_DIR
    plan.mkdir(paths.unit_dir, 0o755 if system_dir else 0o700, tighten=not system_dir)


def _plan_cleanup(
    plan: changes.Plan, options: SiteOptions, paths: SitePaths, mint_bridge: str
) -> None:
    if options.method != "broker":
        _plan_units_dir(plan, paths)  # the agent's plan made it already
    units = cleanup_timer.CleanupUnits(
        site_id=options.site_id,
        exec_argv=[mint_bridge, "site", "cleanup", "--config", paths.site_config],
        user=options.agent_user or pwd.getpwuid(os.getuid()).pw_name,
        writable=[paths.work_base, paths.state_dir],
    )
    plan.write(paths.cleanup_service, units.service(), 0o644)
    plan.write(paths.cleanup_timer, units.timer(), 0o644)


def systemd_runs() -> bool:
    """systemd is PID 1 here (sd_booted's test); in a container it often is not."""
    return os.path.isdir("/run/systemd/system")


def _start_units(options: SiteOptions, paths: SitePaths, prompter: Prompter) -> None:
    """As root with systemd running, enable what was just written; else the notes say how."""
    if paths.unit_dir != SYSTEM_UNIT_DIR or os.geteuid() != 0 or not systemd_runs():
        return
    names = [cleanup_timer.TIMER_NAME]
    if options.method == "broker":
        names.insert(0, systemd.UNIT_NAME)
    for argv in (["systemctl", "daemon-reload"], ["systemctl", "enable", "--now", *names]):
        done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
        if done.returncode != 0:
            raise SetupError(
                f"`{' '.join(argv)}` failed ({done.returncode}): {done.stderr.strip()[:300]}; "
                "the unit files are written: fix the cause and run it again"
            )
    prompter.echo(f"enabled and started: {', '.join(names)}")


def _plan_agent(
    plan: changes.Plan,
    options: SiteOptions,
    paths: SitePaths,
    mint_bridge: str,
    broker: BrokerInputs,
    prompter: Prompter,
) -> None:
    plan.write(paths.token_file, broker.token + "\n", 0o600, secret=True)
    user = options.agent_user or pwd.getpwuid(os.getuid()).pw_name
    unit = systemd.AgentUnit(
        site_id=options.site_id,
        exec_argv=[mint_bridge, "agent", "--config", paths.site_config],
        user=user,
        writable=[paths.work_base, paths.state_dir],
    )
    _plan_units_dir(plan, paths)
    plan.write(paths.unit_file, unit.render(), 0o644)
    if user == "root":
        prompter.echo(
            "warning: the agent would run as root; pass --agent-user with the site account"
        )


def _plan_notes(
    plan: changes.Plan, options: SiteOptions, paths: SitePaths, mint_bridge: str
) -> None:
    cleanup = f"{mint_bridge} site cleanup --config {paths.site_config}"
    plan.note(
        f"{cleanup_timer.TIMER_NAME} removes expired work dirs hourly (without systemd, "
        f"in crontab: 17 * * * * {cleanup}); `userdel` leaves the work dirs in "
        f"{paths.work_base} behind: run the cleanup (or remove them) before deleting the account"
    )
    plan.note(f"check this site: {mint_bridge} health --site-side --config {paths.site_config}")
    if options.method == "ssh":
        prints, source = served_host_keys(options.ssh_port)
        given = f"--fingerprint {prints[0][1]}" if prints else "--fingerprint SHA256:..."
        shown = ", ".join(f"{kind} {fp}" for kind, fp in prints) or (
            "see: ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub"
        )
        plan.note(
            "give MInt's admin, by a channel other than this connection: the site id "
            f"{options.site_id}, this host's address and SSH port {options.ssh_port}, and the "
            f"host key fingerprint ({shown}; {source})"
        )
        where = "HOST" if options.ssh_port == 22 else f"HOST:{options.ssh_port}"
        plan.note(
            f"MInt's admin then runs: mint-bridge setup add-site {options.site_id} "
            f"--ssh {where} {given}"
        )
        shell = startup_advice()  # sshd runs each job through the login shell
        if shell:
            plan.note(shell)
    units = [paths.cleanup_service, paths.cleanup_timer]
    names = [cleanup_timer.TIMER_NAME]
    if options.method == "broker":
        units.insert(0, paths.unit_file)
        names.insert(0, systemd.UNIT_NAME)
    enable = f"systemctl daemon-reload && systemctl enable --now {' '.join(names)}"
    if paths.unit_dir != SYSTEM_UNIT_DIR:
        plan.note(
            f"as root, install and start the units: install -m 0644 {' '.join(units)} "
            f"{SYSTEM_UNIT_DIR}/ && {enable}"
        )
    elif not systemd_runs():
        plan.note(f"systemd is not running here; once it is, run: {enable}")


def served_host_keys(port: int) -> tuple[list[tuple[str, str]], str]:
    """(type, fingerprint) of the host keys of the sshd on ``port`` here, and where from.

    MInt reaches whichever sshd serves that port, which need not use ``/etc/ssh``'s keys (a
    second sshd, a container, another ``HostKey``): so the server itself is asked, with a
    bare key exchange per key type, as ``add-site`` will do. The files are the fallback
    when nothing answers on the port, and the note says so.
    """
    connect = host_keys.tcp_socket("127.0.0.1", port, SSHD_TIMEOUT)
    found: dict[str, str] = {}
    try:
        for key_type in host_keys.KEY_TYPES:
            key = host_keys.fetch_key(connect, key_type, SSHD_TIMEOUT)
            if key is not None:
                found.setdefault(key.fingerprint, key.type)
    except BridgeError as exc:
        log.info("no sshd answers on port %d (%s); reading /etc/ssh instead", port, exc)
        return host_key_fingerprints(), (
            f"read from /etc/ssh: no sshd answered on port {port} here; check it is the one "
            "MInt reaches"
        )
    return [(kind, fp) for fp, kind in found.items()], f"as the sshd on port {port} offers them"


def host_key_fingerprints(
    pattern: str = "/etc/ssh/ssh_host_*_key.pub",
) -> list[tuple[str, str]]:
    """(type, SHA256 fingerprint) of this host's SSH keys, ed25519 first (paramiko's choice)."""
    found: list[tuple[int, str, str]] = []
    for path in sorted(glob.glob(pattern)):
        try:
            with open(path, encoding="utf-8") as handle:
                key = ak.parse_public_key(handle.read(16384), path)
        except (OSError, UnicodeDecodeError, SetupError):
            continue
        found.append((0 if key.type == "ssh-ed25519" else 1, key.type, key.fingerprint))
    return [(kind, fp) for _, kind, fp in sorted(found)]


# --- review and apply -------------------------------------------------------------------------


def _review_and_apply(
    plan: changes.Plan, options: SiteOptions, paths: SitePaths, prompter: Prompter
) -> SiteSetupResult:
    steps = plan.review(options.force)
    for line in changes.describe(steps, options.dry_run):
        prompter.echo(line)
    _verify_units(plan, prompter)
    result = SiteSetupResult(paths, steps, applied=False, notes=list(plan.notes))
    if options.dry_run:
        prompter.echo("dry run: nothing was changed")
        return result
    changes.check_conflicts(steps)
    if prompter.interactive and not prompter.confirm("Apply these changes?"):
        raise SetupError("cancelled; nothing was changed")
    changes.apply(steps)
    result.applied = True
    _start_units(options, paths, prompter)
    for note in plan.notes:
        prompter.echo(f"next: {note}")
    return result


def _verify_units(plan: changes.Plan, prompter: Prompter) -> None:
    """Check every unit before it is written (systemd-analyze on copies)."""
    units = {
        os.path.basename(c.path): c.content
        for c in plan.changes
        if isinstance(c, changes.WriteFile) and c.path.endswith((".service", ".timer"))
    }
    outcome = systemd.verify_texts(units)
    names = ", ".join(sorted(units))
    if outcome is None:
        prompter.echo(f"systemd-analyze is not installed; {names} not verified")
    elif not outcome.ok:
        raise SetupError("systemd-analyze verify rejects the units: " + "; ".join(outcome.problems))
    else:
        prompter.echo(f"systemd-analyze verify: {names} valid")
