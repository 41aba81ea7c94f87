"""The examples that ship with mint-bridge: where they are, and ``mint-bridge examples copy``.

A wheel carries ``examples/`` as package data (``bridge/_examples``, put there by the build,
see ``setup.py``); a checkout or an editable install uses the checkout's ``examples/``. Copying
them gives the admin files of their own to edit (and a site config whose relative program
paths point at the copy), instead of pointing configs into site-packages or a checkout.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from bridge.core.errors import ConfigError

_PACKAGED = Path(__file__).resolve().parents[1] / "_examples"
_CHECKOUT = Path(__file__).resolve().parents[2] / "examples"


def examples_dir() -> Path:
    """The installed examples (a wheel's package data), else the checkout's."""
    return _PACKAGED if _PACKAGED.is_dir() else _CHECKOUT


def copy_examples(dest: str) -> Path:
    """Copy every example into ``dest`` (new or empty), modes kept (the solver stays runnable)."""
    source = examples_dir()
    if not source.is_dir():
        raise ConfigError(
            f"this installation has no examples ({source} is missing); reinstall mint-bridge "
            "from its wheel (pip install mint-bridge-*.whl)",
            field="examples",
        )
    target = Path(os.path.abspath(os.path.expanduser(dest)))
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise ConfigError(
            f"{target} exists and is not an empty directory; name a new one, e.g. "
            f"mint-bridge examples copy {target}-examples",
            field="DIR",
        )
    try:
        shutil.copytree(
            source, target, dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__")
        )
    except OSError as exc:
        raise ConfigError(f"cannot copy the examples to {target}: {exc}", field="DIR") from exc
    return target
