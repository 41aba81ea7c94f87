"""``[egress]`` and ``[commands.<name>.egress]``: what may leave the site, checked at load.

The site table sets the policy for every command; a command's table overrides single keys
and may name the results it ``required``s (a withheld required result gives the workflow exit
89). Without an ``[egress]`` table the default caps of ``bridge.core.defaults`` apply.
"""

from __future__ import annotations

import os
from typing import Any

from bridge.core.tomlconf import Section
from bridge.core.units import parse_size
from bridge.site.egress import EgressPolicy

_RULE_KEYS = {
    "max_file_size", "max_job_size", "max_files", "allow", "deny", "deny_markers", "deny_private",
}  # fmt: skip
SITE_KEYS = _RULE_KEYS | {"private_dirs", "private_index"}
COMMAND_KEYS = _RULE_KEYS | {"required"}
_MAX_MARKER = 4096  # bytes: a stamp, not a document; keeps the seam search small


def load_site_egress(root: Section) -> EgressPolicy:
    sec = root.section("egress")
    sec.check_keys(SITE_KEYS)
    policy = EgressPolicy().with_overrides(_rules(sec))
    dirs = tuple(os.path.expanduser(d) for d in sec.string_list("private_dirs", []))
    for directory in dirs:
        if not os.path.isabs(directory):
            raise sec.error(f"{directory!r} must be an absolute path", "private_dirs")
    index = sec.path_value("private_index", policy.private_index)
    return policy.with_overrides({"private_dirs": dirs, "private_index": index})


def load_command_egress(command: Section) -> dict[str, Any]:
    """The keys a command overrides (checked as the site's are), and its required results."""
    sec = command.section("egress")
    for key in sorted(SITE_KEYS - COMMAND_KEYS):
        if key in sec.data:
            raise sec.error("is set for the whole site: move it to [egress]", key)
    sec.check_keys(COMMAND_KEYS)
    overrides = _rules(sec)
    if "required" in sec.data:
        overrides["required"] = frozenset(sec.string_list("required", []))
    return overrides


def check_private_dirs(site: EgressPolicy, commands: dict[str, Any]) -> str | None:
    """Why a ``deny_private`` cannot work (no ``private_dirs``), or None when it can."""
    users = ["[egress]"] if site.deny_private else []
    users += [f"[commands.{n}.egress]" for n, o in commands.items() if o.get("deny_private")]
    if users and not site.private_dirs:
        return (
            f"{users[0]} sets deny_private = true but [egress] has no private_dirs; "
            'add e.g. private_dirs = ["~/misrc_remote_workflow/input_data"] to [egress]'
        )
    return None


def _rules(sec: Section) -> dict[str, Any]:
    rules: dict[str, Any] = {}
    for key in ("max_file_size", "max_job_size"):
        if key in sec.data:
            rules[key] = sec.convert(key, parse_size, 0)
    if "max_files" in sec.data:
        count = sec.get("max_files", int, 0)
        if count < 0:
            raise sec.error("must be 0 or more", "max_files")
        rules["max_files"] = count
    for key in ("allow", "deny"):
        if key in sec.data:
            rules[key] = tuple(_patterns(sec, key))
    if "deny_markers" in sec.data:
        rules["deny_markers"] = tuple(_marker(sec, m) for m in sec.string_list("deny_markers", []))
    if "deny_private" in sec.data:
        rules["deny_private"] = sec.get("deny_private", bool, False)
    return rules


def _patterns(sec: Section, key: str) -> list[str]:
    patterns = sec.string_list(key, [])
    if any(not p for p in patterns):
        raise sec.error("an empty pattern matches nothing; remove it", key)
    return patterns


def _marker(sec: Section, marker: str) -> bytes:
    data = marker.encode("utf-8")
    if not 4 <= len(data) <= _MAX_MARKER:
        raise sec.error(
            f"each marker must be 4 to {_MAX_MARKER} bytes (a short one would match ordinary "
            f"files); got {len(data)}",
            "deny_markers",
        )
    return data
