"""The site's egress policy: which collected results may leave, decided at the site.

Two kinds of rule. Rules on a file's name and size are decided from ``lstat`` alone, before a
byte is read (``check_metadata``): a sparse file with a 1 TiB hole costs one system call. Rules
on a file's content (``deny_markers``, ``deny_private``) are decided in the one pass that also
computes the SHA-256 the manifest carries (``bridge.site.egress_scan``). A result that breaks a
rule is *withheld*: it is listed with the rule's name and a reason, and none of its bytes leave.

Never: read a file to decide a metadata rule, or let a withheld file's bytes go out.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field, replace
from typing import Any

from bridge.core import defaults
from bridge.core.results import ResultFile

# The rule names a withheld result carries in the manifest (``rule``), as the config keys.
RULE_DENY = "deny"
RULE_ALLOW = "allow"
RULE_MAX_FILE_SIZE = "max_file_size"
RULE_MAX_FILES = "max_files"
RULE_MAX_JOB_SIZE = "max_job_size"
RULE_MARKER = "deny_markers"
RULE_PRIVATE = "deny_private"


@dataclass(frozen=True)
class EgressPolicy:
    """One command's effective policy: the site's ``[egress]`` with the command's overrides."""

    max_file_size: int = defaults.EGRESS_MAX_FILE_SIZE
    max_job_size: int = defaults.EGRESS_MAX_JOB_SIZE
    max_files: int = defaults.EGRESS_MAX_FILES
    allow: tuple[str, ...] = ()  # empty: every name may leave
    deny: tuple[str, ...] = ()
    deny_markers: tuple[bytes, ...] = ()
    deny_private: bool = False
    private_dirs: tuple[str, ...] = ()  # site-wide: what ``site index-private`` indexes
    private_index: str = defaults.PRIVATE_INDEX
    required: frozenset[str] = frozenset()  # the command's results the workflow cannot lack

    def with_overrides(self, overrides: dict[str, Any]) -> EgressPolicy:
        return replace(self, **overrides)

    @property
    def inspects_content(self) -> bool:
        return bool(self.deny_markers) or self.deny_private


@dataclass(frozen=True)
class Withheld:
    """A result the policy keeps at the site, with the rule that kept it."""

    name: str
    rule: str
    reason: str
    required: bool = False
    # For the site's audit line only, never on the wire: the size ``lstat`` gave, and the
    # SHA-256 when a content pass read the file to its end.
    size: int | None = None
    sha256: str | None = None

    def to_wire(self) -> dict[str, Any]:
        entry: dict[str, Any] = {
            "name": self.name,
            "reason": f"withheld by the site's egress policy ({self.rule}): {self.reason}",
            "rule": self.rule,
        }
        if self.required:
            entry["required"] = True
        return entry


@dataclass
class Selection:
    """What passed the metadata rules, and what they withheld."""

    passed: list[ResultFile] = field(default_factory=list)
    withheld: list[Withheld] = field(default_factory=list)


def check_metadata(policy: EgressPolicy, files: list[ResultFile]) -> Selection:
    """Apply the name and size rules in name order, from the sizes ``lstat`` gave.

    A file that would take the job past ``max_files`` or ``max_job_size`` is withheld and the
    next ones are still considered, so one huge file does not hold back every small one.
    """
    selection = Selection()
    total = 0
    for result in files:
        broken = _name_or_size_rule(policy, result)
        if broken is None and len(selection.passed) >= policy.max_files:
            broken = (RULE_MAX_FILES, f"the job already returns {policy.max_files} files")
        if broken is None and total + result.size > policy.max_job_size:
            broken = (
                RULE_MAX_JOB_SIZE,
                f"{result.size} bytes would take the job past {policy.max_job_size} bytes",
            )
        if broken is None:
            selection.passed.append(result)
            total += result.size
        else:
            selection.withheld.append(withhold(policy, result, *broken))
    return selection


def withhold(
    policy: EgressPolicy, result: ResultFile, rule: str, reason: str, sha256: str | None = None
) -> Withheld:
    return Withheld(
        result.name, rule, reason, required=result.name in policy.required, size=result.size,
        sha256=sha256,
    )  # fmt: skip


def _name_or_size_rule(policy: EgressPolicy, result: ResultFile) -> tuple[str, str] | None:
    denied = _first_match(result.name, policy.deny)
    if denied is not None:
        return RULE_DENY, f"the name matches {denied!r}"
    if policy.allow and _first_match(result.name, policy.allow) is None:
        return RULE_ALLOW, "the name matches no allowed pattern"
    if result.size > policy.max_file_size:
        return (
            RULE_MAX_FILE_SIZE,
            f"{result.size} bytes, over the limit of {policy.max_file_size} (not read)",
        )
    return None


def _first_match(name: str, patterns: tuple[str, ...]) -> str | None:
    # Against the path inside the work dir and its last part: "*.inp" catches "sub/a.inp".
    leaf = name.rsplit("/", 1)[-1]
    for pattern in patterns:
        if fnmatch.fnmatchcase(name, pattern) or fnmatch.fnmatchcase(leaf, pattern):
            return pattern
    return None
