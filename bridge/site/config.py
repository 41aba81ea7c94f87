"""The site's config: which command names exist and exactly what each runs.

The site is sovereign. MInt sends a command *name*, parameter values and input files; this
module turns them into an argv list from the site's own template, checking every value against
the parameter's declared type, range, pattern or choices. Values are substituted into single
argv elements, never into shell text, so a value such as ``; rm -rf ~`` is at most a strange
argument, and by default it does not even pass a string parameter's pattern.
"""

from __future__ import annotations

import math
import os
import re
import socket
import string
from dataclasses import dataclass, field
from typing import Any

from bridge.core import defaults
from bridge.core.broker_endpoint import check_broker_url
from bridge.core.errors import CommandNotAllowed, InputRejected, ParameterInvalid
from bridge.core.job import JobRequest, ParamValue
from bridge.core.staging import ReturnRule, check_name
from bridge.core.tomlconf import Section, load_toml
from bridge.core.units import parse_duration, parse_size
from bridge.site.resources import ResourceTemplate, load_resources
from schedulers import NAMES as SCHEDULER_NAMES
from schedulers import Scheduler, SchedulerOptions, get_scheduler
from schedulers.base import Resources

PARAM_TYPES = ("int", "float", "string", "choice", "bool")
# Default pattern for string parameters: word-like values that cannot start with '-' (so they
# are never read as options) and contain no path separators, quotes, spaces or shell syntax.
DEFAULT_STRING_PATTERN = r"[A-Za-z0-9_][A-Za-z0-9_.,:+=@%-]*"
BUILTIN_FIELDS = ("job_id", "workdir", "config_dir")
_COMMAND_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")  # used with fullmatch
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")  # anything else fails at exec time


@dataclass(frozen=True)
class ParamSpec:
    name: str
    type: str
    default: ParamValue | None = None
    minimum: float | None = None
    maximum: float | None = None
    pattern: str = DEFAULT_STRING_PATTERN
    max_length: int = 256
    choices: tuple[str, ...] = ()
    description: str = ""

    def validate(self, raw: object) -> ParamValue:
        """The value converted to this parameter's type; ParameterInvalid names the rule."""
        value = self._convert(raw)
        if isinstance(value, int | float) and not isinstance(value, bool):
            if self.minimum is not None and value < self.minimum:
                raise self._invalid(raw, f"must be at least {_fmt(self.minimum)}")
            if self.maximum is not None and value > self.maximum:
                raise self._invalid(raw, f"must be at most {_fmt(self.maximum)}")
        return value

    def _convert(self, raw: object) -> ParamValue:
        if self.type == "int":
            if isinstance(raw, int) and not isinstance(raw, bool):
                return raw
            if isinstance(raw, str) and re.fullmatch(r"[+-]?\d{1,18}", raw.strip()):
                return int(raw)
            raise self._invalid(raw, "must be an integer")
        if self.type == "float":
            return self._convert_float(raw)
        if self.type == "bool":
            if isinstance(raw, bool):
                return raw
            if isinstance(raw, str) and raw.lower() in ("true", "false", "1", "0", "yes", "no"):
                return raw.lower() in ("true", "1", "yes")
            raise self._invalid(raw, "must be true or false")
        if not isinstance(raw, str):
            raise self._invalid(raw, "must be a string")
        if self.type == "choice":
            if raw not in self.choices:
                raise self._invalid(raw, f"must be one of {', '.join(self.choices)}")
            return raw
        if len(raw) > self.max_length:
            raise self._invalid(raw, f"must be at most {self.max_length} characters")
        if not re.fullmatch(self.pattern, raw):
            raise self._invalid(raw, f"must match the pattern {self.pattern}")
        return raw

    def _convert_float(self, raw: object) -> float:
        try:
            if isinstance(raw, bool) or not isinstance(raw, int | float | str):
                raise ValueError
            value = float(raw)
        except ValueError:
            raise self._invalid(raw, "must be a number") from None
        except OverflowError:  # an int (from JSON) too large for a float
            raise self._invalid(raw, "must be a finite number") from None
        if not math.isfinite(value):
            raise self._invalid(raw, "must be a finite number")
        return value

    def _invalid(self, raw: object, rule: str) -> ParameterInvalid:
        return ParameterInvalid(
            f"parameter {self.name}={str(raw)[:80]!r} is invalid: {rule}", field=self.name
        )


