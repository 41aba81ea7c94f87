"""The exit-code table of docs/exit-codes.md and ``bridge.core.errors.ExitCode`` agree."""

from __future__ import annotations

import re
from pathlib import Path

from bridge.core.errors import ExitCode

PAGE = Path(__file__).resolve().parents[2] / "docs" / "exit-codes.md"


def documented_codes() -> dict[int, str]:
    """The rows of the exit-code table of the docs' "Exit codes" page: code -> meaning."""
    section = PAGE.read_text(encoding="utf-8")
    rows = re.findall(r"^\| (\d+) \| (.+?) \|$", section, flags=re.MULTILINE)
    codes = [int(code) for code, _ in rows]
    assert len(codes) == len(set(codes)), "a code is documented twice"
    return {int(code): meaning for code, meaning in rows}


def test_every_exit_code_is_documented_and_nothing_else() -> None:
    # 0 is the solver's success, passed through like any solver code: not a bridge failure.
    defined = {int(code) for code in ExitCode if code is not ExitCode.OK}
    assert set(documented_codes()) == defined


def test_each_row_has_a_meaning() -> None:
    assert all(len(meaning.split()) >= 3 for meaning in documented_codes().values())
