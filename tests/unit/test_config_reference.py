"""The config reference (``docs/config-*.md``) names every key the config loaders accept, and
no key they do not, so the reference cannot drift from the code.

The keys come from the code itself: every ``<section>.check_keys(<keys>)`` call of the config
modules is found in their source and its argument evaluated in the module's namespace (the
same sets the loaders check at run time). ``TABLES`` says which TOML table each call checks; a
new call that is not in it fails the test until it is added, and so does a new module that
checks keys. In the reference, a heading naming a table in backticks (``[sites.<name>]``)
starts that table's key list: rows of a Markdown table whose first cell is a key in backticks.
A table documented under its own heading counts as a key of its parent table.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import re
from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# (module, function, receiver variable) -> (config file, table; "" is the top level).
TABLES: dict[tuple[str, str, str], tuple[str, str]] = {
    ("bridge.client.node_config", "load_bridge_config", "root"): ("bridge.toml", ""),
    ("bridge.client.node_config", "load_bridge_config", "bridge"): ("bridge.toml", "bridge"),
    # One table for all methods: each method's keys are listed under its own heading.
    ("bridge.client.node_config", "_load_site", "sec"): ("bridge.toml", "sites.<name>"),
    ("bridge.client.node_config", "_load_broker_site", "sec"): ("bridge.toml", "sites.<name>"),
    ("bridge.site.config.site_config", "load_site_config", "root"): ("site.toml", ""),
    ("bridge.site.config.site_config", "load_site_config", "site"): ("site.toml", "site"),
    ("bridge.site.config.site_config", "_load_scheduler_options", "sec"): (
        "site.toml", "scheduler"),
    ("bridge.site.config.agent_table", "load_agent", "sec"): ("site.toml", "agent"),
    ("bridge.site.config.egress_table", "load_site_egress", "sec"): ("site.toml", "egress"),
    ("bridge.site.config.commands", "load_command", "sec"): ("site.toml", "commands.<name>"),
    ("bridge.site.config.egress_table", "load_command_egress", "sec"): (
        "site.toml", "commands.<name>.egress"),
    ("bridge.site.config.params", "load_param", "sec"): (
        "site.toml", "commands.<name>.params.<param>"),
    ("bridge.site.config.resources", "load_resources", "sec"): (
        "site.toml", "commands.<name>.resources"),
    ("broker.config", "load_config", "top"): ("broker.toml", ""),
    ("broker.config", "_server", "sec"): ("broker.toml", "server"),
    ("broker.config", "_store", "sec"): ("broker.toml", "storage"),
    ("broker.config", "_jobs", "sec"): ("broker.toml", "jobs"),
    ("broker.config", "_limits", "sec"): ("broker.toml", "limits"),
    ("broker.config", "_log_format", "sec"): ("broker.toml", "logging"),
    ("broker.legacy.config", "parse_legacy", "sec"): ("broker.toml", "legacy"),
}  # fmt: skip
REFERENCE = {
    "bridge.toml": "docs/config-bridge.md",
    "site.toml": "docs/config-site.md",
    "broker.toml": "docs/config-broker.md",
}
PACKAGES = ("bridge", "broker", "node_setup", "schedulers")

_TABLE_HEADING = re.compile(r"^#{2,6} .*?`\[([^\]`]+)\]`", re.M)
_KEY_ROW = re.compile(r"^\|\s*`([^`]+)`\s*\|", re.M)


def check_keys_calls(module_name: str) -> list[tuple[str, str, set[str]]]:
    """(function, receiver, allowed keys) of each ``X.check_keys(...)`` call in a module."""
    module = importlib.import_module(module_name)
    tree = ast.parse(inspect.getsource(module))
    found = []
    for func in ast.walk(tree):
        if not isinstance(func, ast.FunctionDef):
            continue
        for node in ast.walk(func):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "check_keys"
                and isinstance(node.func.value, ast.Name)
            ):
                code = compile(ast.Expression(node.args[0]), module_name, "eval")
                allowed = eval(code, vars(module))  # the module's own constants only
                found.append((func.name, node.func.value.id, set(allowed)))
    return found


def code_keys() -> dict[tuple[str, str], set[str]]:
    keys: dict[tuple[str, str], set[str]] = defaultdict(set)
    for module_name in sorted({module for module, _, _ in TABLES}):
        for function, receiver, allowed in check_keys_calls(module_name):
            where = TABLES.get((module_name, function, receiver))
            assert where is not None, (
                f"{module_name}.{function}: {receiver}.check_keys(...) checks a table this test "
                "does not know: add it to TABLES and its keys to the config reference"
            )
            keys[where] |= allowed
    return keys


def documented_keys(text: str) -> dict[str, set[str]]:
    """Table -> keys, from a reference page's headings and key rows."""
    keys: dict[str, set[str]] = defaultdict(set)
    headings = list(_TABLE_HEADING.finditer(text))
    for i, heading in enumerate(headings):
        table = heading.group(1)
        end = headings[i + 1].start() if i + 1 < len(headings) else len(text)
        keys[table] |= set(_KEY_ROW.findall(text, heading.end(), end))
        parts = table.split(".")
        # [commands.<name>.params.<param>] makes commands a top-level key and params a key of
        # [commands.<name>]; a placeholder segment is a name the site chooses, not a key.
        for depth, part in enumerate(parts):
            if not part.startswith("<"):
                keys[".".join(parts[:depth])].add(part)
    return keys