def _fmt(number: float) -> str:
    return str(int(number)) if float(number).is_integer() else str(number)


def render_value(value: ParamValue) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


@dataclass(frozen=True)
class CommandSpec:
    name: str
    program: str
    args: tuple[str, ...] = ()
    params: dict[str, ParamSpec] = field(default_factory=dict)
    description: str = ""
    scheduler: str = "local"
    walltime: float | None = None
    returns: ReturnRule = field(default_factory=lambda: ReturnRule(None))
    inputs: tuple[str, ...] | None = None  # exact names accepted; None = any safe name
    log_file: str | None = None  # original convention: stdout+stderr into this work-dir file
    env: dict[str, str] = field(default_factory=dict)
    config_dir: str = ""  # directory of the site config: {config_dir} in args and env
    resources: ResourceTemplate = field(default_factory=ResourceTemplate)

    def resolve_params(self, given: dict[str, ParamValue]) -> dict[str, ParamValue]:
        """Validated values for every parameter (defaults filled in); rejects unknown names."""
        for name in given:
            if name not in self.params:
                allowed = ", ".join(sorted(self.params)) or "none"
                raise ParameterInvalid(
                    f"command {self.name} has no parameter {name!r:.60}; allowed: {allowed}",
                    field=name,
                )
        values: dict[str, ParamValue] = {}
        for name, spec in self.params.items():
            if name in given:
                values[name] = spec.validate(given[name])
            elif spec.default is not None:
                values[name] = spec.default
            else:
                raise ParameterInvalid(
                    f"parameter {name} is required by command {self.name}; pass -p {name}=VALUE",
                    field=name,
                )
        return values

    def check_inputs(self, names: list[str]) -> None:
        if self.inputs is None:
            return
        unexpected = sorted(set(names) - set(self.inputs))
        if unexpected:
            raise InputRejected(
                f"command {self.name} does not accept input {unexpected[0]!r}; "
                f"it accepts {', '.join(self.inputs)}",
                field="inputs",
            )
        missing = sorted(set(self.inputs) - set(names))
        if missing:
            raise InputRejected(
                f"command {self.name} needs input {missing[0]!r}; send it with -i",
                field="inputs",
            )

    def argv(self, values: dict[str, ParamValue], job_id: str, workdir: str) -> list[str]:
        fields = self._fields(values, job_id, workdir)
        return [self.program] + [_expand(arg).format_map(fields) for arg in self.args]

    def environment(
        self, values: dict[str, ParamValue], job_id: str, workdir: str
    ) -> dict[str, str]:
        fields = self._fields(values, job_id, workdir)
        return {key: value.format_map(fields) for key, value in self.env.items()}

    def render_resources(self, values: dict[str, ParamValue]) -> Resources:
        return self.resources.render({k: render_value(v) for k, v in values.items()})

    def _fields(self, values: dict[str, ParamValue], job_id: str, workdir: str) -> dict[str, str]:
        fields = {name: render_value(value) for name, value in values.items()}
        fields.update(job_id=job_id, workdir=workdir, config_dir=self.config_dir)
        return fields


def _expand(arg: str) -> str:
    return os.path.expanduser(arg) if arg.startswith("~/") else arg


@dataclass(frozen=True)
class AgentConfig:
    """The ``[agent]`` table: how this site's agent reaches the broker (the pull path)."""

    url: str
    token_file: str
    ca_bundle: str | None = None
    allow_http: bool = False
    agent_id: str = field(default_factory=socket.gethostname)
    max_jobs: int = defaults.AGENT_MAX_JOBS
    lease_renew: float = defaults.LEASE_WAIT  # seconds between lease renewals (long-poll wait)
    poll_wait: float = defaults.BROKER_POLL_WAIT  # long-poll wait of a claim
    where: str = "agent"  # "<config file>: agent", for error messages about its keys


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
        """The command list a bridge may see (names, descriptions, parameters; no programs)."""
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
        ]


# --- loading -------------------------------------------------------------------------------


def load_site_config(path: str) -> SiteConfig:
    root = Section(path, "", load_toml(path))
    root.check_keys({"site", "commands", "scheduler", "agent"})
    site = root.section("site")
    site.check_keys(
        {"name", "work_base", "retention", "log_file", "max_input_files", "max_input_bytes"}
    )
    work_base = site.path_value("work_base", defaults.WORK_BASE)
    if not os.path.isabs(work_base):
        raise site.error("must be an absolute path, e.g. /tmp", "work_base")
    log_file = site.data.get("log_file")
    commands_section = root.section("commands")
    commands = {
        name: _load_command(commands_section, name, os.path.dirname(os.path.abspath(path)))
        for name in sorted(commands_section.data)
    }
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
        agent=_load_agent(root, os.path.dirname(os.path.abspath(path))),
    )


