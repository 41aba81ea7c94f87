"""The layers of the README's "Layout" section, checked on every import of the product code.

A module may import its own layer and the layers listed for it; ``bridge`` itself (only
``__version__``) may be imported by anyone. ``bridge.cli`` and ``bridge.launcher`` tie
everything together and are not restricted. ``TYPE_CHECKING`` and function-level imports count.
"""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("bridge", "schedulers", "broker", "node_setup")
ALLOWED = {
    "bridge.core": {"bridge.core"},
    "schedulers": {"bridge.core", "schedulers"},
    "bridge.client": {"bridge.core", "bridge.client"},
    "bridge.site": {"bridge.core", "schedulers", "bridge.site"},
    "broker": {"bridge.core", "broker"},
    "node_setup": {"bridge.core", "bridge.client", "bridge.site", "schedulers", "node_setup"},
}
ANYONE = {"bridge", "bridge.__version__"}


def layer_of(name: str) -> str | None:
    matches = [layer for layer in ALLOWED if name == layer or name.startswith(layer + ".")]
    return max(matches, key=len, default=None)


def imported_names(path: Path, module: str) -> list[tuple[int, str]]:
    """Every absolute name a module imports, relative imports resolved."""
    found: list[tuple[int, str]] = []
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                parent = ".".join(parts[: len(parts) - node.level + 1])
                base = f"{parent}.{base}".rstrip(".")
            found += [(node.lineno, f"{base}.{alias.name}") for alias in node.names]
    return found


def layer_violations(root: Path) -> list[str]:
    problems = []
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            module = ".".join(parts).removesuffix(".__init__")
            own = layer_of(module)
            if own is None:
                continue  # bridge.cli, bridge.launcher: the top, free to import any layer
            for line, name in imported_names(path, module):
                target = layer_of(name)
                if name.split(".")[0] not in PACKAGES or name in ANYONE or target in ALLOWED[own]:
                    continue
                where = f"{path.relative_to(root)}:{line}"
                problems.append(f"{where}: {own} imports {name} ({target or 'the top'})")
    return problems


def test_product_code_keeps_to_its_layers() -> None:
    assert layer_violations(REPO) == []


def test_a_planted_violation_is_reported(tmp_path: Path) -> None:
    core, site = tmp_path / "bridge" / "core", tmp_path / "bridge" / "site"
    for folder in (core, site, tmp_path / "schedulers"):
        folder.mkdir(parents=True)
        (folder / "__init__.py").write_text("")
    (core / "job.py").write_text("from bridge import __version__\nimport json\n")
    (site / "serve.py").write_text("from bridge.core import job\nimport schedulers\n")
    (core / "leaky.py").write_text("import os\n\nfrom bridge.site.serve import x\n")
    (core / "sneaky.py").write_text("from ..site import serve\n")
    (tmp_path / "schedulers" / "slurm.py").write_text("from bridge.site.serve import x\n")
    assert layer_violations(tmp_path) == [
        "bridge/core/leaky.py:3: bridge.core imports bridge.site.serve.x (bridge.site)",
        "bridge/core/sneaky.py:1: bridge.core imports bridge.site.serve (bridge.site)",
        "schedulers/slurm.py:1: schedulers imports bridge.site.serve.x (bridge.site)",
    ]
