"""The end-to-end probe as health checks (``health --probe``, ``mint-bridge sites test``).

The bridge node sends the built-in probe job through the site's real path
(``bridge.client.probe``) and reports each step with its time, then what the site found:

    probe.connect        reach the site's entry (SSH) or the broker; value: time in ms
    probe.stage_in       the site accepted the job and has the input (in a new work dir)
    probe.run            the site answered the probe (through the broker: an agent claimed it)
    probe.stage_out      the copy and the site's report came back, each verified
    probe.verify         the copy's SHA-256 equals the input's, as the site read it too
    probe.work_base      the site made (and removed) the probe's work dir in its work base
    probe.program.<cmd>  warn: a command's program is missing or cannot run (path named)
    probe                warn: the site does not answer probes (``allow_probe = false``)

A failed step fails with the error as the site or the transport reported it; the steps after
it are ``unknown``. Nothing here changes the site: the probe's work dir is the site's to
remove, and it does.
"""

from __future__ import annotations

import math

from bridge.client.node_config import BrokerSite, Site
from bridge.client.probe import STEPS, ProbeResult, ProbeUnclaimed, probe_site
from bridge.core.errors import (
    BridgeError,
    CommandNotAllowed,
    SiteConfigInvalid,
    TransferCorrupted,
    TransportError,
)
from node_setup.health.result import Probe
from node_setup.health.runner import Deadline, Job

# Of the time left for the probe, the share an agent gets to claim it: the rest is for the
# probe's own steps and the cancel of an unclaimed one, so its failure is reported in time.
_CLAIM_SHARE = 0.6

_DONE = {
    "connect": "reached the site",
    "stage_in": "the site accepted the probe and received its input",
    "run": "the site answered the probe",
    "stage_out": "the copy and the site's report came back",
}
_STUCK = {
    "connect": "the site (or its broker) accepts the connection but never answers",
    "stage_in": "the site took the probe but never confirmed its input: see the site log",
    "run": "the site never answered the probe: see the site log (or the agent's journal)",
    "stage_out": "the probe's files never came back: see the site log",
    "verify": "",
}


def with_probe(check: Job, site: Site, budget: float) -> Job:
    """``check`` and then the probe, within what is left of ``budget``.

    The probe runs even when a check above failed: some failures do not stop jobs (a
    certificate about to expire), and for those that do, the probe's step says which."""

    def job(probe: Probe) -> None:
        deadline = Deadline(budget)
        check(probe)
        check_probe(site, probe, deadline.left())

    return job


def check_probe(site: Site, probe: Probe, timeout: float) -> ProbeResult:
    """Send the probe to ``site`` and report its steps and the site's findings."""
    probe.start("probe.connect", _STUCK["connect"])
    claim = max(1.0, math.floor(timeout * _CLAIM_SHARE)) if isinstance(site, BrokerSite) else None
    result = probe_site(
        site,
        timeout,
        claim_timeout=claim,
        on_step=lambda step: probe.start(f"probe.{step}", _STUCK[step]),
    )
    if isinstance(result.error, CommandNotAllowed):
        probe.warn(
            "probe",
            site.name,
            "",
            str(result.error),
            "ask the site admin to allow probes ([site] allow_probe = true, the default) and "
            "to run the same mint-bridge version as this node",
        )
        return result
    for step in STEPS:
        name = f"probe.{step}"
        if step == result.failed_step:
            assert result.error is not None
            probe.fail(name, None, "", str(result.error), _fix(site, result.error))
        elif step in result.seconds:
            ms = round(result.seconds[step] * 1000, 1)
            message = _DONE.get(step) or f"the file came back unchanged (SHA-256 {result.sha256})"
            probe.ok(name, ms, "ms", message)
        else:
            probe.unknown(name, "not run: an earlier step failed")
    if result.report is not None:
        report = result.report
        probe.ok("probe.work_base", report.work_base, "", "the probe's work dir was made there")
        for problem in report.programs:
            probe.warn(
                f"probe.program.{problem.command}",
                problem.program,
                "",
                f"command {problem.command}: program {problem.program} {problem.problem}",
                f"install it, or fix commands.{problem.command}.program in {report.config} "
                "(at the site)",
            )
    return result


def _fix(site: Site, error: BridgeError) -> str:
    if isinstance(error, ProbeUnclaimed):
        return (
            "start the site's agent (at the site: systemctl enable --now "
            "mint-bridge-agent.service) and check it with `mint-bridge health --site-side`"
        )
    if isinstance(error, SiteConfigInvalid):
        return "the site admin fixes the site config as the message says"
    if isinstance(error, TransferCorrupted):
        return "data changed on the way: run the probe again; if it recurs, check the link"
    if isinstance(error, TransportError):
        return f"the connection to {site.name} failed: see the checks above and the site log"
    return "the site admin fixes what the message names (details in the site log)"


__all__ = ["check_probe", "with_probe"]
