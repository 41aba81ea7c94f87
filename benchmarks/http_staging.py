"""Staging throughput of the pull path (client -> broker -> agent and back), against ``scp``.

Run: ``.venv/bin/python benchmarks/http_staging.py [--size-mib 1024] [--repeat 2]``.

Everything happens on this machine: a real broker (gunicorn, TLS from a throwaway CA, started
with ``tests.support.broker.start_broker``), one real agent process (local scheduler), the real
client (``mint-bridge run -v`` with a ``method = "broker"`` site), and for the comparison a
private OpenSSH sshd on 127.0.0.1 (``tests.support.sshd.start_sshd``) with an unrestricted key
for ``scp``. Nothing is sent anywhere else.

What is measured (MB = 10**6 bytes):

- in: ``mint-bridge run`` of a command whose program (``/bin/true``) ignores its one input and
  returns nothing. The bytes go client -> broker (PATCH, 64 MiB per request) and, once the job
  is submitted and claimed, broker -> agent (one GET into the work dir): store and forward,
  so the two legs add up.
- out: a command whose program hard-links a pre-made site file into the work dir (``ln``,
  ~0 cost), so the same bytes come back: agent -> broker (PATCH), then broker -> client (GET).
- Whole in/out: the big run's wall time minus the median wall time of the same operation with
  a 1-byte payload (process start, job dispatch, polling) gives the transfer time, and MB/s.
  This is what compares with ``scp`` (one pipe from disk to disk): both sides verify
  (SHA-256) and the broker writes each piece to disk and fsyncs it before it counts.
- Each leg on its own, from the broker's access log (the duration of each request, taken by
  gunicorn after the last body byte): client upload, agent download, agent upload, client
  download. The rest of the whole (SHA-256 before an upload: the client hashes its input
  before it creates the job, the agent its result before the upload; the broker's check of a
  multi-request upload, which it reads back from disk) is reported as ``other``.
- scp in / out of the same bytes against the same sshd, default cipher and aes128-gcm.
- Peak RSS of the client process, the broker's worker and the agent, sampled with psutil
  every 20 ms (each sample also reads the kernel's high-water mark, VmHWM).

The big files live in a temporary directory that is removed at the end, as are work dirs,
downloaded copies and the broker's data after each run. Prints one JSON object on stdout and
a one-line summary on stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import resource
import shutil
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))

from broker_bench import (
    MB,
    MIB,
    AgentProcess,
    PullSite,
    RssWatch,
    broker_worker,
    log_events,
    machine_info,
    make_pull_site,
    other_load,
    progress,
    start_agent,
)
from scp_baseline import clean_dir, enable_sftp, make_file, scp_argv, staging_commands

from tests.support.broker import BrokerProcess, start_broker
from tests.support.sshd import Sshd, keygen, start_sshd

SITE = "bench-staging"
TINY_RUNS = 3
TARGET_RSS_MIB = 100.0
GCM = "aes128-gcm@openssh.com"
# "HOST [time] "METHOD PATH HTTP/1.1" STATUS BYTES SECONDSs", the broker's access log format.
ACCESS = re.compile(
    r'"(?P<method>[A-Z]+) (?P<path>\S+) [^"]*" (?P<status>\d{3}) \S+ (?P<s>[\d.]+)s$'
)
LEGS = {
    "client_upload": ("PATCH", re.compile(r"^/api/v1/jobs/[^/]+/inputs/")),
    "agent_download": ("GET", re.compile(r"^/api/v1/agent/jobs/[^/]+/inputs/")),
    "agent_upload": ("PATCH", re.compile(r"^/api/v1/agent/jobs/[^/]+/results/")),
    "client_download": ("GET", re.compile(r"^/api/v1/jobs/[^/]+/results/")),
}
AGENT_EVENTS = {
    "claimed": r"(?P<job>[0-9a-f-]{36}): claimed \(lease epoch",
    "staged": r"(?P<job>[0-9a-f-]{36}): staged \d+ inputs",
    "ended": r"(?P<job>[0-9a-f-]{36}): ended: ",
    "completed": r"(?P<job>[0-9a-f-]{36}): completed at the broker",
}


# --- the environment ---------------------------------------------------------------------------


@dataclass
class Bench:
    root: Path
    broker: BrokerProcess
    site: PullSite
    agent: AgentProcess
    sshd: Sshd
    bridge_config: Path
    scp_key: Path
    client: Path  # client-side files (big.bin, tiny.bin)
    payload: Path  # site-side pre-made files the "source" command links
    out: Path
    scp_dest: Path
    timeout: float
    worker_pid: int = 0
    access_offset: int = 0


@contextlib.contextmanager
def bench_env(size: int, timeout: float) -> Iterator[Bench]:
    root = Path(tempfile.mkdtemp(prefix="mb-bench-http-"))
    broker: BrokerProcess | None = None
    agent: AgentProcess | None = None
    sshd: Sshd | None = None
    try:
        dirs = {name: root / name for name in ("client", "payload", "out", "scp-dest", "sshd")}
        for path in dirs.values():
            path.mkdir(mode=0o700)
        broker = start_broker(root / "broker")
        site = make_pull_site(broker, root / "site", SITE, staging_commands(dirs["payload"]))
        agent = start_agent(site)
        sshd = start_sshd(dirs["sshd"], site.config)  # its forced-command key is not used here
        enable_sftp(sshd)
        scp_key = root / "scp_ed25519"
        keygen(scp_key, "mint-bridge-bench-scp")
        sshd.authorize(f'from="127.0.0.1" {scp_key.with_suffix(".pub").read_text().strip()}')
        token = root / "client.token"
        token.write_text(broker.token("client", "bench-client") + "\n")
        token.chmod(0o600)
        bridge_config = root / "bridge.toml"
        bridge_config.write_text(
            f"""
