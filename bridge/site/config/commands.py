"""The site's commands: exactly what each command name runs, and loading one from the config.

The site is sovereign. MInt sends a command *name*, parameter values and input files; a
``CommandSpec`` turns them into an argv list from the site's own template. Values are
substituted into single argv elements, never into shell text, so a value such as ``; rm -rf ~``
is at most a strange argument (and by default it does not even pass a string parameter's
pattern). Templates may name only declared parameters and the built-in fields.
"""

from __future__ import annotations

import os
import re
import string
from dataclasses import dataclass, field
from typing import Any

from bridge.core.errors import InputRejected, ParameterInvalid
from bridge.core.job import ParamValue
from bridge.core.paths import check_name
from bridge.core.probe import PROBE_COMMAND
from bridge.core.results import ReturnRule
from bridge.core.tomlconf import Section
from bridge.core.units import parse_duration
from bridge.site.config.egress_table import load_command_egress
from bridge.site.config.params import ParamSpec, load_param, render_value
from bridge.site.config.resources import ResourceTemplate, load_resources
from schedulers import NAMES as SCHEDULER_NAMES
from schedulers.base import Resources

BUILTIN_FIELDS = ("job_id", "workdir", "config_dir")
_COMMAND_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")  # used with fullmatch
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")  # anything else fails at exec time


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
    # [commands.<name>.egress]: the keys it overrides in the site's [egress] policy.
    egress: dict[str, Any] = field(default_factory=dict)
    # "manual": results wait at the site for ``site release`` (``bridge.site.release``).
    release: str = "auto"

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
    "egress",
    "release",
}


def load_command(parent: Section, name: str, config_dir: str) -> CommandSpec:
    if not _COMMAND_NAME.fullmatch(name):  # match() with $ would let "name\n" through
        raise parent.error("command names use letters, digits, '_', '.', '-' (max 64)", name)
    if name == PROBE_COMMAND:
        raise parent.error(
            "this name is reserved for the built-in probe (turn it off with [site] "
            "allow_probe = false); give the command another name",
            name,
        )
    sec = parent.section(name)
    sec.check_keys(_COMMAND_KEYS)
    params_sec = sec.section("params")
    params = {p: load_param(params_sec, p) for p in params_sec.data}
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
        egress=load_command_egress(sec),
        release=_load_release(sec),
    )


def _load_release(sec: Section) -> str:
    value = sec.get("release", str, "auto")
    if value not in ("auto", "manual"):
        raise sec.error('must be "auto" or "manual" (results wait for site release)', "release")
    return value


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
