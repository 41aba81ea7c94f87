"""The audit events' fields, the SSH key fingerprint and the broker token id they name."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from bridge.core.errors import AuditFailed
from bridge.core.job import InputDecl, JobOutcome, JobRequest, JobState
from bridge.site import audit
from bridge.site.audit_chain import AuditWriter, log_files
from bridge.site.ssh_peer import fingerprint, key_fingerprint, ssh_peer

JOB = "0b6f8a52-3e0c-4c37-9a38-2f4e4f6f9c11"


def entries(directory: Path) -> list[dict[str, object]]:
    text = b"".join(Path(p).read_bytes() for p in log_files(str(directory)))
    return [json.loads(line) for line in text.splitlines()]


def test_a_jobs_events_carry_their_documented_fields(tmp_path: Path) -> None:
    peer = audit.Peer("ssh", "10.0.0.5:50022", key="SHA256:abc")
    job = audit.JobAudit(AuditWriter(str(tmp_path)), JOB, peer)
    request = JobRequest(JOB, "fatigue", {"cycles": 5}, (InputDecl("a.dat", 3, 0o644),))
    job.received(request, {"cycles": 5})
    job.input_received("a.dat", 3, "ab" * 32)
    job.program_started("4242", "local")
    job.program_ended(JobOutcome(JobState.FAILED, exit_code=3, reason="solver exited with code 3"))
    job.result_sent("out.txt", 7, "cd" * 32)
    job.result_withheld("Modeldata.inp", 9, "ef" * 32, "private file (hash index)")
    job.released("alice")
    job.rejected("bob", "not for export")
    got = entries(tmp_path)
    assert [e["event"] for e in got] == [
        "job_received", "input_received", "program_started", "program_ended", "result_sent",
        "result_withheld", "released", "rejected",
    ]  # fmt: skip
    assert {k: got[0][k] for k in ("via", "peer", "key", "command", "params", "inputs")} == {
        "via": "ssh", "peer": "10.0.0.5:50022", "key": "SHA256:abc", "command": "fatigue",
        "params": {"cycles": 5}, "inputs": [{"name": "a.dat", "size": 3}],
    }  # fmt: skip
    assert got[3]["exit_code"] == 3 and got[3]["state"] == "failed"
    assert {k: got[4][k] for k in ("name", "size", "sha256", "via", "to", "key")} == {
        "name": "out.txt", "size": 7, "sha256": "cd" * 32, "via": "ssh",
        "to": "10.0.0.5:50022", "key": "SHA256:abc",
    }  # fmt: skip
    assert got[5]["rule"] == "private file (hash index)"
    assert (got[6]["by"], got[7]["reason"]) == ("alice", "not for export")
    assert all(e["job"] == JOB for e in got)


def test_a_broker_peer_is_named_by_url_and_token_id_never_the_token(tmp_path: Path) -> None:
    token = "mbt_0123456789ab_" + "s" * 40
    peer = audit.Peer("broker", "https://broker.example:8443", token_id=audit.token_id(token))
    audit.JobAudit(AuditWriter(str(tmp_path)), JOB, peer).result_sent("r", 1, "00" * 32)
    text = Path(log_files(str(tmp_path))[0]).read_text()
    assert '"token_id":"0123456789ab"' in text and "s" * 40 not in text
    assert audit.token_id("not a token") is None


def test_a_refusal_is_recorded_and_a_failed_write_never_hides_it(tmp_path: Path) -> None:
    peer = audit.Peer("ssh", "127.0.0.1:4000")
    audit.refused(AuditWriter(str(tmp_path / "a")), peer, "cat /etc/passwd" + "x" * 500, "no")
    (refusal,) = entries(tmp_path / "a")
    assert refusal["attempted"] == ("cat /etc/passwd" + "x" * 500)[: audit.ATTEMPT_CHARS]
    (tmp_path / "file").write_text("")
    audit.refused(AuditWriter(str(tmp_path / "file")), peer, "sh", "no")  # no exception


def test_a_line_that_cannot_be_written_stops_the_step_with_a_fix(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    job = audit.JobAudit(AuditWriter(str(tmp_path / "file")), JOB, audit.Peer("local", "stdin"))
    with pytest.raises(AuditFailed, match=r"nothing more leaves the site.*audit_dir"):
        job.result_sent("r", 1, "00" * 32)


@pytest.mark.skipif(shutil.which("ssh-keygen") is None, reason="needs ssh-keygen")
def test_the_key_fingerprint_is_the_one_ssh_keygen_prints(tmp_path: Path) -> None:
    key = tmp_path / "k"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    listed = subprocess.run(
        ["ssh-keygen", "-l", "-f", str(key)], check=True, capture_output=True, text=True
    ).stdout.split()[1]
    kind, blob = key.with_suffix(".pub").read_text().split()[:2]
    info = tmp_path / "auth_info"
    info.write_text(f"publickey {kind} {blob}\n")
    assert fingerprint(blob) == listed
    assert key_fingerprint(str(info)) == listed
    peer = ssh_peer({"SSH_CONNECTION": "127.0.0.1 5000 127.0.0.1 22", "SSH_USER_AUTH": str(info)})
    assert peer == audit.Peer("ssh", "127.0.0.1:5000", key=listed)
    assert ssh_peer({}) == audit.Peer("local", "stdin")
    assert key_fingerprint(str(tmp_path / "missing")) is None


def test_a_reattached_job_records_its_end_and_results_once(tmp_path: Path) -> None:
    control = tmp_path / "work" / ".mint-bridge"
    control.mkdir(parents=True)
    peer = audit.Peer("local", "stdin")
    ended = JobOutcome(JobState.COMPLETED, exit_code=0, reason="")
    for _attempt in range(3):  # a fresh JobAudit each time, as a new connection makes one
        job = audit.JobAudit(AuditWriter(str(tmp_path / "a")), JOB, peer, str(control))
        job.program_ended(ended)
        job.result_sent("out.txt", 7, "cd" * 32)
        job.result_withheld("secret.inp", 9, None, "deny")
    # The same name with other bytes is a new fact, and recorded.
    job.result_sent("out.txt", 8, "ce" * 32)
    got = [(e["event"], e.get("size")) for e in entries(tmp_path / "a")]
    assert got == [
        ("program_ended", None), ("result_sent", 7), ("result_withheld", 9), ("result_sent", 8)
    ]  # fmt: skip


def test_without_a_control_dir_every_event_is_recorded(tmp_path: Path) -> None:
    job = audit.JobAudit(AuditWriter(str(tmp_path / "a")), JOB, audit.Peer("local", "stdin"))
    job.result_sent("out.txt", 7, "cd" * 32)
    job.result_sent("out.txt", 7, "cd" * 32)
    assert [e["event"] for e in entries(tmp_path / "a")] == ["result_sent"] * 2
