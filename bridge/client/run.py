"""What ``mint-bridge run`` and ``mint-bridge demo`` do, callable from tests without a CLI."""

from __future__ import annotations

import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from types import FrameType
from typing import TYPE_CHECKING, BinaryIO

from bridge.client import job_log, mint_pbs, node_metrics, run_summary
from bridge.client.channel_job import JobRun
from bridge.client.node_config import (
    BrokerSite,
    Site,
    default_config,
    find_config,
)
from bridge.client.progress_view import Watchers, watcher_for
from bridge.client.request import RunResult, build_request, parse_params, prepare_inputs
from bridge.client.transports import connector_for
from bridge.core import progress
from bridge.core.errors import BridgeError, ExitCode, ParameterInvalid, TimedOut
from bridge.core.job import check_job_id, new_job_id
from bridge.core.units import parse_duration

if TYPE_CHECKING:
    from bridge.client.broker_job import BrokerJobRun

log = logging.getLogger(__name__)


def run_command(
    *,
    config_path: str | None,
    site_name: str,
    command: str,
    inputs: list[str],
    params: list[str],
    output_dir: str,
    job_id: str | None = None,
    walltime: str | None = None,
    embedded_default: bool = False,
    use_pbs_walltime: bool = True,
    timeout: str | None = None,
    show: RunDisplay | None = None,
) -> int:
    show = show or RunDisplay()
    config = default_config() if embedded_default else find_config(config_path)
    site = config.site(site_name)
    job_id = check_job_id(job_id) if job_id else new_job_id()
    summary = run_summary.Summary()
    started = time.monotonic()
    watcher = None if show.quiet else watcher_for(show.progress, job_id, sys.stderr)
    watchers = Watchers(summary, *([watcher] if watcher else []))
    recording = job_log.recording(
        job_id, job_log.log_dir(), site=site_name, command=command, output_dir=output_dir
    )
    with recording as record, progress.watching(watchers):
        if not show.quiet:  # one line even without -v: the id that matches the site's log
            where = f"; log: {record.path}" if record.path else ""
            sys.stderr.write(f"mint-bridge: job {job_id} at site {site_name} ({command}){where}\n")
            sys.stderr.flush()
        try:
            result = run_job_at(
                site,
                command=command,
                inputs=inputs,
                params=params,
                output_dir=output_dir,
                job_id=job_id,
                walltime=walltime,
                use_pbs_walltime=use_pbs_walltime,
                timeout=timeout,
                configured_timeout=config.timeout,
            )
        except BridgeError as exc:
            code = int(exc.exit_code)
            _record_metrics(config.metrics_textfile, site_name, code, summary, started)
            if show.json:
                run_summary.print_failure(summary, job_id, site_name, command, exc, started)
            raise
        record.finished(result.exit_code, result.outcome.reason)
    _record_metrics(config.metrics_textfile, site_name, result.exit_code, summary, started)
    if show.json:
        run_summary.print_result(summary, job_id, site_name, command, result, started)
    return result.exit_code


def _record_metrics(
    path: str | None, site: str, code: int, summary: run_summary.Summary, started: float
) -> None:
    if path is None:
        return
    figures = node_metrics.RunFigures(
        site=site,
        exit_code=code,
        bytes_in=sum(int(f["size"]) for f in summary.inputs),
        bytes_out=sum(int(f["size"]) for f in summary.results),
        ended=time.time(),
        seconds=time.monotonic() - started,
    )
    node_metrics.record_run(path, figures)


@dataclass(frozen=True)
class RunDisplay:
    """What ``run`` shows: ``progress`` auto|bar|lines|none; ``quiet`` only errors and
    warnings; ``json`` a one-line summary on stdout at the end."""

    progress: str = "auto"
    quiet: bool = False
    json: bool = False


