"""A command's batch resources in the site config, rendered per job into ``Resources``.

    [commands.solve.resources]
    cpus = "{cpus}"        # a number, or a {param} field filled with a validated value
    nodes = 1
    tasks = 1
    memory = "4GiB"
    queue = "batch"        # Slurm partition, PBS queue
    account = "proj01"
    extra = ["--qos=long"] # directive lines as written after #SBATCH / #PBS

Values are checked again after substitution: counts are positive integers, names match a
strict pattern, directive lines hold no newline or control character, so nothing pasted into
a batch script can start a new line of shell.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from bridge.core.errors import ParameterInvalid
from bridge.core.tomlconf import Section
from bridge.core.units import parse_size
from schedulers.base import Resources

_COUNTS = ("cpus", "nodes", "tasks")
_NAMES = ("queue", "account")
_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.@-]{0,63}$")
_DIRECTIVE = re.compile(r"^[\x20-\x7e]{1,200}$")
_FIELD = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


@dataclass(frozen=True)
class ResourceTemplate:
    values: dict[str, str] = field(default_factory=dict)  # key -> template text
    extra: tuple[str, ...] = ()

    def render(self, fields: dict[str, str]) -> Resources:
        text = {
            key: _FIELD.sub(lambda m: fields[m.group(1)], value)
            for key, value in self.values.items()
        }
        counts = {key: _positive(key, text[key]) for key in _COUNTS if key in text}
        names = {key: _name(key, text[key]) for key in _NAMES if key in text}
        memory_mb = None
        if "memory" in text:
            try:
                memory_mb = max(1, parse_size(text["memory"]) // (1024 * 1024))
            except ValueError as exc:
                raise ParameterInvalid(f"resource memory: {exc}", field="memory") from exc
        return Resources(
            cpus=counts.get("cpus"),
            nodes=counts.get("nodes"),
            tasks=counts.get("tasks"),
            memory_mb=memory_mb,
            queue=names.get("queue"),
            account=names.get("account"),
            extra=self.extra,
        )


def _positive(key: str, text: str) -> int:
    if not re.fullmatch(r"\d{1,6}", text) or int(text) < 1:
        raise ParameterInvalid(f"resource {key}={text!r:.40} must be a positive integer", field=key)
    return int(text)


def _name(key: str, text: str) -> str:
    if not _NAME.match(text):
        raise ParameterInvalid(
            f"resource {key}={text!r:.40} must be letters, digits, '_', '.', '@', '-'", field=key
        )
    return text


def load_resources(sec: Section, params: set[str]) -> ResourceTemplate:
    sec.check_keys({*_COUNTS, *_NAMES, "memory", "extra"})
    values: dict[str, str] = {}
    for key in (*_COUNTS, *_NAMES, "memory"):
        if key not in sec.data:
            continue
        raw = sec.data[key]
        if isinstance(raw, bool) or not isinstance(raw, int | str):
            raise sec.error("must be a number or a string", key)
        text = str(raw)
        for name in _FIELD.findall(text):
            if name not in params:
                raise sec.error(f"uses {{{name}}}, which is not a declared parameter", key)
        if not _FIELD.search(text):
            _check_static(sec, key, text)
        values[key] = text
    extra = tuple(sec.string_list("extra", []))
    for line in extra:
        if not _DIRECTIVE.match(line):
            raise sec.error(f"directive {line!r:.60} must be one printable line", "extra")
    return ResourceTemplate(values, extra)


def _check_static(sec: Section, key: str, text: str) -> None:
    try:
        ResourceTemplate({key: text}).render({})
    except ParameterInvalid as exc:
        raise sec.error(exc.message, key) from exc
