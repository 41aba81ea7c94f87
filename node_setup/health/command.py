"""``mint-bridge health``: the command, its modes, and ``--watch`` (site_ping on a schedule);
``mint-bridge sites test NAME``: a site's checks and its probe job (``health --probe``).

Bridge node (default, ``--site``, ``--all``, each with ``--probe``), at a site
(``--site-side``) or a broker (``--broker``). Prints the table or ``--json`` and exits with
the monitoring code of the worst status; a usage error exits 3 (unknown), never click's 2,
which would read as "fail".
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import time
from collections.abc import Callable
from types import FrameType
from typing import Any, NoReturn

import click

from bridge.core.errors import BridgeError
from node_setup.console import configure_logging, fail
from node_setup.health import report
from node_setup.health.result import Check, Probe, Status

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 10.0  # a monitoring system's usual plugin timeout is 10-30 s
# A probe through a broker waits for an agent's long poll to claim it: give it time to.
PROBE_TIMEOUT = 30.0
DEFAULT_SITE_CONFIG = "~/.config/mint-bridge/site.toml"


# --- health -----------------------------------------------------------------------------------


class _MonitoringCommand(click.Command):
    """Usage errors exit 3 (unknown), not click's 2, which monitoring would read as 'fail'."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        try:
            return super().parse_args(ctx, args)
        except click.UsageError as exc:
            raise _unknown(exc) from None

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except click.UsageError as exc:
            raise _unknown(exc) from None


def _unknown(exc: click.UsageError) -> click.UsageError:
    # An instance attribute: click reads exc.exit_code when it exits.
    setattr(exc, "exit_code", int(Status.UNKNOWN))  # noqa: B010
    return exc


