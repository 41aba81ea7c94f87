"""The site's config file as a whole: the ``[site]`` table, the command list, scheduler options.

``load_site_config`` reads the TOML file and checks every key (an unknown key is an error, not
ignored), so a site whose config loads offers exactly the commands it lists, each checked.
``SiteConfig.check_request`` is everything the site checks before it accepts a job.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from bridge.core import defaults
from bridge.core.errors import CommandNotAllowed, InputRejected
from bridge.core.job import JobRequest, ParamValue
from bridge.core.probe import PROBE_COMMAND
from bridge.core.tomlconf import Section, load_toml
from bridge.core.units import parse_duration, parse_size
from bridge.site.config.agent_table import AgentConfig, load_agent
from bridge.site.config.commands import CommandSpec, load_command
from bridge.site.config.egress_table import check_private_dirs, load_site_egress
from bridge.site.config.login_table import KEYS as LOGIN_KEYS
from bridge.site.config.login_table import load_login_host
from bridge.site.egress import EgressPolicy
from schedulers import Scheduler, SchedulerOptions, get_scheduler


@dataclass(frozen=True)
class SiteConfig:
    path: str
    name: str
    work_base: str = defaults.WORK_BASE
    retention: float = defaults.RETENTION_SECONDS
    log_file: str | None = None
    max_input_files: int = defaults.MAX_INPUT_FILES
    max_input_bytes: int = defaults.MAX_INPUT_BYTES
    commands: dict[str, CommandSpec] = field(default_factory=dict)
    scheduler_options: SchedulerOptions = field(default_factory=SchedulerOptions)
    agent: AgentConfig | None = None  # the [agent] table: only for a pull site
    allow_probe: bool = True  # the built-in probe job (``bridge.site.probe``)
    idle_timeout: float = defaults.IDLE_TIMEOUT_SECONDS  # per read, until the job starts
    audit_dir: str = field(default_factory=lambda: default_audit_dir())  # bridge.site.audit
    # A command string of the original API (a whitelisted path) -> the command that runs it.
    legacy_commands: dict[str, str] = field(default_factory=dict)
    # Besides the site account, who may release or reject a held job (through sudo -u).
    release_group: str | None = None

    def command_for(self, requested: str) -> str:
        """The command a job names, with an original API's command string mapped."""
        return self.legacy_commands.get(requested, requested)
    egress: EgressPolicy = field(default_factory=EgressPolicy)  # the [egress] table

    def egress_for(self, command: CommandSpec) -> EgressPolicy:
        """The policy ``command``'s results leave under: the site's, with its overrides."""
        return self.egress.with_overrides(command.egress)

    def offered_commands(self) -> list[str]:
        """Every job command this site runs, as a pull agent lists them in its claims: its
        commands' names, the original API's command strings it maps, and the probe while
        allowed. Names only: what a command runs never leaves the site."""
        names = set(self.commands) | set(self.legacy_commands)
        if self.allow_probe:
            names.add(PROBE_COMMAND)
        return sorted(names)

    def scheduler(self, command: CommandSpec) -> Scheduler:
        """The adapter that runs ``command``, with this site's scheduler settings."""
        return get_scheduler(command.scheduler, self.scheduler_options)

    def command(self, name: str) -> CommandSpec:
        spec = self.commands.get(name)
        if spec is None:
            raise CommandNotAllowed(
                f"site {self.name} has no command {name!r:.60}; "
                f"it offers: {', '.join(sorted(self.commands)) or 'none'}",
                field="command",
            )
        return spec

    def check_request(self, request: JobRequest) -> tuple[CommandSpec, dict[str, ParamValue]]:
        """Everything the site checks before it accepts a job; raises JobRejected subclasses."""
        spec = self.command(request.command)
        values = spec.resolve_params(request.params)
        spec.check_inputs([decl.name for decl in request.inputs])
        if len(request.inputs) > self.max_input_files:
            raise InputRejected(
                f"{len(request.inputs)} inputs exceed the site's limit of {self.max_input_files}",
                field="inputs",
            )
        total = sum(decl.size for decl in request.inputs)
        if total > self.max_input_bytes:
            raise InputRejected(
                f"inputs total {total} bytes, over the site's limit of {self.max_input_bytes}",
                field="inputs",
            )
        return spec, values

    def describe(self) -> list[dict[str, Any]]:
        """The command list a bridge may see (names, descriptions, parameters; no programs),
        with the built-in probe, marked ``builtin``, while the site allows it."""
        probe = [
            {
                "name": PROBE_COMMAND,
                "description": "built-in probe: copies its input back, runs no site program",
                "params": {},
                "builtin": True,
            }
        ]
        return [
            {
                "name": spec.name,
                "description": spec.description,
                "params": {
                    p.name: {"type": p.type, "default": p.default, "description": p.description}
                    for p in spec.params.values()
                },
            }
            for spec in self.commands.values()
        ] + (probe if self.allow_probe else [])


