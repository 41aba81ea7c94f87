"""What ``mint-bridge run`` says while its pull job waits for a site's agent, and why a job
that no agent ever took ended.

``ClaimWatch`` reads each job document the run follows. While the broker's ``notice`` says no
agent of the site is online, it says so once on stderr (and again when one is back); when the
job then ends unclaimed, by our overall timeout or the broker's queue limit, ``unclaimed``
gives the true reason, "never claimed: no agent of site X was online" (exit 69, as for any
site that cannot be reached), instead of a cancel at a site that never saw the job.

This module never talks to the broker: it only reads the documents it is given.
"""

from __future__ import annotations

import logging
from typing import Any

from bridge.core.errors import BridgeError, ExitCode, JobFailedAtSite, TimedOut

log = logging.getLogger(__name__)

FINAL_STATES = ("finished", "cancelled", "expired")
WAITING_STATES = ("created", "queued")  # no agent has the job (yet, or again)
NO_AGENT_ONLINE = "no_agent_online"  # the code of the broker's notice in the job document
_FIX = (
    "start the site's agent (mint-bridge agent --config SITE.toml, at the site) or check why "
    "it does not reach the broker"
)


class ClaimWatch:
    """The waiting of one job at one site, as its documents tell it."""

    def __init__(self, job_id: str, site: str, overall_timeout: float | None) -> None:
        self.job_id = job_id
        self.site = site
        self.overall_timeout = overall_timeout  # what ``run`` gives up after
        self.state: str | None = None  # the job's state at the broker, as last seen
        self.absent: str | None = None  # the broker's notice while no agent is online
        self._said = False

    def note(self, doc: dict[str, Any]) -> None:
        """Take in the latest job document; say once, on stderr, while no agent can take it."""
        self.state = str(doc.get("state"))
        if self.state in FINAL_STATES:
            return  # what the last document before the end said stands: it is the reason
        notice = doc.get("notice")
        before, self.absent = self.absent, None
        if isinstance(notice, dict) and notice.get("code") == NO_AGENT_ONLINE:
            self.absent = str(notice.get("message") or "no agent of the site is online")[:500]
        if self.absent is not None and not self._said:
            self._said = True
            limit = self.overall_timeout
            ours = f"; mint-bridge run gives up after {limit:g} s (--timeout)" if limit else ""
            log.warning("%s: %s%s", self.job_id, self.absent, ours)
        elif before is not None and self.absent is None:
            log.warning("%s: an agent of site %s is online again", self.job_id, self.site)

    def timed_out(self, exc: TimedOut) -> BridgeError:
        """The overall timeout's true reason (``exc`` itself once an agent had the job)."""
        if self.state not in WAITING_STATES:
            return exc
        after = f"{self.overall_timeout:g} s" if self.overall_timeout else "the overall timeout"
        if self.absent is not None:
            return self._never_claimed(f"the job was cancelled at the broker after {after}")
        return TimedOut(
            f"no result within {after}: no agent of site {self.site} claimed the job (its "
            "agents were busy with other jobs); it was cancelled at the broker (raise --timeout "
            "or the MInt job's walltime if it needs longer)"
        )

    def expired(self, reason: str | None) -> BridgeError:
        """The broker's queue limit ended the job before any agent claimed it."""
        if self.absent is not None:
            return self._never_claimed("the broker gave up on the job at its queue limit")
        return JobFailedAtSite(
            f"site {self.site} did not take the job: "
            f"{reason or 'no agent of the site claimed it in time'}; "
            "check that the site's agent is running",
            ExitCode.SITE_UNREACHABLE,
        )

    def _never_claimed(self, what: str) -> JobFailedAtSite:
        # The notice's first clause is the fact ("no agent ... has polled for 5 min"); the rest
        # spoke of the waiting, which is over.
        fact = (self.absent or "").split("; ", 1)[0]
        return JobFailedAtSite(
            f"never claimed: no agent of site {self.site} was online ({fact}); {what}; {_FIX}",
            ExitCode.SITE_UNREACHABLE,
        )


__all__ = ["FINAL_STATES", "WAITING_STATES", "ClaimWatch"]
