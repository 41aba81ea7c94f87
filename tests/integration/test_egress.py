"""The site's egress policy end to end, on every path: the site entry over pipes (``local``),
behind a real sshd (``ssh``), and through a real broker (gunicorn, TLS) to a real agent.

Each scenario runs a real ``mint-bridge run``; the site side runs without the capabilities
that let root read any file (``setpriv``), so a mode-000 result is unreadable as it is for a
site account. After each run, every file the bridge side received is checked: the private
model's bytes and its marker are in none of them.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from bridge.client.node_config import EXAMPLES_DIR
from bridge.site.audit_chain import log_files
from tests.support.broker import BrokerProcess
from tests.support.pull import Agent, ClientApi, bridge_config
from tests.support.site_toml import write_site_toml
from tests.support.sshd import Sshd, start_sshd_for_test

PROG = Path(__file__).parent / "programs" / "egress_prog.py"
MARKER = "CONFIDENTIAL-MODEL-MARKER"
# Root without the capabilities that bypass file permissions: a mode-000 file is unreadable.
NO_DAC = ["setpriv", "--bounding-set", "-dac_override,-dac_read_search"]
PATHS = ("local", "ssh", "broker")


@dataclass
class Via:
    """One way to the test site: the bridge config and site name to run jobs with."""

    name: str
    bridge_toml: Path
    site: str
    private_model: Path
    api: ClientApi | None = None
    last_job: str = ""

    def run(self, command: str, out: Path, *params: str) -> tuple[int, str, str]:
        job_id = str(uuid.uuid4())
        argv = [sys.executable, "-m", "bridge.cli", "run", "--config", str(self.bridge_toml),
                "--site", self.site, "--command", command, "--job-id", job_id, "-o", str(out)]
        for param in params:
            argv += ["-p", param]
        proc = subprocess.run(NO_DAC + argv, capture_output=True, text=True, timeout=120)
        self.last_job = job_id
        return proc.returncode, proc.stdout, proc.stderr

    def skipped(self) -> list[dict[str, Any]]:
        """The broker's record of what the site did not send (the broker path only)."""
        assert self.api is not None
        doc = self.api.final(self.last_job)
        return list(doc["skipped"])  # type: ignore[call-overload]


def commands(model: Path) -> dict[str, dict[str, Any]]:
    prog = str(PROG)
    return {
        "unreadable": {
            "program": prog, "args": ["unreadable", "{code}"],
            "params": {"code": {"type": "int", "default": 5}},
        },
        "hash": {
            "program": prog, "args": ["copy", model, "0"],
            "egress": {"deny_private": True, "required": ["model_copy.dat"]},
        },
        "marker": {
            "program": prog, "args": ["stamp", model],
            "egress": {"deny_markers": ["not in any file", MARKER]},
        },
        "sparse": {"program": prog, "args": ["sparse"]},
        "names": {
            "program": prog, "args": ["sizes"],
            "egress": {"allow": ["*.dat", "*.txt", "*.log"], "deny": ["*.log"],
                       "max_file_size": "2000B", "max_files": 2},
        },
        "jobsize": {
            "program": prog, "args": ["sizes"],
            "egress": {"max_job_size": 1030, "required": ["ok.txt"]},
        },
    }  # fmt: skip


def write_site(root: Path, name: str, agent: dict[str, Any] | None = None) -> Path:
    private = root / "private"
    private.mkdir(parents=True)
    model = private / "Modeldata.inp"
    shutil.copyfile(EXAMPLES_DIR / "kousoku" / "private" / "Modeldata.inp", model)
    (root / "work").mkdir()
    return write_site_toml(
        root / "site.toml",
        site={"name": name, "work_base": root / "work", "log_file": root / "site.log",
              "audit_dir": root / "audit"},
        agent=agent,
        egress={"private_dirs": [private], "private_index": root / "state" / "index.json"},
        commands=commands(model),
    )


@pytest.fixture(scope="module")
def pipes_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_site(tmp_path_factory.mktemp("egress-site"), "egress-site")


@pytest.fixture(scope="module")
def egress_sshd(pipes_site: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sshd]:
    python = " ".join([*NO_DAC, sys.executable])
    server = start_sshd_for_test(tmp_path_factory.mktemp("egress-sshd"), pipes_site, python=python)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def agent_site(
    broker: BrokerProcess, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Path]:
    root = tmp_path_factory.mktemp("egress-pull")
    token = root / "agent.token"
    token.write_text(broker.token("site", "egress-pull") + "\n")
    token.chmod(0o600)
    config = write_site(root / "site", "egress-pull", agent={
        "url": broker.url, "ca_bundle": broker.ca_bundle, "token_file": token,
        "agent_id": "egress-agent", "max_jobs": 2, "lease_renew": "3s",
    })  # fmt: skip
    log = root / "agent.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [*NO_DAC, sys.executable, "-m", "bridge.site.agent", str(config)],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True,
        )  # fmt: skip
    agent = Agent(proc, log)
    yield config
    assert agent.stop() == 0, agent.text()


