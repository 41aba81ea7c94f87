"""``mint-bridge agent``: a pull site's agent. It opens no port; it asks the broker for work.

The agent long-polls ``POST /api/v1/agent/claim`` while it has a free slot (``max_jobs`` in
the ``[agent]`` table) and runs each claimed job in its own thread (``PulledJob``), exactly the
way ``site serve-ssh`` would: same validation, work dir, scheduler adapters and result rules.
Each claim lists the commands the site runs (``SiteConfig.offered_commands``), so the broker
leaves the jobs an original poller of the site runs, and this agent does not, to that poller.

Re-attach after a restart: every job's work dir records the broker job, the lease epoch and the
claimed document (``broker.json``). At start-up the agent renews each unfinished job's lease
with that epoch; where the broker still accepts it, the job is followed again at once (never
started a second time: its work dir holds the native id). Otherwise the broker hands the job
back through a claim with ``reattach: true`` once the old lease has lapsed.

SIGTERM or SIGINT: the agent ends its claim's long poll first (its connection closes, so the
broker offers the next job to another agent), hands a job whose claim answered as the stop
began back to the broker at once (``release``), and then hands its running jobs back instead
of waiting for them. Jobs run on in their scheduler (the local scheduler's supervisor is
detached; batch jobs belong to the batch system); their leases lapse and the restarted agent,
with the same ``agent_id``, re-attaches to them and delivers their results. A job not started
yet is queued again by the broker when its lease lapses. The agent exits 0.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
from types import FrameType
from typing import Any

from bridge.core import defaults
from bridge.core.errors import (
    AuthenticationFailed,
    BridgeError,
    ConfigError,
    Conflict,
    JobUnknown,
    ProtocolError,
)
from bridge.core.job import check_job_id
from bridge.core.log_format import TEXT, formatter
from bridge.core.workdir_files import BROKER_COMPLETED_FILE, BROKER_FILE
from bridge.site.agent_api import AgentApi, Claimed, Lease
from bridge.site.agent_metrics import AgentMetrics, TextfileWriter
from bridge.site.config import AgentConfig, SiteConfig, load_site_config
from bridge.site.pulled_job import PulledJob, drop_local_job
from bridge.site.workdir import WorkDir
from schedulers.local import start_fork_server

log = logging.getLogger(__name__)

# How long a stopping agent waits for its job threads to reach a point where they can let go.
STOP_GRACE_SECONDS = 10.0


class _Interrupted(Exception):
    """Raised by the signal handler to end a claim's long poll at once."""


