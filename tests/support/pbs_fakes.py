"""Scripted stand-ins for qsub / qstat / qdel / qselect, and job specs, for the PBS-family tests.

A fake command prints what it was given (a fixture file's text) to stdout and stderr, exits
with the given code, and appends its argv as one JSON line to ``calls.jsonl``, so a test can
check the exact command line the adapter ran. The directory goes first on PATH.
"""

from __future__ import annotations

import json
import os
import sys
import uuid
from pathlib import Path

import pytest

from schedulers.base import JobSpec, Resources

_SCRIPT = """#!{python}
import json, sys
with open({log!r}, "a", encoding="utf-8") as log:
    log.write(json.dumps(sys.argv[1:]) + "\\n")
sys.stdout.write(open({out!r}, encoding="utf-8").read())
sys.stderr.write(open({err!r}, encoding="utf-8").read())
sys.exit({code})
"""


class FakeCommands:
    def __init__(self, root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.bin = root / "fakebin"
        self.bin.mkdir()
        self.log = root / "calls.jsonl"
        # Only system dirs behind the fakes: slurm-wlm-torque's /usr/bin/qstat must never answer.
        monkeypatch.setenv("PATH", f"{self.bin}:/usr/bin:/bin")

    def add(self, name: str, stdout: str = "", stderr: str = "", code: int = 0) -> None:
        out = self.bin / f"{name}.stdout"
        err = self.bin / f"{name}.stderr"
        out.write_text(stdout, encoding="utf-8")
        err.write_text(stderr, encoding="utf-8")
        script = self.bin / name
        script.write_text(
            _SCRIPT.format(
                python=sys.executable, log=str(self.log), out=str(out), err=str(err), code=code
            ),
            encoding="utf-8",
        )
        script.chmod(0o755)

    def calls(self) -> list[list[str]]:
        if not self.log.exists():
            return []
        return [json.loads(line) for line in self.log.read_text().splitlines()]


def make_spec(
    root: Path,
    *,
    workdir_name: str = "work",
    argv: list[str] | None = None,
    env: dict[str, str] | None = None,
    walltime: float | None = None,
    resources: Resources | None = None,
) -> JobSpec:
    job_id = str(uuid.uuid4())
    workdir = root / workdir_name / job_id
    control = workdir / ".mint-bridge"
    control.mkdir(parents=True)
    return JobSpec(
        job_id=job_id,
        workdir=str(workdir),
        control_dir=str(control),
        argv=argv or ["/bin/true"],
        env=env or {},
        stdout_path=str(control / "stdout"),
        stderr_path=str(control / "stderr"),
        walltime=walltime,
        resources=resources or Resources(),
    )


def write_control(control_dir: str, name: str, text: str) -> None:
    with open(os.path.join(control_dir, name), "w", encoding="utf-8") as stream:
        stream.write(text)