_AGENT_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@-]{0,127}")  # used with fullmatch


def _load_agent(root: Section, config_dir: str) -> AgentConfig | None:
    if "agent" not in root.data:
        return None
    sec = root.section("agent")
    sec.check_keys(
        {
            "url", "token_file", "ca_bundle", "allow_http", "agent_id", "max_jobs",
            "lease_renew", "poll_wait",
        }
    )  # fmt: skip
    where = f"{sec.source}: {sec.path}"
    allow_http = sec.get("allow_http", bool, False)
    url = check_broker_url(sec.require("url", str), allow_http, where)
    agent_id = sec.get("agent_id", str, socket.gethostname())
    if not _AGENT_ID.fullmatch(agent_id):
        raise sec.error("use letters, digits, '_', '.', '@', '-' (at most 128)", "agent_id")
    max_jobs = sec.get("max_jobs", int, defaults.AGENT_MAX_JOBS)
    if max_jobs < 1:
        raise sec.error("must be at least 1", "max_jobs")
    lease_renew = sec.convert("lease_renew", parse_duration, defaults.LEASE_WAIT)
    if not 0 < lease_renew <= defaults.LEASE_WAIT:
        raise sec.error(f"must be between 0 and {defaults.LEASE_WAIT:g} seconds", "lease_renew")
    poll_wait = sec.convert("poll_wait", parse_duration, defaults.BROKER_POLL_WAIT)
    if not 0 < poll_wait <= defaults.BROKER_POLL_WAIT:
        raise sec.error(f"must be between 0 and {defaults.BROKER_POLL_WAIT:g} seconds", "poll_wait")
    if not sec.data.get("token_file"):
        raise sec.error("is required: the file holding this site's broker token", "token_file")
    ca_bundle = sec.get("ca_bundle", str, "") or None
    return AgentConfig(
        url=url,
        token_file=os.path.join(config_dir, sec.path_value("token_file", "")),
        ca_bundle=os.path.join(config_dir, os.path.expanduser(ca_bundle)) if ca_bundle else None,
        allow_http=allow_http,
        agent_id=agent_id,
        max_jobs=max_jobs,
        lease_renew=lease_renew,
        poll_wait=poll_wait,
        where=where,
    )


def _load_scheduler_options(sec: Section) -> SchedulerOptions:
    sec.check_keys({"poll_interval", "command_timeout", "retries", "retry_wait"})
    retries = sec.get("retries", int, SchedulerOptions.retries)
    if retries < 1:
        raise sec.error("must be at least 1", "retries")
    return SchedulerOptions(
        poll_interval=sec.convert("poll_interval", parse_duration, 0.0) or None,
        command_timeout=sec.convert("command_timeout", parse_duration, 30.0),
        retries=retries,
        retry_wait=sec.convert("retry_wait", parse_duration, SchedulerOptions.retry_wait),
    )


_COMMAND_KEYS = {
    "program",
    "args",
    "params",
    "description",
    "scheduler",
    "walltime",
    "returns",
    "exclude",
    "inputs",
    "log_file",
    "env",
    "resources",
}


def _load_command(parent: Section, name: str, config_dir: str) -> CommandSpec:
    if not _COMMAND_NAME.fullmatch(name):  # match() with $ would let "name\n" through
        raise parent.error("command names use letters, digits, '_', '.', '-' (max 64)", name)
    sec = parent.section(name)
    sec.check_keys(_COMMAND_KEYS)
    params_sec = sec.section("params")
    params = {p: _load_param(params_sec, p) for p in params_sec.data}
    args = tuple(sec.string_list("args", []))
    env_sec = sec.section("env")
    env = {k: env_sec.get(k, str, "") for k in env_sec.data}
    for key in env:
        if not _ENV_NAME.fullmatch(key):
            raise env_sec.error("environment variable names use letters, digits and '_'", key)
    templates = [("args", a) for a in args] + [(f"env.{k}", v) for k, v in env.items()]
    for where, template in templates:
        _check_template(sec, where, template, params)
    scheduler = sec.get("scheduler", str, "local")
    if scheduler not in SCHEDULER_NAMES:
        raise sec.error(f"must be one of {', '.join(SCHEDULER_NAMES)}", "scheduler")
    return CommandSpec(
        name=name,
        program=os.path.join(config_dir, sec.path_value("program", "") or _missing(sec, "program")),
        args=args,
        params=params,
        description=sec.get("description", str, ""),
        scheduler=scheduler,
        walltime=sec.convert("walltime", parse_duration, 0.0) or None,
        returns=_load_returns(sec),
        inputs=_load_inputs(sec),
        log_file=_load_log_file(sec),
        env=env,
        config_dir=config_dir,
        resources=load_resources(sec.section("resources"), set(params)),
    )