class Agent:
    def __init__(self, site: SiteConfig, agent: AgentConfig, config_path: str = "") -> None:
        self.site = site
        self.agent = agent
        self.config_path = config_path  # re-read on SIGHUP
        self.reload = threading.Event()
        self.stopping = threading.Event()
        self.changed = threading.Event()  # a job thread ended: a slot may be free
        self.active: dict[str, PulledJob] = {}
        self._in_claim = False
        # Sent with every claim: the broker then leaves the site's jobs that an original poller
        # runs and this agent does not queued for that poller.
        self.commands = site.offered_commands()
        self.metrics = AgentMetrics(site.name, agent.agent_id, site.commands)
        self.metrics.track_running(self._running)
        self.textfile: TextfileWriter | None = None

    def _running(self) -> int:
        # list(): a copy taken at once, as a scrape runs in the metrics server's thread.
        return sum(job.thread.is_alive() for job in list(self.active.values()))

    def start_metrics(self) -> None:
        """The endpoint and the textfile, as configured; a port in use stops the agent here."""
        if self.agent.metrics_listen is not None:
            host, port = self.agent.metrics_listen
            try:
                self.metrics.serve(host, port)
            except OSError as exc:
                raise ConfigError(
                    f"{self.agent.where}: metrics_listen: cannot listen on {host}:{port} "
                    f"({exc.strerror}); choose a free port or remove the key",
                    field="metrics_listen",
                ) from exc
        if self.agent.metrics_textfile is not None:
            self.textfile = TextfileWriter(self.metrics, self.agent.metrics_textfile, self.stopping)
            self.textfile.start()

    # --- main loop ---------------------------------------------------------------------------

    def serve(self) -> int:
        api = AgentApi(self.agent)  # reads the token: a bad token file stops us here
        log.info(
            "agent %s of site %s: up to %d jobs, broker %s",
            self.agent.agent_id, self.site.name, self.agent.max_jobs, self.agent.url,
        )  # fmt: skip
        try:
            self.reattach_local(api)
            backoff = defaults.HTTP_INITIAL_WAIT
            while not self.stopping.is_set():
                self._reap()
                if self.reload.is_set():
                    api = self._reload(api)
                if len(self.active) >= self.agent.max_jobs:
                    self.changed.wait(1.0)  # set when a job thread ends
                    self.changed.clear()
                    continue
                try:
                    claimed = self._claim(api)
                except _Interrupted:
                    if self.reload.is_set() and not self.stopping.is_set():
                        continue  # SIGHUP ended the poll: re-read, then poll again
                    break
                except AuthenticationFailed as exc:
                    self.metrics.broker_error(exc)
                    log.error("the broker refused this agent's token: %s", exc)
                    return int(exc.exit_code)
                except BridgeError as exc:
                    self.metrics.broker_error(exc)
                    log.warning("claim failed: %s; trying again in %.0f s", exc, backoff)
                    self.stopping.wait(backoff)
                    backoff = min(backoff * 2, defaults.HTTP_MAX_WAIT)
                    continue
                backoff = defaults.HTTP_INITIAL_WAIT
                if claimed is not None and self.stopping.is_set():
                    self.hand_back(api, claimed)  # the claim answered as the stop began
                elif claimed is not None:
                    self.start(claimed)
        finally:
            api.close()
            self._stop()
        return 0

    def stop(self) -> None:
        self.stopping.set()

    def _claim(self, api: AgentApi) -> Claimed | None:
        self._in_claim = True
        try:
            if self.stopping.is_set():
                raise _Interrupted
            began = time.monotonic()
            claimed = api.claim(self.agent.poll_wait, self.commands)
            self.metrics.last_poll.set_to_current_time()
            if claimed is not None:
                self.metrics.claim_wait.observe(time.monotonic() - began)
            return claimed
        finally:
            self._in_claim = False

    def on_signal(self, signum: int, frame: FrameType | None) -> None:
        log.info("agent: %s received; handing jobs back", signal.Signals(signum).name)
        self.stopping.set()
        if self._in_claim:
            # End the long poll now: its connection closes, so the broker gives the next job
            # to another agent instead of to this one (and it would hold the exit up too).
            raise _Interrupted

    def on_reload(self, signum: int, frame: FrameType | None) -> None:
        log.info("agent: SIGHUP received; re-reading %s", self.config_path)
        self.reload.set()
        if self._in_claim:
            raise _Interrupted  # the new config applies from the next poll on

    def _reload(self, api: AgentApi) -> AgentApi:
        """The config read again. Running jobs keep the config they started with (each
        PulledJob holds its own), so none is dropped; a broken file keeps the old one."""
        self.reload.clear()
        try:
            site = load_site_config(self.config_path)
            if site.agent is None:
                raise ConfigError(f"{self.config_path}: the [agent] table is gone", field="agent")
            new_api = AgentApi(site.agent)  # reads the token file: a bad one keeps the old
        except BridgeError as exc:
            log.error("agent: SIGHUP: %s; still running with the previous config", exc)
            return api
        api.close()
        self.site, self.agent = site, site.agent
        self.commands = site.offered_commands()
        log.info(
            "agent: SIGHUP: config re-read: %d commands, up to %d jobs, broker %s; %d running "
            "jobs go on", len(site.commands), site.agent.max_jobs, site.agent.url,
            len(self.active),
        )  # fmt: skip
        return new_api

    def hand_back(self, api: AgentApi, claimed: Claimed) -> None:
        """A job claimed while stopping goes back to the broker at once, not at lease end."""
        job_id = claimed.lease.job_id
        try:
            api.release(claimed.lease)
        except BridgeError as exc:
            log.warning("%s: claimed while stopping, could not hand it back (%s); the broker "
                        "queues it again when its lease lapses", job_id, exc)  # fmt: skip
            return
        log.info("%s: claimed while stopping; handed back to the broker", job_id)

    # --- job threads ---------------------------------------------------------------------------

    def start(self, claimed: Claimed) -> None:
        job_id = claimed.lease.job_id
        previous = self.active.get(job_id)
        if previous is not None:
            # The broker gave it to us again under a new epoch: the old worker's lease is stale.
            previous.lost.set()
        how = "re-attaching to" if claimed.reattach else "claimed"
        log.info("%s: %s (lease epoch %d)", job_id, how, claimed.lease.epoch)
        job = PulledJob(
            self.site,
            self.agent,
            claimed,
            self.stopping,
            after=previous.thread if previous is not None else None,
            on_exit=self.changed.set,
            metrics=self.metrics,
        )
        self.active[job_id] = job
        job.thread.start()

    def _reap(self) -> None:
        for job_id, job in list(self.active.items()):
            if not job.thread.is_alive():
                del self.active[job_id]

    def _stop(self) -> None:
        self.stopping.set()
        deadline = time.monotonic() + STOP_GRACE_SECONDS
        for job in list(self.active.values()):
            job.thread.join(max(0.0, deadline - time.monotonic()))
            if job.thread.is_alive():
                log.warning("%s: still busy with the broker; leaving it to the lease", job.job_id)
        if self.textfile is not None:
            self.textfile.finish()
        log.info("agent %s stopped", self.agent.agent_id)

    # --- re-attach at start-up ---------------------------------------------------------------

    def reattach_local(self, api: AgentApi) -> None:
        """Follow again every unfinished job of ours whose lease the broker still honours."""
        for wd, record in self._unfinished():
            lease = Lease(wd.job_id, int(record["epoch"]), 0.0)
            try:
                api.renew(lease)
            except JobUnknown:
                drop_local_job(self.site, wd, "the broker no longer has the job")
                continue
            except Conflict as exc:
                if exc.code == "invalid_state":  # final: e.g. cancelled while we were away
                    drop_local_job(self.site, wd, f"the broker ended the job ({exc.message})")
                else:  # stale epoch: the broker hands it back through a claim, if it is ours
                    log.info("%s: not re-attached now: %s", wd.job_id, exc)
                continue
            except BridgeError as exc:
                log.warning("%s: could not re-attach now: %s", wd.job_id, exc)
                continue
            self.start(Claimed(record["doc"], lease, reattach=True))

    def _unfinished(self) -> list[tuple[WorkDir, dict[str, Any]]]:
        found: list[tuple[WorkDir, dict[str, Any]]] = []
        try:
            entries = list(os.scandir(self.site.work_base))
        except FileNotFoundError:
            return found
        for entry in entries:
            try:
                wd = WorkDir(self.site.work_base, check_job_id(entry.name))
                record = wd.read_json(BROKER_FILE)
            except (ProtocolError, OSError, ValueError):
                continue
            if (
                isinstance(record, dict)
                and record.get("broker") == self.agent.url
                and record.get("agent_id") == self.agent.agent_id
                and isinstance(record.get("epoch"), int)
                and isinstance(record.get("doc"), dict)
                and not os.path.exists(wd.control_file(BROKER_COMPLETED_FILE))
            ):
                found.append((wd, record))
        return found


