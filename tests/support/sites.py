"""The site that the SSH integration tests and benchmarks run jobs on: its test programs and
its site.toml.

``write_site_config`` writes the config of the session-wide test site (the ``site_env``
fixture): the commands of ``tests/integration/programs/testprog.py``, the original API's
remote-side script and the kousoku sample solver. It only writes the file; starting sshd and
the site is the fixtures' job.
"""

from __future__ import annotations

from pathlib import Path

from bridge.client.node_config import EXAMPLES_DIR
from tests.support.site_toml import write_site_toml

PROGRAMS = Path(__file__).resolve().parents[1] / "integration" / "programs"
TESTPROG = PROGRAMS / "testprog.py"
LEGACY_SCRIPT = PROGRAMS / "execute_remote-side_program_ssh.sh"


def write_site_config(path: Path, work_base: Path, private: Path) -> None:
    """``private``: the site's own files, outside any work dir (the ``links`` and ``once``
    commands point into it)."""
    prog = TESTPROG
    kousoku = EXAMPLES_DIR / "kousoku"
    legacy = {"program": LEGACY_SCRIPT, "log_file": "remote_program_exec.log"}
    write_site_toml(
        path,
        site={
            "name": "test-site",
            "work_base": work_base,
            "retention": "1h",
            "log_file": path.parent / "site.log",
            "audit_dir": path.parent / "audit",
        },
        commands={
            "checksum": {"program": prog, "args": ["checksum"]},
            "fail": {
                "program": prog,
                "args": ["exit", "{code}"],
                "params": {"code": {"type": "int", "default": 3, "min": 0, "max": 255}},
            },
            "ticks": {
                "program": prog,
                "args": ["ticks", "{count}", "{delay}"],
                "params": {
                    "count": {"type": "int", "default": 3},
                    "delay": {"type": "float", "default": 0.3},
                },
            },
            "argv": {
                "program": prog,
                "args": ["argv", "{label}", "{free}"],
                "params": {
                    "label": {"type": "string", "default": "x"},
                    "free": {"type": "string", "pattern": ".*", "default": ""},
                },
            },
            "links": {"program": prog, "args": ["links", private / "secret.txt"]},
            "once": {
                "program": prog,
                "args": ["once", private / "counter.txt", "{seconds}"],
                "params": {"seconds": {"type": "float", "default": 3}},
            },
            "big": {
                "program": prog,
                "args": ["big", "{size}"],
                "params": {"size": {"type": "int", "default": 1048576}},
            },
            "legacy": legacy,
            "execute_remote-side_program_ssh.sh": legacy,
            "fatigue": {
                "program": kousoku / "solver.py",
                "args": [
                    "--model", kousoku / "private" / "Modeldata.inp", "--cycles", "{cycles}",
                ],
                "inputs": ["yield_strength.dat", "tensile_strength.dat", "reduction_area.dat"],
                "exclude": ["*.inp"],
                "params": {"cycles": {"type": "int", "default": 100000}},
            },
            "globbed": {
                "program": prog,
                "args": ["checksum"],
                "returns": ["sums.txt", "sub/**"],
            },
        },
    )
