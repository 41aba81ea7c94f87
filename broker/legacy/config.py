"""The ``[legacy]`` section of broker.toml: the original API ``/mi-distcomp-api/`` and its
site/command whitelist.

```toml
[legacy]
enabled = true            # off unless set: the original API is an opt-in
max_body = "64MiB"        # a request or answer with base64 files, held in memory whole
lease_ttl = "10m"         # how long a legacy poller may take between calc-params and calc-start

[legacy.sites]
rme-u-tokyo = ["create_inp_file.sh"]          # exact command strings, as in the original ini
nims-dev = ["/opt/Abaqus/Commands/abaqus", "/opt/fem-ccv/femccv"]
```

The whitelist is the only guard between a workflow and the original poller's shell (it runs
``command`` through a shell), so it is matched exactly, character for character; this
module never normalises, splits or pattern-matches a command.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from bridge.core.tomlconf import Section
from bridge.core.units import parse_duration, parse_size

# The original clients hold every file of a request in memory as base64; so does the broker
# while it answers. 64 MiB keeps one request well below what a small server can hold.
MAX_BODY = 64 << 20

# A legacy poller never renews a lease: between calc-params and calc-start it sleeps 20 s and
# writes the inputs; ten minutes leaves room for its connection retries before the job is
# handed to another poller or agent.
LEASE_TTL = 600.0

# Commands are exact strings from the original ini (often absolute paths), longer than the
# new API's command names may be.
MAX_COMMAND = 1024
SITE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")  # the token subject rule (broker.auth)
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


@dataclass(frozen=True)
class LegacyConfig:
    enabled: bool = False
    max_body: int = MAX_BODY
    lease_ttl: float = LEASE_TTL
    sites: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    def knows(self, site: str) -> bool:
        return site in self.sites

    def allows(self, site: str, command: str) -> bool:
        """Exact match only: the original poller hands this string to a shell."""
        return command in self.sites.get(site, ())

    def summary(self) -> dict[str, object]:
        return {
            "enabled": self.enabled,
            "max_body": self.max_body,
            "lease_ttl": self.lease_ttl,
            "sites": {site: list(commands) for site, commands in sorted(self.sites.items())},
        }


def parse_legacy(sec: Section) -> LegacyConfig:
    sec.check_keys({"enabled", "max_body", "lease_ttl", "sites"})
    max_body = sec.convert("max_body", parse_size, MAX_BODY)
    if max_body < 1024:
        raise sec.error("must be at least 1KiB", "max_body")
    lease_ttl = sec.convert("lease_ttl", parse_duration, LEASE_TTL)
    if lease_ttl <= 0:
        raise sec.error("must be longer than 0 s", "lease_ttl")
    return LegacyConfig(
        enabled=sec.get("enabled", bool, False),
        max_body=max_body,
        lease_ttl=lease_ttl,
        sites=_sites(sec.section("sites")),
    )


def _sites(sec: Section) -> dict[str, tuple[str, ...]]:
    sites: dict[str, tuple[str, ...]] = {}
    for site, commands in sec.data.items():
        if not SITE_ID.fullmatch(site):
            raise sec.error(
                "site ids use 1-64 letters, digits, '.', '_' or '-' (they name site tokens)", site
            )
        if not isinstance(commands, list):
            raise sec.error("must be a list of exact command strings, e.g. [\"run.sh\"]", site)
        checked: list[str] = []
        for command in commands:
            problem = command_problem(command)
            if problem:
                raise sec.error(f"{command!r:.80}: {problem}", site)
            checked.append(command)
        sites[site] = tuple(checked)
    return sites


def command_problem(command: object) -> str | None:
    if not isinstance(command, str) or not command:
        return "a command must be a non-empty string"
    if len(command) > MAX_COMMAND:
        return f"a command may have at most {MAX_COMMAND} characters"
    if _CONTROL.search(command):
        return "a command must not contain control characters"
    if command != command.strip():
        return "a command must not start or end with white space"
    return None
