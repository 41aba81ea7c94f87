"""The site's audit log with real processes: the site entry over pipes and behind a real sshd,
and a real agent pulling from a real broker (gunicorn, TLS).

A job's lines must match what the bridge actually received (names, sizes, SHA-256); refusals
of the forced command are recorded; ``site audit verify`` and ``site audit show`` work on the
real files; and an audit dir that is full or read-only (a real tmpfs) stops the job before any
result leaves unrecorded.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bridge.core.defaults import PROTOCOL_REQUEST
from bridge.core.errors import ExitCode
from bridge.core.protocol import KIND_JSON, PROTOCOL_VERSION, FrameReader, FrameWriter
from bridge.site.audit_chain import log_files
from tests.integration.conftest import SiteEnv, run_bridge
from tests.support.broker import BrokerProcess
from tests.support.frames import LoopbackChannel
from tests.support.pull import (
    bridge_config as pull_bridge_config,
)
from tests.support.pull import (
    make_site,
    run_job,
    start_agent,
)
from tests.support.services import unavailable
from tests.support.site_toml import write_site_toml
from tests.support.sites import TESTPROG
from tests.support.sshd import Sshd

PROGRAMS = Path(__file__).parent / "programs"


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def entries(audit_dir: Path, job: str | None = None) -> list[dict[str, Any]]:
    text = b"".join(Path(p).read_bytes() for p in log_files(str(audit_dir)))
    found = [json.loads(line) for line in text.splitlines()]
    return [e for e in found if job is None or e["job"] == job]


def received_files(out: Path) -> dict[str, tuple[int, str]]:
    """Every file the bridge wrote into ``out``: relative name -> (size, SHA-256)."""
    found = {}
    for path in out.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            found[path.relative_to(out).as_posix()] = (len(data), sha(data))
    return found


def sent_lines(lines: list[dict[str, Any]]) -> dict[str, tuple[int, str]]:
    return {e["name"]: (e["size"], e["sha256"]) for e in lines if e["event"] == "result_sent"}


def audit_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bridge.cli", "site", "audit", *args],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def key_fingerprint(key: Path) -> str:
    listed = subprocess.run(["ssh-keygen", "-l", "-f", str(key)], check=True,
                            capture_output=True, text=True)  # fmt: skip
    return listed.stdout.split()[1]


def run_checksum_job(bridge_config: Path, site: str, cwd: Path) -> tuple[str, dict[str, bytes]]:
    payloads = {"a.dat": b"alpha\n", "big.bin": os.urandom(2 * 1024 * 1024 + 5)}
    for name, data in payloads.items():
        (cwd / name).write_bytes(data)
    job_id = str(uuid.uuid4())
    args = ["--site", site, "--command", "checksum", "--job-id", job_id]
    for name in payloads:
        args += ["-i", name]
    proc = run_bridge(bridge_config, *args, "-o", "out", cwd=cwd)
    assert proc.returncode == 0, proc.stderr.decode()
    return job_id, payloads


def check_job_lines(lines: list[dict[str, Any]], payloads: dict[str, bytes], out: Path) -> None:
    events = [e["event"] for e in lines]
    assert events[:1] == ["job_received"] and events.count("job_received") == 1
    assert events[1:3] == ["input_received"] * 2
    assert events[3:5] == ["program_started", "program_ended"]
    assert set(events[5:]) == {"result_sent"}
    received = lines[0]
    assert received["command"] == "checksum"
    assert received["inputs"] == [{"name": n, "size": len(d)} for n, d in payloads.items()]
    assert {e["name"]: (e["size"], e["sha256"]) for e in lines[1:3]} == {
        n: (len(d), sha(d)) for n, d in payloads.items()
    }
    assert lines[4]["exit_code"] == 0 and lines[4]["state"] == "completed"
    got = received_files(out)
    assert got and sent_lines(lines) == got  # every file that arrived, and nothing else


# --- the SSH path ----------------------------------------------------------------------------


def test_ssh_job_lines_match_the_files_received_and_name_the_key(
    bridge_config: Path, site_env: SiteEnv, sshd: Sshd, tmp_path: Path
) -> None:
    job_id, payloads = run_checksum_job(bridge_config, "site", tmp_path)
    lines = entries(site_env.root / "audit", job_id)
    check_job_lines(lines, payloads, tmp_path / "out")
    whom = {k: lines[0][k] for k in ("via", "key")}
    assert whom == {"via": "ssh", "key": key_fingerprint(sshd.client_key)}
    assert lines[0]["peer"].startswith("127.0.0.1:")
    assert {(e["to"], e["key"]) for e in lines if e["event"] == "result_sent"} == {
        (lines[0]["peer"], whom["key"])
    }


def test_site_entry_over_pipes_records_the_same_lines(
    bridge_config: Path, site_env: SiteEnv, tmp_path: Path
) -> None:
    job_id, payloads = run_checksum_job(bridge_config, "local", tmp_path)
    lines = entries(site_env.root / "audit", job_id)
    check_job_lines(lines, payloads, tmp_path / "out")
    assert (lines[0]["via"], lines[0]["peer"], lines[0]["key"]) == ("local", "stdin", None)


def attach_frames(job_id: str) -> bytes:
    """What a re-attaching bridge sends: the attach request, then its ack of the results."""
    channel = LoopbackChannel()
    writer = FrameWriter(channel)
    writer.write_json({"op": "attach", "protocol": PROTOCOL_VERSION, "job_id": job_id,
                       "offsets": {}})  # fmt: skip
    writer.write_json({"op": "ack"})
    return bytes(channel.buffer)


def test_a_reattached_job_does_not_record_its_end_and_results_twice(
    bridge_config: Path, site_env: SiteEnv, sshd: Sshd, tmp_path: Path
) -> None:
    job_id, payloads = run_checksum_job(bridge_config, "site", tmp_path)
    before = entries(site_env.root / "audit", job_id)
    # The bridge comes back for the ended job (as after a dropped connection) and gets its
    # results again, over the real sshd.
    again = subprocess.run(sshd.ssh_argv(f"{PROTOCOL_REQUEST} 1"), input=attach_frames(job_id),
                           capture_output=True, timeout=60)  # fmt: skip
    assert again.returncode == 0, again.stderr.decode()
    reader = FrameReader(LoopbackChannel(again.stdout))
    files = []
    while (kind_payload := reader.read_frame())[0] != KIND_JSON or b'"done"' not in (
        kind_payload[1]
    ):
        if kind_payload[0] == KIND_JSON and b'"file"' in kind_payload[1]:
            files.append(json.loads(kind_payload[1])["file"])
    assert sorted(files) == sorted(sent_lines(before))  # the results did go again
    after = entries(site_env.root / "audit", job_id)
    assert after == before  # and not one line more: end and results recorded once
    check_job_lines(after, payloads, tmp_path / "out")


def test_forced_command_refusals_are_recorded(sshd: Sshd, site_env: SiteEnv) -> None:
    marker = f"/etc/passwd-{uuid.uuid4()}"
    shell = subprocess.run(sshd.ssh_argv(f"cat {marker}"), capture_output=True, timeout=30)
    assert shell.returncode == 77
    frame = subprocess.run(sshd.ssh_argv(f"{PROTOCOL_REQUEST} 1"), input=b"\xff" * 64,
                           capture_output=True, timeout=30)  # fmt: skip
    assert frame.returncode != 0
    refusals = [e for e in entries(site_env.root / "audit") if e["event"] == "refused"]
    fingerprint = key_fingerprint(sshd.client_key)
    mine = [e for e in refusals if e["attempted"] == f"cat {marker}"]
    assert len(mine) == 1 and (mine[0]["via"], mine[0]["key"]) == ("ssh", fingerprint)
    assert "refused command" in mine[0]["reason"]
    bad = refusals[refusals.index(mine[0]) + 1 :]
    assert any("could not be read" in e["attempted"] and e["key"] == fingerprint for e in bad)


# --- verify and show on the real files -------------------------------------------------------


def test_verify_and_show_on_a_real_log(
    bridge_config: Path, site_env: SiteEnv, tmp_path: Path
) -> None:
    job_id, _ = run_checksum_job(bridge_config, "local", tmp_path)
    shown = audit_cli("show", "--config", str(site_env.site_config), "--job", job_id,
                      "--format", "json")  # fmt: skip
    assert shown.returncode == 0, shown.stderr
    listed = json.loads(shown.stdout)
    assert {e["name"]: (e["size"], e["sha256"]) for e in listed} == received_files(tmp_path / "out")
    table = audit_cli("show", "--config", str(site_env.site_config), "--job", job_id)
    assert table.returncode == 0
    rows = table.stdout.splitlines()
    assert rows[0].split()[:3] == ["TIME", "(UTC)", "JOB"]
    for entry in listed:
        assert any(entry["name"] in r and entry["sha256"] in r and job_id in r for r in rows[1:])
    ok = audit_cli("verify", "--config", str(site_env.site_config))
    assert ok.returncode == 0 and ok.stdout.startswith("audit log OK"), ok.stdout
    empty = audit_cli("verify", "--dir", str(tmp_path / "none"))
    assert empty.returncode == 1 and empty.stdout.startswith("no audit log in"), empty.stdout

    copy = tmp_path / "copy"
    for case in ("edited", "deleted", "truncated"):
        shutil.rmtree(copy, ignore_errors=True)
        shutil.copytree(site_env.root / "audit", copy)
        newest = Path(log_files(str(copy))[-1])
        raw = newest.read_bytes().splitlines(keepends=True)
        assert len(raw) >= 3
        if case == "edited":
            raw[-3] = raw[-3].replace(b'"seq":', b'"seq": ')
        elif case == "deleted":
            del raw[-2]
        else:
            raw[-1] = raw[-1][:-20]
        newest.write_bytes(b"".join(raw))
        broken = audit_cli("verify", "--dir", str(copy))
        assert broken.returncode == 1, broken.stdout
        line = len(raw) - 2 if case == "edited" else len(raw)
        assert f"BROKEN at {newest} line {line}: {case}:" in broken.stdout


# --- a full or read-only audit dir stops the job ---------------------------------------------


@contextlib.contextmanager
def tmpfs(path: Path, options: str) -> Iterator[Path]:
    path.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)],
                          capture_output=True, text=True)  # fmt: skip
    if done.returncode != 0:
        unavailable(f"cannot mount a tmpfs for the audit dir: {done.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", str(path)], check=False)


def fill(directory: Path) -> None:
    with open(directory / "filler", "wb", buffering=0) as filler, contextlib.suppress(OSError):
        while True:
            filler.write(b"\0" * 4096)


def local_site(root: Path, audit_dir: Path) -> Path:
    """A site entry on pipes (the local method) whose audit dir is ``audit_dir``."""
    (root / "work").mkdir()
    site = write_site_toml(
        root / "site.toml",
        site={"name": "audited", "work_base": root / "work", "log_file": root / "site.log",
              "audit_dir": audit_dir},
        commands={
            "checksum": {"program": TESTPROG, "args": ["checksum"]},
            "fill": {"program": PROGRAMS / "fill_audit.py", "args": [audit_dir, "{count}"],
                     "params": {"count": {"type": "int", "default": 40}}},
        },
    )  # fmt: skip
    bridge = root / "bridge.toml"
    bridge.write_text(f'[sites.audited]\nmethod = "local"\nsite_config = "{site}"\n')
    return bridge


def test_a_full_audit_disk_refuses_the_job_before_it_starts(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "audit", "size=64k,mode=0700") as audit_dir:
        bridge = local_site(tmp_path, audit_dir)
        fill(audit_dir)
        (tmp_path / "a.dat").write_bytes(b"alpha\n")
        job_id = str(uuid.uuid4())
        proc = run_bridge(bridge, "--site", "audited", "--command", "checksum", "--job-id",
                          job_id, "-i", "a.dat", "-o", "out", cwd=tmp_path)  # fmt: skip
        assert proc.returncode == ExitCode.AUDIT_FAILED, proc.stderr.decode()
        assert b"audit log cannot be written (No space left on device)" in proc.stderr
        assert b"nothing more leaves the site" in proc.stderr
        assert str(audit_dir).encode() not in proc.stderr  # no site path reaches the bridge
        assert not (tmp_path / "work" / job_id).exists()  # nothing was staged or started
        out = tmp_path / "out"
        assert not out.exists() or received_files(out) == {}
        assert log_files(str(audit_dir)) == []


def test_a_read_only_audit_dir_refuses_the_job(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "audit", "size=64k,mode=0700,ro") as audit_dir:
        bridge = local_site(tmp_path, audit_dir)
        job_id = str(uuid.uuid4())
        proc = run_bridge(bridge, "--site", "audited", "--command", "checksum", "--job-id",
                          job_id, "-o", "out", cwd=tmp_path)  # fmt: skip
        assert proc.returncode == ExitCode.AUDIT_FAILED, proc.stderr.decode()
        assert b"audit log cannot be written (Read-only file system)" in proc.stderr
        assert not (tmp_path / "work" / job_id).exists()


def test_a_disk_that_fills_during_the_job_sends_no_unrecorded_result(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "audit", "size=64k,mode=0700") as audit_dir:
        bridge = local_site(tmp_path, audit_dir)
        job_id = str(uuid.uuid4())
        proc = run_bridge(bridge, "--site", "audited", "--command", "fill", "--job-id", job_id,
                          "-o", "out", cwd=tmp_path)  # fmt: skip
        assert proc.returncode == ExitCode.AUDIT_FAILED, proc.stderr.decode()
        assert b"audit log cannot be written (No space left on device)" in proc.stderr
        lines = entries(audit_dir, job_id)
        out = tmp_path / "out"
        got = received_files(out) if out.exists() else {}
        sent = sent_lines(lines)
        # Whatever arrived has its line; the results after the disk filled never left.
        assert all(sent.get(name) == facts for name, facts in got.items())
        assert len(sent) < 40 and len(got) <= len(sent)
        # The chain on the full disk is still whole: no half line was left behind.
        (audit_dir / "filler").unlink()
        ok = audit_cli("verify", "--dir", str(audit_dir))
        assert ok.returncode == 0, ok.stdout


# --- the pull path: a real agent and broker --------------------------------------------------


def pull_site(broker: BrokerProcess, root: Path, name: str, audit_dir: Path) -> Path:
    site = make_site(broker, root, name)
    return write_site_toml(
        root / "agent.toml",
        site={"name": name, "work_base": site.work_base, "log_file": root / "site.log",
              "audit_dir": audit_dir},
        agent={"url": broker.url, "ca_bundle": broker.ca_bundle, "token_file": site.token_file,
               "agent_id": f"{name}-agent", "lease_renew": "3s"},
        commands={"checksum": {"program": TESTPROG, "args": ["checksum"]}},
    )  # fmt: skip


def pull_bridge(broker: BrokerProcess, root: Path, name: str) -> Path:
    token = root / "client.token"
    token.write_text(broker.token("client", "node01") + "\n")
    token.chmod(0o600)
    return pull_bridge_config(root / "bridge.toml", broker.url, broker.ca_bundle, token, [name])


def test_pull_job_lines_match_the_files_received_and_name_the_token(
    broker: BrokerProcess, tmp_path: Path
) -> None:
    audit_dir = tmp_path / "audit"
    config = pull_site(broker, tmp_path / "site", "audit-pull", audit_dir)
    bridge = pull_bridge(broker, tmp_path, "audit-pull")
    agent = start_agent(config)
    try:
        module = tmp_path / "module"
        module.mkdir()
        payloads = {"a.dat": b"alpha\n", "big.bin": os.urandom(2 * 1024 * 1024 + 5)}
        for name, data in payloads.items():
            (module / name).write_bytes(data)
        job_id = str(uuid.uuid4())
        code, _, err = run_job(bridge, "--site", "audit-pull", "--command", "checksum",
                               "--job-id", job_id, "-i", "a.dat", "-i", "big.bin", "-o", "out",
                               cwd=module)  # fmt: skip
        assert code == 0, err
        refused_id = str(uuid.uuid4())
        code, _, err = run_job(bridge, "--site", "audit-pull", "--command", "rm", "--job-id",
                               refused_id, cwd=module)  # fmt: skip
        assert code == ExitCode.COMMAND_NOT_ALLOWED, err
    finally:
        assert agent.stop() == 0, agent.text()
    (refusal,) = entries(audit_dir, refused_id)
    assert (refusal["event"], refusal["attempted"], refusal["via"]) == (
        "refused", "command 'rm'", "broker"
    )
    assert "has no command 'rm'" in refusal["reason"]
    lines = entries(audit_dir, job_id)
    check_job_lines(lines, payloads, module / "out")
    token = (tmp_path / "site" / "agent.token").read_text().strip()
    token_id = token.split("_")[1]
    assert {k: lines[0][k] for k in ("via", "peer", "token_id")} == {
        "via": "broker", "peer": broker.url, "token_id": token_id
    }
    assert token not in "".join(Path(p).read_text() for p in log_files(str(audit_dir)))
    assert {e["to"] for e in lines if e["event"] == "result_sent"} == {broker.url}


def test_pull_job_with_a_full_audit_disk_is_rejected_and_sends_nothing(
    broker: BrokerProcess, tmp_path: Path
) -> None:
    with tmpfs(tmp_path / "audit", "size=64k,mode=0700") as audit_dir:
        config = pull_site(broker, tmp_path / "site", "audit-full", audit_dir)
        bridge = pull_bridge(broker, tmp_path, "audit-full")
        fill(audit_dir)
        agent = start_agent(config)
        try:
            module = tmp_path / "module"
            module.mkdir()
            (module / "a.dat").write_bytes(b"alpha\n")
            code, _, err = run_job(bridge, "--site", "audit-full", "--command", "checksum",
                                   "-i", "a.dat", "-o", "out", cwd=module)  # fmt: skip
        finally:
            assert agent.stop() == 0, agent.text()
        assert code == ExitCode.AUDIT_FAILED, err
        assert "audit log cannot be written (No space left on device)" in err
        out = module / "out"
        assert not out.exists() or received_files(out) == {}
        assert list((tmp_path / "site" / "work").iterdir()) == []  # nothing was staged