@pytest.fixture(scope="module", params=PATHS)
def via(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Via:
    root = tmp_path_factory.mktemp(f"egress-bridge-{request.param}")
    toml = root / "bridge.toml"
    if request.param == "local":
        site = request.getfixturevalue("pipes_site")
        toml.write_text(f'[sites.egress]\nmethod = "local"\nsite_config = "{site}"\n')
        return Via("local", toml, "egress", site.parent / "private" / "Modeldata.inp")
    if request.param == "ssh":
        sshd: Sshd = request.getfixturevalue("egress_sshd")
        site = request.getfixturevalue("pipes_site")
        toml.write_text(
            f'[sites.egress]\nmethod = "ssh"\nhost = "site"\nssh_config = "{sshd.ssh_config}"\n'
            f'known_hosts = "{sshd.known_hosts}"\n'
        )
        return Via("ssh", toml, "egress", site.parent / "private" / "Modeldata.inp")
    broker: BrokerProcess = request.getfixturevalue("broker")
    site = request.getfixturevalue("agent_site")
    token = root / "client.token"
    token.write_text(broker.token("client", "egress-node") + "\n")
    token.chmod(0o600)
    bridge_config(toml, broker.url, broker.ca_bundle, token, ["egress-pull"])
    return Via(
        "broker", toml, "egress-pull", site.parent / "private" / "Modeldata.inp",
        ClientApi(broker, token),
    )


def received(out: Path) -> dict[str, bytes]:
    """Every file the bridge side wrote below ``out`` (partial files included)."""
    return {
        str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()
    }


def assert_private_never_arrived(via: Via, out: Path) -> None:
    model = via.private_model.read_bytes()
    digest = hashlib.sha256(model).hexdigest()
    for name, data in received(out).items():
        assert model not in data, name
        assert MARKER.encode() not in data, name
        assert hashlib.sha256(data).hexdigest() != digest, name


def withheld_lines(via: Via) -> dict[str, dict[str, Any]]:
    """The last job's ``result_withheld`` audit lines at its site, by name."""
    audit_dir = via.private_model.parent.parent / "audit"
    job_id = via.last_job
    text = b"".join(Path(p).read_bytes() for p in log_files(str(audit_dir)))
    lines = [json.loads(line) for line in text.splitlines()]
    found = [e for e in lines if e["job"] == job_id and e["event"] == "result_withheld"]
    assert len({e["name"] for e in found}) == len(found), found  # each one once
    return {e["name"]: e for e in found}


def reasons(via: Via, err: str, names: list[str]) -> dict[str, str]:
    """What the bridge side says about each name not returned: from ``run``'s own lines, and
    on the broker path also from the broker's record (which must say the same)."""
    said = {}
    for name in names:
        lines = [line for line in err.splitlines() if f": {name} not returned: " in line]
        assert len(lines) == 1, (name, err)
        said[name] = lines[0].split(" not returned: ", 1)[1]
    if via.api is not None:
        record = {s["name"]: s["reason"] for s in via.skipped()}
        for name in names:
            assert record[name] == said[name]
    return said


# --- per-file errors: the rest and the exit code still arrive -----------------------------


def test_an_unreadable_result_does_not_stop_the_others_nor_the_exit_code(
    via: Via, tmp_path: Path
) -> None:
    code, _, err = via.run("unreadable", tmp_path / "out", "code=5")
    assert code == 5, err  # the solver's own code, not 73
    files = received(tmp_path / "out")
    assert files == {"ok.txt": b"a result that may leave\n"}, err
    said = reasons(via, err, ["locked.dat", "pipe"])
    assert "permission denied" in said["locked.dat"].lower(), said
    assert said["pipe"] == "not a regular file (device, socket or pipe)"


# --- content rules: the private model never leaves, whatever its name ---------------------


def test_a_copy_of_the_private_model_is_withheld_by_the_hash_rule(
    via: Via, tmp_path: Path
) -> None:
    code, _, err = via.run("hash", tmp_path / "out")
    assert code == 89, err  # model_copy.dat is a required result of this command
    assert received(tmp_path / "out") == {"ok.txt": b"a result that may leave\n"}
    said = reasons(via, err, ["model_copy.dat"])
    assert said["model_copy.dat"] == (
        "withheld by the site's egress policy (deny_private): "
        "it is byte-identical to a private file of the site"
    )
    assert "required result(s) model_copy.dat" in err
    assert "exit code 0" in err  # the solver's own code is still told
    assert "Modeldata" not in err and str(via.private_model.parent) not in err
    assert_private_never_arrived(via, tmp_path / "out")
    if via.api is not None:
        entry = next(s for s in via.skipped() if s["name"] == "model_copy.dat")
        assert entry["rule"] == "deny_private" and entry["required"] is True
    line = withheld_lines(via)["model_copy.dat"]
    model = via.private_model.read_bytes()
    assert (line["rule"], line["size"], line["sha256"]) == (
        "deny_private", len(model), hashlib.sha256(model).hexdigest(),
    )  # fmt: skip


def test_files_holding_the_marker_are_withheld_by_the_marker_rule(
    via: Via, tmp_path: Path
) -> None:
    code, _, err = via.run("marker", tmp_path / "out")
    assert code == 0, err  # nothing withheld was required
    assert received(tmp_path / "out") == {"ok.txt": b"a result that may leave\n"}
    said = reasons(via, err, ["model_copy.dat", "stamped.txt"])
    for reason in said.values():
        assert reason == "withheld by the site's egress policy (deny_markers): it contains " \
            "deny_markers[1]"
    assert MARKER not in err
    assert_private_never_arrived(via, tmp_path / "out")


# --- limits from lstat, before any byte is read --------------------------------------------


def test_a_sparse_1_tib_file_is_withheld_by_the_default_cap_unread(
    via: Via, tmp_path: Path
) -> None:
    code, _, err = via.run("sparse", tmp_path / "out")
    assert code == 0, err
    assert received(tmp_path / "out") == {"ok.txt": b"a result that may leave\n"}
    said = reasons(via, err, ["huge.bin"])
    assert said["huge.bin"] == (
        "withheld by the site's egress policy (max_file_size): "
        f"{1 << 40} bytes, over the limit of {64 << 30} (not read)"
    )
    line = withheld_lines(via)["huge.bin"]  # its size from lstat, nothing read
    assert (line["rule"], line["size"], line["sha256"]) == ("max_file_size", 1 << 40, None)


def test_name_rules_and_size_and_count_limits(via: Via, tmp_path: Path) -> None:
    code, _, err = via.run("names", tmp_path / "out")
    assert code == 0, err
    assert received(tmp_path / "out") == {"mid.dat": b"x" * 1000, "ok.txt": b"a result that " \
        b"may leave\n"}  # fmt: skip
    said = reasons(via, err, ["big.dat", "keep.csv", "notes.log", "small.dat"])
    prefix = "withheld by the site's egress policy "
    assert said == {
        "big.dat": prefix + "(max_file_size): 5000 bytes, over the limit of 2000 (not read)",
        "keep.csv": prefix + "(allow): the name matches no allowed pattern",
        "notes.log": prefix + "(deny): the name matches '*.log'",
        "small.dat": prefix + "(max_files): the job already returns 2 files",
    }


def test_the_job_size_limit_and_a_required_result(via: Via, tmp_path: Path) -> None:
    code, _, err = via.run("jobsize", tmp_path / "out")
    # In name order: big.dat would pass 1030 bytes; keep.csv 9, mid.dat 1000, notes.log 10
    # fit (1019); ok.txt (24, required) would not; small.dat (10) still fits (1029).
    assert code == 89, err
    assert sorted(received(tmp_path / "out")) == ["keep.csv", "mid.dat", "notes.log", "small.dat"]
    said = reasons(via, err, ["big.dat", "ok.txt"])
    assert said["ok.txt"] == (
        "withheld by the site's egress policy (max_job_size): "
        "24 bytes would take the job past 1030 bytes"
    )
    assert "required result(s) ok.txt" in err


def test_the_private_index_is_kept_with_size_mtime_and_inode(via: Via, tmp_path: Path) -> None:
    assert via.run("hash", tmp_path / "out")[0] == 89
    index_path = via.private_model.parent.parent / "state" / "index.json"
    files = json.loads(index_path.read_text())["files"]
    entry = files[str(via.private_model)]
    st = via.private_model.stat()
    assert (entry["size"], entry["mtime_ns"], entry["inode"]) == (
        st.st_size, st.st_mtime_ns, st.st_ino,
    )  # fmt: skip
    assert entry["sha256"] == hashlib.sha256(via.private_model.read_bytes()).hexdigest()
    assert oct(index_path.stat().st_mode & 0o777) == "0o600"
