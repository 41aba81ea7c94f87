"""Site configs (``site.toml``) for tests and benchmarks, written from dicts.

``site_toml`` turns keyword tables into the TOML a site admin writes by hand: ``[site]``, then
``[agent]`` and ``[scheduler]`` when given, then one ``[commands.NAME]`` per command with its
``params`` and ``resources`` as sub-tables. Strings are always quoted and escaped, so a path
with spaces or quotes stays one value. ``write_site_toml`` writes it to a file.

This module only writes text: it never checks a config (that is ``bridge.site.config``'s job,
and the tests must see its errors as an admin would), and it never starts a site.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def toml_string(value: object) -> str:
    """``value`` as a TOML basic string (a JSON string is one)."""
    return json.dumps(str(value), ensure_ascii=False)


def _key(name: str) -> str:
    return name if _BARE_KEY.fullmatch(name) else toml_string(name)


def _value(value: object) -> str:
    if isinstance(value, bool):  # before int: a bool is an int to Python
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_value(item) for item in value) + "]"
    return toml_string(value)


def _table(path: list[str], table: Mapping[str, Any], lines: list[str]) -> None:
    scalars = {k: v for k, v in table.items() if not isinstance(v, Mapping)}
    # A table that holds only tables needs no header of its own ([commands], [x.params]).
    if scalars or not table:
        lines.append("")
        lines.append("[" + ".".join(_key(part) for part in path) + "]")
        lines.extend(f"{_key(k)} = {_value(v)}" for k, v in scalars.items())
    for name, sub in table.items():
        if isinstance(sub, Mapping):
            _table([*path, name], sub, lines)


def site_toml(
    *,
    site: Mapping[str, Any],
    commands: Mapping[str, Mapping[str, Any]],
    agent: Mapping[str, Any] | None = None,
    scheduler: Mapping[str, Any] | None = None,
    egress: Mapping[str, Any] | None = None,
) -> str:
    """The text of a site.toml; a value that is a dict becomes a sub-table (``params``)."""
    lines: list[str] = []
    _table(["site"], site, lines)
    if agent is not None:
        _table(["agent"], agent, lines)
    if scheduler is not None:
        _table(["scheduler"], scheduler, lines)
    if egress is not None:
        _table(["egress"], egress, lines)
    for name, command in commands.items():
        _table(["commands", name], command, lines)
    return "\n".join(lines) + "\n"


def write_site_toml(
    path: Path,
    *,
    site: Mapping[str, Any],
    commands: Mapping[str, Mapping[str, Any]],
    agent: Mapping[str, Any] | None = None,
    scheduler: Mapping[str, Any] | None = None,
    egress: Mapping[str, Any] | None = None,
) -> Path:
    text = site_toml(site=site, commands=commands, agent=agent, scheduler=scheduler, egress=egress)
    path.write_text(text)
    return path