def _missing(sec: Section, key: str) -> str:
    raise sec.error("is required", key)


def _load_returns(sec: Section) -> ReturnRule:
    raw = sec.data.get("returns", "workdir")
    exclude = tuple(sec.string_list("exclude", []))
    if raw == "workdir":
        return ReturnRule(None, exclude)
    if isinstance(raw, list) and raw and all(isinstance(p, str) and p for p in raw):
        return ReturnRule(tuple(raw), exclude)
    raise sec.error('must be "workdir" or a non-empty list of glob patterns', "returns")


def _load_inputs(sec: Section) -> tuple[str, ...] | None:
    if "inputs" not in sec.data:
        return None
    names = sec.string_list("inputs", [])
    for name in names:
        try:
            check_name(name)
        except InputRejected as exc:
            raise sec.error(exc.message, "inputs") from exc
    return tuple(names)


def _load_log_file(sec: Section) -> str | None:
    if "log_file" not in sec.data:
        return None
    name = sec.get("log_file", str, "")
    try:
        return check_name(name, "log_file")
    except InputRejected as exc:
        raise sec.error(exc.message, "log_file") from exc


def _check_template(sec: Section, where: str, template: str, params: dict[str, ParamSpec]) -> None:
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise sec.error(f"{template!r} is not a valid template: {exc}", where) from exc
    for _, field_name, spec, conversion in parsed:
        if field_name is None:
            continue
        if spec or conversion:
            raise sec.error(f"{template!r}: write plain {{name}} fields only", where)
        if field_name not in params and field_name not in BUILTIN_FIELDS:
            known = ", ".join(sorted(params) + list(BUILTIN_FIELDS))
            raise sec.error(
                f"{template!r} uses {{{field_name}}}, which is not a declared parameter "
                f"(known: {known}); use {{{{ and }}}} for literal braces",
                where,
            )


def _load_param(parent: Section, name: str) -> ParamSpec:
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,63}", name):
        raise parent.error("parameter names are identifiers (letters, digits, '_')", name)
    sec = parent.section(name)
    sec.check_keys(
        {"type", "default", "min", "max", "pattern", "max_length", "choices", "description"}
    )
    kind = sec.get("type", str, "string")
    if kind not in PARAM_TYPES:
        raise sec.error(f"{kind!r} is not one of {', '.join(PARAM_TYPES)}", "type")
    choices = tuple(sec.string_list("choices", []))
    if kind == "choice" and not choices:
        raise sec.error("a choice parameter needs a non-empty list of choices", "choices")
    pattern = sec.get("pattern", str, DEFAULT_STRING_PATTERN)
    try:
        re.compile(pattern)
    except re.error as exc:
        raise sec.error(f"is not a valid regular expression: {exc}", "pattern") from exc
    spec = ParamSpec(
        name=name,
        type=kind,
        minimum=_number(sec, "min"),
        maximum=_number(sec, "max"),
        pattern=pattern,
        max_length=sec.get("max_length", int, 256),
        choices=choices,
        description=sec.get("description", str, ""),
    )
    if spec.minimum is not None and spec.maximum is not None and spec.minimum > spec.maximum:
        raise sec.error(f"is less than min ({_fmt(spec.minimum)}): no value could pass", "max")
    if "default" in sec.data:
        try:
            default = spec.validate(sec.data["default"])
        except ParameterInvalid as exc:
            raise sec.error(f"the default fails its own rules: {exc.message}", "default") from exc
        spec = ParamSpec(**{**spec.__dict__, "default": default})
    return spec


def _number(sec: Section, key: str) -> float | None:
    if key not in sec.data:
        return None
    return sec.get(key, float, 0.0)