def _threshold(ctx: click.Context, param: click.Parameter, value: str) -> Any:
    from node_setup.health.site import parse_threshold

    try:
        return parse_threshold(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from exc


@click.command("health", cls=_MonitoringCommand)
@click.option("--site", "site_name", default=None, help="Check this site of the bridge config.")
@click.option("--all", "all_sites", is_flag=True, help="Check every site (the default).")
@click.option("--site-side", is_flag=True, help="Run the checks of a site, at the site.")
@click.option("--broker", "broker_mode", is_flag=True, help="Check a broker.")
@click.option(
    "--config",
    "config_path",
    default=None,
    help=f"Bridge config; with --site-side the site config (default {DEFAULT_SITE_CONFIG}).",
)
@click.option("--broker-url", default=None, help="With --broker: the broker's URL.")
@click.option("--token-file", default=None, help="With --broker: the token's file.")
@click.option("--ca-file", default=None, help="With --broker: CA bundle to verify the broker.")
@click.option("--allow-http", is_flag=True, help="With --broker: allow http:// on loopback.")
@click.option(
    "--scope",
    type=click.Choice(["client", "site", "admin"]),
    default=None,
    help="With --broker: the scope the token must have.",
)
@click.option(
    "--disk-warn",
    default="10%",
    show_default=True,
    callback=_threshold,
    help="--site-side: warn below this free space (percent or size, e.g. 5GiB).",
)
@click.option(
    "--disk-fail",
    default="2%",
    show_default=True,
    callback=_threshold,
    help="--site-side: fail below this free space.",
)
@click.option(
    "--agent/--no-agent",
    default=None,
    help="--site-side: check the broker agent (default: if the config has [agent]).",
)
@click.option(
    "--probe",
    "probe_jobs",
    is_flag=True,
    help="Then send each site a tiny built-in job through its real path and check it.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the JSON document.")
@click.option(
    "--timeout",
    type=click.FloatRange(min=0.5),
    default=DEFAULT_TIMEOUT,
    show_default=True,
    help="Seconds for the whole run.",
)
@click.option(
    "--watch",
    type=click.FloatRange(min=1),
    default=None,
    help="Ping the sites every N seconds until stopped (site_ping).",
)
@click.option("--state-file", default=None, help="With --watch: keep the latest results here.")
@click.option("-v", "--verbose", count=True)
def health(**kw: Any) -> None:
    """Check the bridge node's sites, a site (--site-side) or a broker (--broker).

    Exit codes: 0 ok, 1 warn, 2 fail, 3 unknown.
    """
    configure_logging(kw["verbose"])
    if kw["site_name"] and kw["all_sites"]:
        raise click.UsageError("give --site NAME or --all, not both")
    if kw["site_side"] and kw["broker_mode"]:
        raise click.UsageError("give --site-side or --broker, not both")
    if kw["probe_jobs"] and (kw["site_side"] or kw["broker_mode"] or kw["watch"] is not None):
        raise click.UsageError("--probe checks the bridge node's sites: not with --site-side, "
                               "--broker or --watch")  # fmt: skip
    if kw["watch"] is not None:
        _watch(kw)
        return
    _report(lambda: _run_checks(kw), kw["as_json"], kw["timeout"])


def _report(run: Callable[[], list[Check]], as_json: bool, timeout: float) -> NoReturn:
    """Print the checks ``run`` returns (table or JSON) and exit with their monitoring code."""
    try:
        checks = run()
    except Exception as exc:  # whatever broke, a monitoring system must see "unknown"
        log.debug("health failed", exc_info=True)
        checks = [
            Check(
                "health",
                "health",
                Status.UNKNOWN,
                None,
                "",
                f"{exc!r:.300}",
                "rerun with -vv and report the error",
            )
        ]
    if as_json:
        click.echo(report.render_json(checks, timeout))
    else:
        click.echo(report.render_table(checks))
    sys.exit(report.exit_code(checks))


def _run_checks(kw: dict[str, Any]) -> list[Check]:
    timeout = float(kw["timeout"])
    if kw["site_side"]:
        return _site_side(kw, timeout)
    if kw["broker_mode"]:
        return _broker(kw, timeout)
    from node_setup.health.bridge_node import bridge_checks

    return bridge_checks(kw["config_path"], kw["site_name"], timeout, probe_jobs=kw["probe_jobs"])


def _site_side(kw: dict[str, Any], timeout: float) -> list[Check]:
    from node_setup.health.runner import run_all
    from node_setup.health.site import SiteThresholds, site_side_jobs

    path = os.path.expanduser(kw["config_path"] or DEFAULT_SITE_CONFIG)
    limits = SiteThresholds(disk_warn=kw["disk_warn"], disk_fail=kw["disk_fail"])
    return run_all(site_side_jobs(path, timeout * 0.9, limits, kw["agent"]), timeout)


def _broker(kw: dict[str, Any], timeout: float) -> list[Check]:
    from node_setup.health.broker import check_broker
    from node_setup.health.broker_access import BrokerTarget
    from node_setup.health.runner import run_all

    if kw["broker_url"]:
        token_file = kw["token_file"]
        targets = {
            "broker": BrokerTarget(
                kw["broker_url"], token_file, kw["ca_file"], kw["allow_http"], kw["scope"]
            ),
        }
    else:
        targets = _broker_sites(kw)
    if not targets:
        probe = Probe("broker")
        probe.unknown(
            "broker.config",
            "no broker to check",
            "pass --broker-url, or add a broker site to the bridge config",
        )
        return probe.snapshot()
    budget = timeout * 0.9
    jobs = {
        name: (lambda t: lambda probe: check_broker(t, probe, budget))(target)
        for name, target in targets.items()
    }
    return run_all(jobs, timeout)


def _broker_sites(kw: dict[str, Any]) -> dict[str, Any]:
    """The broker sites of the bridge config, each checked with its own client token."""
    from bridge.client.node_config import BrokerSite, find_config
    from node_setup.health.broker_access import BrokerTarget

    config = find_config(kw["config_path"])
    return {
        site.name: BrokerTarget(
            site.url,
            site.token_file,
            site.ca_bundle,
            site.allow_http,
            kw["scope"] or "client",
            site.broker_site or site.name,
        )
        for site in config.sites.values()
        if isinstance(site, BrokerSite) and (not kw["site_name"] or site.name == kw["site_name"])
    }


# --- sites test: the probe job for one site ----------------------------------------------------


@click.group("sites")
def sites() -> None:
    """Test the bridge node's sites."""


@sites.command("test", cls=_MonitoringCommand)
@click.argument("name")
@click.option("--config", "config_path", default=None, help="Bridge config (TOML).")
@click.option("--json", "as_json", is_flag=True, help="Print the JSON document.")
@click.option(
    "--timeout",
    type=click.FloatRange(min=0.5),
    default=PROBE_TIMEOUT,
    show_default=True,
    help="Seconds for the whole test.",
)
@click.option("-v", "--verbose", count=True)
def sites_test(name: str, config_path: str | None, as_json: bool, timeout: float,
               verbose: int) -> None:  # fmt: skip
    """Run site NAME's health checks, then a tiny built-in job through its real path.

    The job stages a file in, has the site copy it, brings the copy back and checks its
    SHA-256. Exit codes as for health: 0 ok, 1 warn, 2 fail, 3 unknown.
    """
    configure_logging(verbose)
    from node_setup.health.bridge_node import bridge_checks

    _report(lambda: bridge_checks(config_path, name, timeout, probe_jobs=True), as_json, timeout)


# --- health --watch: site_ping on a schedule ---------------------------------------------------


def _watch(kw: dict[str, Any]) -> None:
    from bridge.client.node_config import BrokerSite, find_config
    from node_setup.changes import write_atomic
    from node_setup.health.ping import PingResult, PingSchedule, site_ping

    try:
        config = find_config(kw["config_path"])
    except BridgeError as exc:
        fail(exc)
    sites = {
        name: site
        for name, site in config.sites.items()
        if not isinstance(site, BrokerSite) and (not kw["site_name"] or name == kw["site_name"])
    }
    if not sites:
        click.echo(
            "mint-bridge: error: no SSH or local site to ping in the bridge config", err=True
        )
        sys.exit(int(Status.UNKNOWN))
    timeout = float(kw["timeout"])

    def changed(old: PingResult | None, new: PingResult) -> None:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(new.checked_at))
        state = (
            f"up ({new.hello.version}, {new.seconds * 1000:.0f} ms)"
            if new.hello
            else f"DOWN: {new.error}"
        )
        click.echo(f"{stamp} {new.site}: {state}")

    schedule = PingSchedule(
        lambda name: site_ping(sites[name], timeout), sorted(sites), float(kw["watch"]), changed
    )

    def stop(signum: int, frame: FrameType | None) -> None:
        schedule.request_stop()  # only a flag: the loop below ends and joins the thread

    def save() -> None:
        if kw["state_file"]:
            state = {name: result.to_json() for name, result in schedule.latest.items()}
            write_atomic(kw["state_file"], json.dumps({"sites": state}, indent=2) + "\n", 0o644)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    schedule.start()
    # Short waits so the state file follows the pings closely, whatever the interval.
    while not schedule.wait(min(1.0, float(kw["watch"]))):
        save()
    schedule.stop(timeout)
    save()
