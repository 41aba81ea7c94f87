"""Manual release: a command's results wait at the site until a site operator decides.

A command with ``release = "manual"`` ends as usual, but its results do not leave: the site
entry writes ``held.json`` in the job's control dir (what would leave: names, sizes, SHA-256,
and what the egress policy withheld) and waits, telling the bridge the job awaits release. A
site operator runs ``mint-bridge site release JOB`` or ``site reject JOB --reason ...``; the
decision is recorded in the audit log first, then in ``release.json`` beside the hold. Both
files are durable, so a restarted site entry (a re-attaching bridge) finds the hold, or the
decision, where it was left.

Who may decide: the site account itself (the owner of ``[site] work_base``); a member of
``[site] release_group`` runs the command through ``sudo -u <site account>`` and is named in
the audit line by ``SUDO_USER``. Anyone else is refused before anything is written.

Never: let a held job's bytes leave before a ``released`` line is on disk, or list a site path
in what the bridge is told.
"""

from __future__ import annotations

import grp
import logging
import os
import pwd
import time
from dataclasses import dataclass
from typing import Any

from bridge.core.errors import BridgeError, ExitCode, JobUnknown
from bridge.core.results import open_result_for_reading
from bridge.core.streams import sha256_stream
from bridge.core.workdir_files import HELD_FILE, RELEASE_FILE
from bridge.site.audit import JobAudit, Peer
from bridge.site.audit_chain import AuditWriter
from bridge.site.config import SiteConfig
from bridge.site.outgoing import Outgoing
from bridge.site.workdir import WorkDir

log = logging.getLogger(__name__)

RELEASED = "released"
REJECTED = "rejected"


class ReleaseRefused(BridgeError):
    """The job is not held, or was decided already (names the fix)."""

    exit_code = ExitCode.USAGE


class NotAnOperator(ReleaseRefused):
    """The caller may not release or reject jobs at this site."""

    exit_code = ExitCode.AUTH_FAILED


@dataclass(frozen=True)
class Held:
    job_id: str
    record: dict[str, Any]  # as held.json holds it


def release_command(job_id: str) -> str:
    """What the site operator runs, as the bridge side shows it."""
    return f"mint-bridge site release {job_id}"


def hold(wd: WorkDir, command: str, out: Outgoing) -> dict[str, Any]:
    """Record the hold (once): what would leave, hashed now when no content pass did."""
    try:
        existing: dict[str, Any] = wd.read_json(HELD_FILE)
        return existing
    except FileNotFoundError:
        pass
    record = {
        "job": wd.job_id,
        "command": command,
        "since": time.time(),
        "files": _summarise(wd, out),
        "withheld": [{"name": w.name, "size": w.size, "rule": w.rule} for w in out.withheld],
    }
    wd.write_json(HELD_FILE, record)
    log.info("%s: results held for manual release (%d files)", wd.job_id, len(out.files))
    return record


def decision(wd: WorkDir) -> dict[str, Any] | None:
    try:
        found: dict[str, Any] = wd.read_json(RELEASE_FILE)
    except FileNotFoundError:
        return None
    return found


def decide(site: SiteConfig, job_id: str, verdict: str, reason: str = "") -> str:
    """Release or reject a held job; returns who did it. Audited before it takes effect."""
    by = operator(site)
    wd = WorkDir(site.work_base, job_id)
    if not wd.exists():
        raise JobUnknown(f"no job {job_id} at this site")
    with wd.locked():
        if not os.path.exists(wd.control_file(HELD_FILE)):
            raise ReleaseRefused(
                f"job {job_id} is not held for release at this site (list held jobs with "
                f"mint-bridge site held --config {site.path})"
            )
        earlier = decision(wd)
        if earlier is not None:
            raise ReleaseRefused(
                f"job {job_id} was already {earlier['verdict']} by {earlier['by']}"
            )
        job_audit = JobAudit(AuditWriter(site.audit_dir), job_id, Peer("local", "operator"))
        if verdict == RELEASED:
            job_audit.released(by)
        else:
            job_audit.rejected(by, reason)
        wd.write_json(
            RELEASE_FILE, {"verdict": verdict, "by": by, "reason": reason, "at": time.time()}
        )
    log.info("%s: %s by %s %s", job_id, verdict, by, reason)
    return by


def held_jobs(site: SiteConfig) -> list[Held]:
    """Every job at the site whose results wait for a decision, oldest first."""
    found = []
    try:
        entries = list(os.scandir(site.work_base))
    except FileNotFoundError:
        return []
    for entry in entries:
        try:
            wd = WorkDir(site.work_base, entry.name)
        except BridgeError:
            continue  # not a job's work dir
        try:
            record = wd.read_json(HELD_FILE)
        except (FileNotFoundError, NotADirectoryError):
            continue
        if decision(wd) is None:
            found.append(Held(wd.job_id, record))
    return sorted(found, key=lambda h: float(h.record.get("since", 0)))


def operator(site: SiteConfig) -> str:
    """Who is deciding, if allowed: the site account, or a ``release_group`` member via sudo."""
    owner = os.stat(site.work_base).st_uid
    account = _user_name(owner)
    if os.geteuid() != owner:
        raise NotAnOperator(
            f"only the site account {account} may release or reject jobs (you are "
            f"{_user_name(os.geteuid())}); run it as sudo -u {account} mint-bridge site ..."
        )
    via_sudo = os.environ.get("SUDO_USER")
    if not via_sudo or via_sudo == account:
        return account
    if site.release_group is None or not _in_group(via_sudo, site.release_group):
        allowed = f"members of {site.release_group}" if site.release_group else "no one else"
        raise NotAnOperator(
            f"{via_sudo} may not release or reject jobs at this site (allowed: {account} and "
            f"{allowed}; set [site] release_group in {site.path} to let a group decide)"
        )
    return via_sudo


def _summarise(wd: WorkDir, out: Outgoing) -> list[dict[str, Any]]:
    files = []
    root_fd = os.open(wd.path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        for result in out.files:
            digest = out.sha256.get(result.name)
            if digest is None:
                with open_result_for_reading(root_fd, result) as source:
                    digest = sha256_stream(source, result.size, result.name)
            files.append({"name": result.name, "size": result.size, "sha256": digest})
    finally:
        os.close(root_fd)
    return files


def _user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"


def _in_group(user: str, group: str) -> bool:
    try:
        entry = grp.getgrnam(group)
        primary = pwd.getpwnam(user).pw_gid
    except KeyError:
        return False
    return user in entry.gr_mem or primary == entry.gr_gid
