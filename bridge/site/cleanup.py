"""Removing work dirs whose retention time has passed (``mint-bridge site cleanup``).

Only directories whose name is a job id and that hold our control dir are considered, so
nothing else in a shared work base such as /tmp is ever touched. A job still running is kept.
"""

from __future__ import annotations

import logging
import os
import time

from bridge.errors import ProtocolError
from bridge.job import check_job_id
from bridge.site.status_cache import OUTCOME_FILE
from bridge.site.workdir import WorkDir
from bridge.site_config import SiteConfig
from schedulers.batch import EXIT_CODE_FILE
from schedulers.local import EXIT_FILE

log = logging.getLogger(__name__)


def remove_expired(site: SiteConfig, dry_run: bool = False, now: float | None = None) -> list[str]:
    now = time.time() if now is None else now
    removed: list[str] = []
    try:
        entries = list(os.scandir(site.work_base))
    except FileNotFoundError:
        return removed
    for entry in entries:
        wd = _our_workdir(site, entry)
        if wd is None or not _expired(wd, site.retention, now):
            continue
        removed.append(wd.path)
        if not dry_run:
            wd.remove()
            log.info("%s: work dir removed after retention", wd.job_id)
    return removed


def _our_workdir(site: SiteConfig, entry: os.DirEntry[str]) -> WorkDir | None:
    try:
        check_job_id(entry.name)
    except ProtocolError:
        return None
    if not entry.is_dir(follow_symlinks=False):
        return None
    wd = WorkDir(site.work_base, entry.name)
    return wd if wd.exists() else None


def _expired(wd: WorkDir, retention: float, now: float) -> bool:
    """Expired when the job ended (or never started) longer than ``retention`` ago."""
    # Whichever record says the job ended: the local runner's, the batch script's exit code,
    # or the outcome the site entry saw from the scheduler (a walltime kill leaves no code).
    ends = (wd.control_file(name) for name in (EXIT_FILE, EXIT_CODE_FILE, OUTCOME_FILE))
    marker = next((path for path in ends if os.path.exists(path)), None)
    if marker is None and wd.native_id() is not None:
        return False  # started and not known to have ended: maybe still running
    reference = marker or wd.control
    try:
        return now - os.stat(reference).st_mtime > retention
    except FileNotFoundError:
        return False
