"""What leaves the site at a job's end: its results after the egress policy, with the reasons.

Both paths call ``select_results`` where they collect results (the site entry before its
manifest, the agent before its uploads), so the same policy holds on both. Order matters:
names and sizes from ``lstat`` first (nothing read), then, only when a content rule is on, one
read pass per remaining file that hashes it and checks it; that digest is the one the sender
uses, so no result is hashed twice. A result that cannot be read is listed with its reason;
the others and the job's exit code still go.

Never: name a private file, a marker or a site path in what leaves.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from typing import Any

from bridge.core import outbound
from bridge.core.errors import BridgeError, StagingError
from bridge.core.results import ResultFile, open_result_for_reading
from bridge.site import private_index
from bridge.site.accepted_job import AcceptedJob, collect_job_results
from bridge.site.config import SiteConfig
from bridge.site.egress import (
    RULE_MARKER,
    RULE_PRIVATE,
    EgressPolicy,
    Withheld,
    check_metadata,
    withhold,
)
from bridge.site.egress_scan import inspect

log = logging.getLogger(__name__)

Signature = tuple[int, int, int, int]  # inode, size, mtime_ns, ctime_ns of an open result


@dataclass
class Outgoing:
    files: list[ResultFile] = field(default_factory=list)
    # From the content pass: the digest the sender sends, and the file as it was then (a
    # sender that finds it changed withdraws it instead of sending unchecked bytes).
    sha256: dict[str, str] = field(default_factory=dict)
    signatures: dict[str, Signature] = field(default_factory=dict)
    skipped: list[dict[str, Any]] = field(default_factory=list)  # as the manifest lists them
    withheld: list[Withheld] = field(default_factory=list)  # the policy's, for the audit log

    @property
    def required_withheld(self) -> list[str]:
        return [s["name"] for s in self.skipped if s.get("required")]


def select_results(site: SiteConfig, job: AcceptedJob) -> Outgoing:
    job_id = job.request.job_id
    files, skips = collect_job_results(job)
    out = Outgoing(skipped=[{"name": s.name, "reason": outbound.scrub(s.reason)} for s in skips])
    policy = site.egress_for(job.command)
    selection = check_metadata(policy, files)
    _withhold(job_id, out, selection.withheld)
    if policy.inspects_content:
        _inspect_all(job_id, job.workdir.path, policy, selection.passed, out)
    else:
        out.files = selection.passed
    return out


def signature(fd: int) -> Signature:
    st = os.fstat(fd)
    return (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def _inspect_all(
    job_id: str, workdir: str, policy: EgressPolicy, files: list[ResultFile], out: Outgoing
) -> None:
    private = _private_hashes(policy)
    sizes = {int(s) for s in private.values()} if private else set()
    root_fd = os.open(workdir, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        for result in files:
            # Only a file the size of a private one can be byte-identical to it.
            if not policy.deny_markers and result.size not in sizes:
                out.files.append(result)
                continue
            try:
                broken = _inspect_one(root_fd, policy, result, private, out)
            except (StagingError, OSError) as exc:
                reason = exc.message if isinstance(exc, BridgeError) else outbound.os_error(exc)
                log.warning("%s: result %s not sent: %s", job_id, result.name, reason)
                out.skipped.append({"name": result.name, "reason": outbound.scrub(reason)})
                continue
            if broken is None:
                out.files.append(result)
            else:
                _withhold(job_id, out, [broken])
    finally:
        os.close(root_fd)


def _inspect_one(
    root_fd: int,
    policy: EgressPolicy,
    result: ResultFile,
    private: dict[str, int],
    out: Outgoing,
) -> Withheld | None:
    with open_result_for_reading(root_fd, result) as source:
        seen = signature(source.fileno())
        found = inspect(source, result.size, policy.deny_markers, result.name)
    if found.marker is not None:
        index = policy.deny_markers.index(found.marker)
        return withhold(policy, result, RULE_MARKER, f"it contains deny_markers[{index}]")
    assert found.sha256 is not None  # read to its end: no marker stopped it
    if found.sha256 in private:
        return withhold(
            policy, result, RULE_PRIVATE, "it is byte-identical to a private file of the site",
            sha256=found.sha256,
        )  # fmt: skip
    out.sha256[result.name] = found.sha256
    out.signatures[result.name] = seen
    return None


def _private_hashes(policy: EgressPolicy) -> dict[str, int]:
    """SHA-256 -> size of every private file, refreshed now (only changed files are read)."""
    if not policy.deny_private:
        return {}
    for directory in policy.private_dirs:
        if not os.path.isdir(directory):
            raise StagingError(
                "a private dir of [egress] private_dirs does not exist; results are not sent "
                "while deny_private cannot be checked (correct private_dirs in the site config)"
            )
    entries = private_index.refresh(policy.private_dirs, policy.private_index).index.entries
    return {str(e["sha256"]): int(e["size"]) for e in entries.values()}


def _withhold(job_id: str, out: Outgoing, withheld: list[Withheld]) -> None:
    for item in withheld:
        log.warning("%s: result %s withheld (%s): %s", job_id, item.name, item.rule, item.reason)
        out.skipped.append(item.to_wire())
        out.withheld.append(item)