def run_job_at(
    site: Site,
    *,
    command: str,
    inputs: list[str],
    params: list[str],
    output_dir: str,
    job_id: str | None = None,
    walltime: str | None = None,
    use_pbs_walltime: bool = True,
    timeout: str | None = None,
    configured_timeout: float | None = None,
    streams: tuple[BinaryIO, BinaryIO] | None = None,
    extra_metadata: Mapping[str, str] | None = None,
) -> RunResult:
    """Run one job at ``site`` with the job's stdout/stderr going to ``streams``;
    ``extra_metadata`` is added to what the job carries (the drop-ins' legacy keys)."""
    stdout, stderr = streams or (sys.stdout.buffer, sys.stderr.buffer)
    site_name = site.name
    job_id = check_job_id(job_id) if job_id else new_job_id()
    local_inputs = prepare_inputs(inputs)
    try:
        values = parse_params(params)
        walltime_limit = parse_duration(walltime) if walltime else None
    except (BridgeError, ValueError) as exc:
        raise ParameterInvalid(str(exc)) from exc
    metadata = {"bridge_host": socket.gethostname(), "cwd": os.getcwd(), **(extra_metadata or {})}
    pbs_job = mint_pbs.detect()
    if pbs_job is not None:
        metadata.update(pbs_job.metadata())
        log.info("%s: for MInt job %s (module dir %s)", job_id, pbs_job.job_id, pbs_job.module_dir)
        if use_pbs_walltime and pbs_job.remaining_walltime:
            walltime_limit = min(filter(None, (walltime_limit, pbs_job.remaining_walltime)))
    request = build_request(job_id, command, local_inputs, values, metadata)
    limit = _overall_timeout(timeout, pbs_job, configured_timeout)
    if limit:
        _arm_timeout(limit)
    log.info("%s: running %s at site %s", job_id, command, site_name)
    job: JobRun | BrokerJobRun
    if isinstance(site, BrokerSite):  # the pull path: through the broker to the site's agent
        from bridge.client.broker_job import BrokerJobRun

        job = BrokerJobRun(
            site,
            request,
            local_inputs,
            output_dir,
            stdout,
            stderr,
            walltime_limit=walltime_limit,
            overall_timeout=limit,
        )
    else:
        job = JobRun(
            connector_for(site),
            request,
            local_inputs,
            output_dir,
            stdout,
            stderr,
            reconnect_attempts=site.reconnect_attempts,
            walltime_limit=walltime_limit,
        )
    try:
        result = job.run()
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
    outcome = result.outcome
    log.info(
        "%s: %s (%s); %d result file(s) in %s",
        job_id, outcome.state.value, outcome.reason, len(result.results), output_dir,
    )  # fmt: skip
    if result.withheld_required:
        log.error(
            "%s: the site withheld required result(s) %s (see the reasons above); the job "
            "itself ended %s with exit code %s",
            job_id, ", ".join(result.withheld_required), outcome.state.value,
            outcome.bridge_exit_code(),
        )  # fmt: skip
    elif result.exit_code >= int(ExitCode.JOB_LOST) and result.exit_code < 128:
        log.error("%s: job %s at %s: %s", job_id, outcome.state.value, site_name, outcome.reason)
    return result


def _overall_timeout(
    explicit: str | None, pbs_job: mint_pbs.PbsContext | None, configured: float | None
) -> float | None:
    """--timeout, else what is left of the MInt job's walltime, else the bridge config's."""
    if explicit:
        try:
            return parse_duration(explicit)
        except ValueError as exc:
            raise ParameterInvalid(f"--timeout: {exc}", field="timeout") from exc
    if pbs_job is not None and pbs_job.remaining_walltime:
        return pbs_job.remaining_walltime
    return configured


def _arm_timeout(seconds: float) -> None:
    def expire(signum: int, frame: FrameType | None) -> None:
        signal.signal(signal.SIGALRM, signal.SIG_DFL)
        raise TimedOut(
            f"no result within the overall timeout of {seconds:g} s; the job was cancelled at "
            "the site (raise --timeout or the MInt job's walltime if it needs longer)"
        )

    signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
