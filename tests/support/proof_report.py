"""Writes docs/PROOF.md from the JUnit XML of a proof run (``scripts/proof.sh``).

Each scenario's fault, path and expected outcome come from the ``user_properties`` the
resilience tests record (JUnit ``<property>`` elements); tests without them (the hostile-input
and fuzz tests) are listed with their module as the fault.
"""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path


def _result(case: ET.Element) -> str:
    for tag, word in (("failure", "FAILED"), ("error", "ERROR"), ("skipped", "skipped")):
        found = case.find(tag)
        if found is not None:
            message = (found.get("message") or "").splitlines()[0:1]
            if tag == "skipped" and "xfail" in (found.get("type") or "") + "".join(message):
                return "xfail: " + "".join(message)[:80]
            return f"{word}: " + "".join(message)[:80]
    return "passed"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _path_group(path: str) -> str:
    """The section a scenario is listed under, from the path it recorded (none: hostile input)."""
    if path.startswith("ssh"):
        return "SSH path"
    if path.startswith("broker"):
        return "Pull path (broker)"
    return path or "Hostile input"


def report(junit: Path, out: Path, seconds: float) -> tuple[int, int]:
    root = ET.parse(junit).getroot()
    by_path: dict[str, list[str]] = {}
    passed = 0
    for case in root.iter("testcase"):
        props = {p.get("name"): p.get("value") or "" for p in case.iter("property")}
        module = (case.get("classname") or "").rsplit(".", 1)[-1]
        result = _result(case)
        passed += result == "passed"
        path = _path_group(props.get("path", ""))
        by_path.setdefault(path, []).append("| " + " | ".join(_cell(c) for c in (
            case.get("name") or "", props.get("fault", module), props.get("path", "-"),
            props.get("expected", "test passes"), result,
        )) + " |")  # fmt: skip
    # One table per path (pull, SSH, hostile input), in the order the run met them.
    rows = [row for group in by_path.values() for row in group]
    counts = ", ".join(f"{name}: {len(group)}" for name, group in by_path.items())
    tables: list[str] = []
    for name, group in by_path.items():
        tables += [f"## {name} ({len(group)})", "",
                   "| Scenario | Fault | Path | Expected | Result |", "|---|---|---|---|---|",
                   *group, ""]  # fmt: skip
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True, check=False).stdout.strip()  # fmt: skip
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    out.write_text("\n".join([
        "# Proof run", "",
        f"Date: {now}. Commit: `{commit}`. Command: `scripts/proof.sh`. "
        f"Wall time: {seconds:.0f} s.", "",
        f"Totals: {len(rows)} scenarios, {passed} passed, {len(rows) - passed} other "
        f"({counts}).", "",
        "Every resilience scenario runs one tiny job through real services and checks exactly "
        "one terminal state with its true outcome, one solver run (a counter file outside the "
        "work dir), SHA-256 of the inputs the solver saw and of the result that came back, and "
        "an end within the lease (10 s) plus 60 s.", "",
        *tables,
    ]))  # fmt: skip
    return len(rows), passed


if __name__ == "__main__":
    total, ok = report(Path(sys.argv[1]), Path(sys.argv[2]), float(sys.argv[3]))
    print(f"{ok}/{total} scenarios passed; wrote {sys.argv[2]}")
