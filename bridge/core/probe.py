"""The built-in probe job both ends know: its reserved command name, its files, its report.

``mint-bridge health --probe`` and ``mint-bridge sites test`` send a probe job through the
same path as any job (SSH or the broker). The site entry answers it itself, never by running a
site program: it creates a work dir as for any job, copies the one input (``PROBE_INPUT``) to
``PROBE_OUTPUT`` while hashing it, and returns both the copy and ``PROBE_REPORT``, a JSON
document (``ProbeReport``) with that hash, the work base and the site's configured programs
that could not run. A site admin can turn the probe off (``[site] allow_probe = false``).

This module holds only names and the report's shape; it never touches a file or a network.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from bridge.core.errors import ProtocolError

#: The command name of the probe; a site config may not define a command of that name.
PROBE_COMMAND = "mint-bridge-probe"
PROBE_INPUT = "probe-input.bin"
PROBE_OUTPUT = "probe-output.bin"
PROBE_REPORT = "probe-report.json"
#: The probe's input stays small: it proves the path, not the bandwidth.
PROBE_MAX_INPUT = 1 << 20
#: Format version of ``PROBE_REPORT``.
REPORT_VERSION = 1


@dataclass(frozen=True)
class ProgramProblem:
    """A command of the site whose program cannot run, and why."""

    command: str
    program: str
    problem: str


@dataclass(frozen=True)
class ProbeReport:
    """What the site found while it answered the probe."""

    site: str
    version: str  # the site's mint-bridge version
    config: str  # the site config's path, for fixes that name the file
    work_base: str
    sha256: str  # of the input, as the site read it
    size: int
    programs: tuple[ProgramProblem, ...] = field(default_factory=tuple)

    def to_json(self) -> dict[str, Any]:
        return {
            "report": REPORT_VERSION,
            "site": self.site,
            "version": self.version,
            "config": self.config,
            "work_base": self.work_base,
            "sha256": self.sha256,
            "size": self.size,
            "programs": [
                {"command": p.command, "program": p.program, "problem": p.problem}
                for p in self.programs
            ],
        }

    @classmethod
    def from_json(cls, data: object) -> ProbeReport:
        """Parse a report a site sent; anything malformed is the peer breaking the protocol."""
        if not isinstance(data, dict) or data.get("report") != REPORT_VERSION:
            raise ProtocolError("the site's probe report is malformed or of another version")
        programs = data.get("programs")
        size = data.get("size")
        if not isinstance(programs, list) or not isinstance(size, int):
            raise ProtocolError("the site's probe report is malformed")
        return cls(
            site=_text(data, "site"),
            version=_text(data, "version"),
            config=_text(data, "config"),
            work_base=_text(data, "work_base"),
            sha256=_text(data, "sha256"),
            size=size,
            programs=tuple(
                ProgramProblem(_text(p, "command"), _text(p, "program"), _text(p, "problem"))
                for p in programs
            ),
        )


def _text(data: object, key: str) -> str:
    value = data.get(key) if isinstance(data, dict) else None
    if not isinstance(value, str):
        raise ProtocolError(f"the site's probe report has no {key!r}")
    return value[:1000]