def load_site_config(path: str) -> SiteConfig:
    root = Section(path, "", load_toml(path))
    root.check_keys({"site", "commands", "scheduler", "agent", "egress"})
    site = root.section("site")
    site.check_keys(
        {
            "name", "work_base", "retention", "log_file", "max_input_files", "max_input_bytes",
            "allow_probe", "idle_timeout", "legacy_commands", "audit_dir", "release_group",
        }
    )  # fmt: skip
    work_base = site.path_value("work_base", defaults.WORK_BASE)
    if not os.path.isabs(work_base):
        raise site.error("must be an absolute path, e.g. /tmp", "work_base")
    log_file = site.data.get("log_file")
    commands_section = root.section("commands")
    commands = {
        name: load_command(commands_section, name, os.path.dirname(os.path.abspath(path)))
        for name in sorted(commands_section.data)
    }
    egress = load_site_egress(root)
    problem = check_private_dirs(egress, {n: c.egress for n, c in commands.items()})
    if problem:
        raise root.error(problem, "egress.private_dirs")
    return SiteConfig(
        path=path,
        name=site.get("name", str, "site"),
        work_base=work_base,
        retention=site.convert("retention", parse_duration, float(defaults.RETENTION_SECONDS)),
        log_file=os.path.expanduser(log_file) if isinstance(log_file, str) else None,
        max_input_files=site.get("max_input_files", int, defaults.MAX_INPUT_FILES),
        max_input_bytes=site.convert("max_input_bytes", parse_size, defaults.MAX_INPUT_BYTES),
        commands=commands,
        scheduler_options=_load_scheduler_options(root.section("scheduler")),
        agent=load_agent(root, os.path.dirname(os.path.abspath(path))),
        allow_probe=site.get("allow_probe", bool, True),
        idle_timeout=_idle_timeout(site),
        legacy_commands=_legacy_commands(site, commands),
        audit_dir=_audit_dir(site, os.path.dirname(os.path.abspath(path))),
        egress=egress,
        release_group=site.get("release_group", str, "") or None,
    )


def _audit_dir(site: Section, config_dir: str) -> str:
    """``[site] audit_dir``, relative to the config file's dir; the default is in the site
    account's state dir."""
    if "audit_dir" not in site.data:
        return default_audit_dir()
    value = site.path_value("audit_dir", "")
    if not value.strip():
        raise site.error(
            f'must name a directory, e.g. audit_dir = "{defaults.AUDIT_DIR}"',
            "audit_dir",
        )
    return os.path.join(config_dir, value)


def default_audit_dir() -> str:
    """``$XDG_STATE_HOME/mint-bridge/audit``; without it ``defaults.AUDIT_DIR``."""
    state = os.environ.get("XDG_STATE_HOME")
    if state:
        return os.path.join(state, "mint-bridge", "audit")
    return os.path.expanduser(defaults.AUDIT_DIR)


def _legacy_commands(site: Section, commands: dict[str, CommandSpec]) -> dict[str, str]:
    """``legacy_commands = {"/opt/Abaqus/Commands/abaqus" = "abaqus"}``: each original command
    string must map to a command this config defines."""
    raw = site.data.get("legacy_commands", {})
    if not isinstance(raw, dict):
        raise site.error(
            'must be a table, e.g. legacy_commands = {"/opt/app/bin/solve" = "solve"}',
            "legacy_commands",
        )
    mapped: dict[str, str] = {}
    for original, name in raw.items():
        if not original or not isinstance(name, str):
            raise site.error(
                f"{original!r:.80} must map to a command name (a string)", "legacy_commands"
            )
        if name not in commands:
            raise site.error(
                f"{original!r:.80} maps to {name!r:.60}, which is not a command here; define "
                f"[commands.{name}] or map it to one of: {', '.join(sorted(commands)) or 'none'}",
                "legacy_commands",
            )
        mapped[original] = name
    return mapped


def _idle_timeout(site: Section) -> float:
    seconds = site.convert("idle_timeout", parse_duration, defaults.IDLE_TIMEOUT_SECONDS)
    if not 1 <= seconds <= 3600:
        raise site.error(
            f"must be between 1 s and 1 h (got {seconds:g} s); e.g. idle_timeout = \"60s\"",
            "idle_timeout",
        )
    return seconds


def _load_scheduler_options(sec: Section) -> SchedulerOptions:
    sec.check_keys({"poll_interval", "command_timeout", "retries", "retry_wait", *LOGIN_KEYS})
    retries = sec.get("retries", int, SchedulerOptions.retries)
    if retries < 1:
        raise sec.error("must be at least 1", "retries")
    return SchedulerOptions(
        poll_interval=sec.convert("poll_interval", parse_duration, 0.0) or None,
        command_timeout=sec.convert("command_timeout", parse_duration, 30.0),
        retries=retries,
        retry_wait=sec.convert("retry_wait", parse_duration, SchedulerOptions.retry_wait),
        login=load_login_host(sec),
    )