def drift(code: dict[str, set[str]], docs: dict[str, set[str]]) -> list[str]:
    problems = []
    for table in sorted(set(code) | set(docs)):
        name = f"[{table}]" if table else "the top level"
        for key in sorted(code.get(table, set()) - docs.get(table, set())):
            problems.append(f"{name}: {key!r} is accepted by the code but not documented")
        for key in sorted(docs.get(table, set()) - code.get(table, set())):
            problems.append(f"{name}: {key!r} is documented but the code does not accept it")
    return problems


def test_every_module_that_checks_config_keys_is_known() -> None:
    modules = {module for module, _, _ in TABLES}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            if ".check_keys(" in path.read_text(encoding="utf-8"):
                name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
                assert name in modules, f"{name} checks config keys: add its tables to TABLES"


def test_every_table_of_the_map_is_still_checked() -> None:
    seen = {
        (module, function, receiver)
        for module in {module for module, _, _ in TABLES}
        for function, receiver, _ in check_keys_calls(module)
    }
    assert sorted(set(TABLES) - seen) == [], "TABLES names calls the code no longer makes"


@pytest.mark.parametrize("config_file", sorted(REFERENCE))
def test_the_reference_names_exactly_the_keys_the_code_accepts(config_file: str) -> None:
    code = {table: keys for (file, table), keys in code_keys().items() if file == config_file}
    docs = documented_keys((ROOT / REFERENCE[config_file]).read_text(encoding="utf-8"))
    assert drift(code, docs) == []


def test_drift_is_caught_both_ways() -> None:
    # Guards the comparison itself with a page that leaves a key out and invents one.
    page = (
        "## `[server]`\n\n| key | default | meaning |\n|---|---|---|\n| `host` | x | y |\n"
        "| `colour` | x | y |\n\n## `[commands.<name>.params.<param>]`\n\n| `type` | a | b |\n"
    )
    docs = documented_keys(page)
    assert docs[""] == {"server", "commands"} and docs["commands.<name>"] == {"params"}
    code = {"": {"server", "commands"}, "server": {"host", "port"},
            "commands.<name>": {"params"}, "commands.<name>.params.<param>": {"type"}}  # fmt: skip
    assert drift(code, docs) == [
        "[server]: 'port' is accepted by the code but not documented",
        "[server]: 'colour' is documented but the code does not accept it",
    ]
    assert ("broker.toml", "storage") in code_keys()