def _setup_logging(site: SiteConfig, log_format: str) -> None:
    """The site log (as for serve-ssh) and stderr, which a service manager keeps; stderr's
    lines are text or JSON (``bridge.core.log_format``)."""
    from bridge.site.ssh_entry import setup_site_logging

    setup_site_logging(site)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter(log_format, "%(asctime)s %(levelname)s %(message)s"))
    logging.getLogger().addHandler(handler)


def run_agent(config_path: str, *, configure_logging: bool = True, log_format: str = TEXT) -> int:
    """Run the agent of the site config at ``config_path`` until SIGTERM/SIGINT; exit code."""
    try:
        site = load_site_config(config_path)
        if site.agent is None:
            raise ConfigError(
                f"{config_path}: has no [agent] table; add one with the broker's url and "
                "token_file to run an agent for this site",
                field="agent",
            )
        if not site.offered_commands():
            raise ConfigError(
                f"{config_path}: this site offers no command, so its agent could take no job; "
                "define a [commands.NAME] table or set [site] allow_probe = true",
                field="commands",
            )
        if configure_logging:
            _setup_logging(site, log_format)
        # Before any thread exists: local jobs are then forked, not started as new interpreters.
        start_fork_server()
        agent = Agent(site, site.agent, config_path)
        agent.start_metrics()
        previous = {
            sig: signal.signal(sig, agent.on_signal) for sig in (signal.SIGTERM, signal.SIGINT)
        }
        previous[signal.SIGHUP] = signal.signal(signal.SIGHUP, agent.on_reload)
        try:
            return agent.serve()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
    except BridgeError as exc:
        log.error("agent: %s", exc)
        sys.stderr.write(f"mint-bridge agent: error: {exc}\n")
        return int(exc.exit_code)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.stderr.write("usage: python -m bridge.site.agent SITE_CONFIG\n")
        sys.exit(64)
    sys.exit(run_agent(sys.argv[1]))
