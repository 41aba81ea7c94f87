"""``mint-bridge demo``: the sample fatigue job, end to end, on this machine, both ways.

1. The ``local`` method: the site entry runs as a child process over pipes (the SSH protocol).
2. The pull path: an embedded broker on loopback (SQLite in a temporary dir, plain HTTP on
   127.0.0.1 only, asked for explicitly), a site agent in a child process, and the client.

Each run gets its own module dir with the sample inputs; the demo prints where the results
are. The site-private model in ``examples/kousoku/private`` never reaches a module dir.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import requests

from bridge.client.node_config import EXAMPLES_DIR, BrokerSite, default_config
from bridge.client.run import run_job_at
from bridge.core.errors import SiteUnreachable

SAMPLE = EXAMPLES_DIR / "kousoku"
INPUTS = ("yield_strength.dat", "tensile_strength.dat", "reduction_area.dat")
MINT_BRIDGE = [sys.executable, "-m", "bridge.cli"]


def say(message: str) -> None:
    print(f"mint-bridge demo: {message}", file=sys.stderr, flush=True)


def module_dir(parent: str, name: str) -> str:
    path = os.path.join(parent, name)
    os.makedirs(path, exist_ok=True)
    for item in INPUTS:
        shutil.copyfile(SAMPLE / "module_inputs" / item, os.path.join(path, item))
    return path


def run_in(path: str, site: object) -> int:
    """Run the sample command at ``site`` from the module dir ``path``; report the results."""
    previous = os.getcwd()
    os.chdir(path)
    try:
        code = run_job_at(
            site,  # type: ignore[arg-type]
            command="fatigue",
            inputs=list(INPUTS),
            params=["cycles=1000"],
            output_dir=".",
        ).exit_code
    finally:
        os.chdir(previous)
    say(f"exit code {code}; results in {path}:")
    for name in sorted(set(os.listdir(path)) - set(INPUTS)):
        print(f"  {os.path.join(path, name)}", file=sys.stderr)
    return code


def run_demo(output_dir: str | None, paths: tuple[str, ...] = ("local", "broker")) -> int:
    parent = output_dir or tempfile.mkdtemp(prefix="mint-bridge-demo-")
    codes = []
    if "local" in paths:
        say("1. the local method: the site entry as a child process, the SSH protocol over pipes")
        codes.append(run_in(module_dir(parent, "local"), default_config().site("local")))
    if "broker" in paths:
        say("2. the pull path: embedded broker on 127.0.0.1, site agent, client")
        with embedded_broker(Path(parent) / "broker-service") as site:
            codes.append(run_in(module_dir(parent, "broker"), site))
    return max(codes)


@contextmanager
def embedded_broker(root: Path) -> Iterator[BrokerSite]:
    """A broker and an agent for the sample site, as child processes, stopped on exit."""
    root.mkdir(parents=True, exist_ok=True)
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    broker_config = root / "broker.toml"
    broker_config.write_text(
        f'[server]\nhost = "127.0.0.1"\nport = {port}\ntls = false\nthreads = 32\n'
        f'access_log = ""\n\n[storage]\ndata_dir = "{root / "data"}"\n'
    )
    site_token = _token(broker_config, root / "agent.token", "--site", "local-demo")
    client_token = _token(broker_config, root / "client.token", "--client", "demo")
    site_config = _agent_site_config(root, url, site_token)
    broker = _start(["broker", "serve", "--config", str(broker_config)], root / "broker.log")
    agent = None
    try:
        _wait_ready(url)
        agent = _start(["agent", "--config", str(site_config)], root / "agent.log")
        yield BrokerSite(
            name="local-demo",
            url=url,
            token_file=str(client_token),
            broker_site="local-demo",
            allow_http=True,
        )
    finally:
        # The broker first, with SIGINT (gunicorn's quick shutdown): the agent's pending
        # long poll then ends at once and the agent stops without waiting it out.
        _stop(broker, signal.SIGINT)
        if agent is not None:
            _stop(agent, signal.SIGTERM)


def _token(config: Path, path: Path, *scope: str) -> Path:
    created = subprocess.run(
        [*MINT_BRIDGE, "broker", "token", "create", *scope, "--config", str(config)],
        capture_output=True, text=True, check=True, timeout=60,
    )  # fmt: skip
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(created.stdout.strip().splitlines()[-1] + "\n")
    return path


def _agent_site_config(root: Path, url: str, token: Path) -> Path:
    """The sample site config with an [agent] table pointing at the embedded broker."""
    text = (SAMPLE / "site.toml").read_text()
    text = text.replace('program = "solver.py"', f'program = "{SAMPLE / "solver.py"}"')
    text = text.replace("{config_dir}/private", f"{SAMPLE}/private")
    text = text.replace(
        'name = "local-demo"', f'name = "local-demo"\nlog_file = "{root / "site.log"}"'
    )
    text += (
        f'\n[agent]\nurl = "{url}"\nallow_http = true\ntoken_file = "{token}"\n'
        'agent_id = "demo-agent"\nmax_jobs = 2\n'
    )
    path = root / "site.toml"
    path.write_text(text)
    return path


def _start(args: list[str], log: Path) -> subprocess.Popen[bytes]:
    with open(log, "wb") as out:
        return subprocess.Popen([*MINT_BRIDGE, *args], stdout=out, stderr=out)


def _stop(proc: subprocess.Popen[bytes], how: signal.Signals) -> None:
    proc.send_signal(how)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _wait_ready(url: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if requests.get(f"{url}/api/v1/openapi.json", timeout=2).ok:
                return
        except requests.RequestException:
            pass
        time.sleep(0.1)
    raise SiteUnreachable(f"the embedded broker did not start on {url} within {timeout:g} s")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