[sites.{SITE}]
method = "broker"
url = "{broker.url}"
ca_bundle = "{broker.ca_bundle}"
token_file = "{token}"
poll_wait = 20
reconnect_attempts = 1
"""
        )
        for where in (dirs["client"], dirs["payload"]):
            make_file(where / "big.bin", size)
            make_file(where / "tiny.bin", 1)
        bench = Bench(
            root, broker, site, agent, sshd, bridge_config, scp_key, dirs["client"],
            dirs["payload"], dirs["out"], dirs["scp-dest"], timeout,
        )  # fmt: skip
        bench.worker_pid = broker_worker(broker)
        yield bench
    finally:
        if agent is not None:
            agent.stop()
        if broker is not None:
            broker.stop()
        if sshd is not None:
            sshd.stop()
        shutil.rmtree(root, ignore_errors=True)


# --- one timed operation ------------------------------------------------------------------------


@dataclass
class Run:
    seconds: float
    client_cpu_seconds: float
    client_peak_rss_mib: float = 0.0
    legs: dict[str, float] = field(default_factory=dict)  # seconds per leg (access log)
    requests: dict[str, dict[str, float]] = field(default_factory=dict)  # pieces of a leg
    agent: dict[str, float] = field(default_factory=dict)  # seconds between agent log events
    cpu: dict[str, float] = field(default_factory=dict)  # broker worker and agent CPU seconds


def cpu_seconds(pid: int) -> float:
    with contextlib.suppress(psutil.Error):
        times = psutil.Process(pid).cpu_times()
        return float(times.user + times.system)
    return 0.0


def timed(bench: Bench, argv: list[str], watch_client: bool) -> Run:
    """Wall time, the child's CPU time (rusage of waited children) and, for the bridge, peak
    RSS of the client, broker worker and agent; raises if it fails or runs too long."""
    os.sync()  # earlier runs' dirty pages are not flushed on this run's clock
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu_before = {"broker": cpu_seconds(bench.worker_pid), "agent": cpu_seconds(bench.agent.pid)}
    start = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    watch = RssWatch({"client": proc.pid}).start() if watch_client else None
    err = b""
    try:
        _, err = proc.communicate(timeout=bench.timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise RuntimeError(f"timed out after {bench.timeout} s: {argv}") from None
    finally:
        peaks = watch.stop() if watch is not None else {}
    elapsed = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise RuntimeError(f"exit {proc.returncode}: {argv}\n{err.decode()[-2000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    run = Run(elapsed, cpu, peaks.get("client", 0.0))
    run.cpu = {
        "broker": round(cpu_seconds(bench.worker_pid) - cpu_before["broker"], 2),
        "agent": round(cpu_seconds(bench.agent.pid) - cpu_before["agent"], 2),
    }
    return run


def bridge_argv(bench: Bench, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "bridge.cli", "run", "--config", str(bench.bridge_config),
        "--site", SITE, "-v", "-o", str(bench.out), *extra,
    ]  # fmt: skip


def remote(path: Path) -> str:
    return f"{os.environ.get('USER', 'root')}@127.0.0.1:{path}"


def clean(bench: Bench) -> None:
    for path in (bench.out, bench.site.work_base, bench.scp_dest):
        clean_dir(path)


def new_access_lines(bench: Bench) -> list[str]:
    with open(bench.broker.access_log, encoding="utf-8", errors="replace") as log:
        log.seek(bench.access_offset)
        text = log.read()
        bench.access_offset = log.tell()
    return text.splitlines()


def leg_requests(lines: list[str]) -> dict[str, list[float]]:
    """Per leg, the duration of each of its requests, in the order the broker answered them."""
    legs: dict[str, list[float]] = {leg: [] for leg in LEGS}
    for line in lines:
        hit = ACCESS.search(line)
        if hit is None:
            continue
        for leg, (method, path) in LEGS.items():
            if hit["method"] == method and path.match(hit["path"]) and hit["status"] < "300":
                legs[leg].append(float(hit["s"]))
    return legs


def bridge_op(bench: Bench, direction: str, which: str) -> Run:
    if direction == "in":
        argv = bridge_argv(bench, "--command", "sink", "-i", str(bench.client / f"{which}.bin"))
    else:
        argv = bridge_argv(bench, "--command", "source", "-p", f"which={which}")
    new_access_lines(bench)
    run = timed(bench, argv, watch_client=True)
    if direction == "out":
        expected = (bench.payload / f"{which}.bin").stat().st_size
        if (bench.out / "result.bin").stat().st_size != expected:
            raise RuntimeError("bridge out: the result has the wrong size")
    time.sleep(0.3)  # gunicorn writes the access line just after the answer's last byte
    requests = leg_requests(new_access_lines(bench))
    run.legs = {k: round(sum(v), 3) for k, v in requests.items()}
    # A multi-request upload is checked (SHA-256) when its last piece arrives: the broker
    # reads the whole file back from disk then, which shows as a longer last request.
    run.requests = {
        k: {"count": len(v), "median": round(statistics.median(v), 3), "last": round(v[-1], 3)}
        for k, v in requests.items()
        if len(v) > 1
    }
    events = log_events(bench.site.log, AGENT_EVENTS)
    job = max(events.values(), key=lambda e: e.get("claimed", 0.0))  # the newest job
    if "staged" in job:
        run.agent["claim_to_staged"] = round(job["staged"] - job["claimed"], 3)
    if "completed" in job and "ended" in job:
        run.agent["ended_to_completed"] = round(job["completed"] - job["ended"], 3)
    return run


def scp_op(bench: Bench, direction: str, which: str, cipher: str | None) -> Run:
    if direction == "in":
        argv = scp_argv(bench.sshd, bench.scp_key, str(bench.client / f"{which}.bin"),
                        remote(bench.scp_dest / f"{which}.bin"), cipher)  # fmt: skip
    else:
        argv = scp_argv(bench.sshd, bench.scp_key, remote(bench.payload / f"{which}.bin"),
                        str(bench.out / f"{which}.bin"), cipher)  # fmt: skip
    return timed(bench, argv, watch_client=False)


# --- the series -----------------------------------------------------------------------------------


@dataclass
class Series:
    big: list[Run] = field(default_factory=list)
    tiny: list[Run] = field(default_factory=list)

    def summary(self, size: int) -> dict[str, Any]:
        fixed = statistics.median(r.seconds for r in self.tiny)
        big = statistics.median(r.seconds for r in self.big)
        result: dict[str, Any] = {
            "mbps": round(size / MB / max(big - fixed, 1e-9), 1),
            "mbps_gross": round(size / MB / big, 1),
            "seconds": [round(r.seconds, 3) for r in self.big],
            "fixed_seconds": round(fixed, 3),
            "client_cpu_seconds": round(
                statistics.median(r.client_cpu_seconds for r in self.big), 2
            ),
        }
        if any(r.legs for r in self.big):
            legs = {k: statistics.median(r.legs[k] for r in self.big) for k in LEGS}
            result["legs_seconds"] = {k: round(v, 3) for k, v in legs.items() if v > 0}
            result["legs_mbps"] = {k: round(size / MB / v, 1) for k, v in legs.items() if v > 0}
            result["other_seconds"] = round(big - fixed - sum(legs.values()), 3)
            result["agent_log_seconds"] = {
                k: round(statistics.median(r.agent[k] for r in self.big), 3)
                for k in self.big[0].agent
            }
            result["server_cpu_seconds"] = {
                k: round(statistics.median(r.cpu[k] for r in self.big), 2)
                for k in ("broker", "agent")
            }
            result["client_peak_rss_mib"] = max(r.client_peak_rss_mib for r in self.big)
            result["upload_requests_seconds"] = self.big[-1].requests
        return result


def measure(bench: Bench, repeat: int) -> tuple[dict[str, Series], dict[str, float]]:
    ops: dict[str, Callable[[str], Run]] = {
        "bridge_in": lambda w: bridge_op(bench, "in", w),
        "bridge_out": lambda w: bridge_op(bench, "out", w),
        "scp_in": lambda w: scp_op(bench, "in", w, None),
        "scp_out": lambda w: scp_op(bench, "out", w, None),
        "scp_gcm_in": lambda w: scp_op(bench, "in", w, GCM),
        "scp_gcm_out": lambda w: scp_op(bench, "out", w, GCM),
    }
    series = {name: Series() for name in ops}
    # The broker worker and agent live through every run: their peaks cover the whole series.
    servers = RssWatch({"broker": bench.worker_pid, "agent": bench.agent.pid})
    servers.sample()
    baseline = {role: round(rss / MIB, 1) for role, rss in servers.last.items()}
    servers.start()
    try:
        for name, op in ops.items():  # the 1-byte runs also warm caches up
            for _ in range(TINY_RUNS):
                series[name].tiny.append(op("tiny"))
                clean(bench)
        for round_no in range(repeat):
            for name, op in ops.items():  # interleaved, so drifts hit every method alike
                run = op("big")
                clean(bench)
                series[name].big.append(run)
                progress(f"round {round_no + 1}/{repeat} {name}: {run.seconds:.2f} s {run.legs}")
    finally:
        peaks = servers.stop()
    peaks.update({f"{role}_at_start": mib for role, mib in baseline.items()})
    return series, peaks


def tls_cipher(broker: BrokerProcess) -> str:
    context = ssl.create_default_context(cafile=str(broker.ca_bundle))
    with socket.create_connection(("127.0.0.1", broker.port), 5) as raw, \
            context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:  # fmt: skip
        cipher = tls.cipher()
    return f"{cipher[1]} {cipher[0]}" if cipher else "unknown"


def report(size: int, repeat: int, series: dict[str, Series], servers: dict[str, float],
           machine: dict[str, Any]) -> dict[str, Any]:  # fmt: skip
    figures = {name: s.summary(size) for name, s in series.items()}
    peaks = {
        "client_in": figures["bridge_in"]["client_peak_rss_mib"],
        "client_out": figures["bridge_out"]["client_peak_rss_mib"],
        **servers,
    }
    ratio = {
        d: round(figures[f"bridge_{d}"]["mbps"] / figures[f"scp_{d}"]["mbps"], 3)
        for d in ("in", "out")
    }
    return {
        "benchmark": "http_staging",
        "size_bytes": size,
        "repeat": repeat,
        "mbps": {name: f["mbps"] for name, f in figures.items()},
        "legs_mbps": {
            "in": figures["bridge_in"].get("legs_mbps", {}),
            "out": figures["bridge_out"].get("legs_mbps", {}),
        },
        "ratio_bridge_over_scp": ratio,
        "peak_rss_mib": peaks,
        "targets_met": {
            "rss_client": max(peaks["client_in"], peaks["client_out"]) <= TARGET_RSS_MIB,
            "rss_broker": peaks["broker"] <= TARGET_RSS_MIB,
            "rss_agent": peaks["agent"] <= TARGET_RSS_MIB,
        },
        "details": figures,
        "machine": machine,
    }


def summary_line(result: dict[str, Any]) -> str:
    m, r, p = result["mbps"], result["ratio_bridge_over_scp"], result["peak_rss_mib"]
    legs_in, legs_out = result["legs_mbps"]["in"], result["legs_mbps"]["out"]
    return (
        f"http_staging: broker in {m['bridge_in']} / out {m['bridge_out']} MB/s (legs: up "
        f"{legs_in.get('client_upload')}, agent down {legs_in.get('agent_download')}, agent up "
        f"{legs_out.get('agent_upload')}, down {legs_out.get('client_download')}); scp in "
        f"{m['scp_in']} / out {m['scp_out']} MB/s; ratio in {r['in']} / out {r['out']}; peak RSS "
        f"client {max(p['client_in'], p['client_out'])} / broker {p['broker']} / agent "
        f"{p['agent']} MiB"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mib", type=int, default=1024, help="payload size (default 1024)")
    parser.add_argument("--repeat", type=int, default=2, help="big transfers per method")
    args = parser.parse_args()
    size = args.size_mib * MIB
    timeout = 60 + size / (5 * MB)  # generous: even a pathological 5 MB/s finishes within it
    machine = machine_info()
    machine["busy_other_processes_at_start"] = other_load()
    with bench_env(size, timeout) as bench:
        machine["tls_cipher"] = tls_cipher(bench.broker)
        series, servers = measure(bench, args.repeat)
    machine["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    result = report(size, args.repeat, series, servers, machine)
    print(json.dumps(result, indent=2))
    print(summary_line(result), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
