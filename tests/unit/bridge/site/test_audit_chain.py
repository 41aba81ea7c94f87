"""The audit log's hash chain: lines, rotation across days, durability rules, refusals."""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import stat
import threading
from pathlib import Path

import pytest

from bridge.core.errors import AuditFailed, ExitCode
from bridge.site.audit_chain import GENESIS, AuditWriter, line_hash, log_files

DAY1 = datetime.datetime(2026, 12, 1, 23, 59, 59, 500000, tzinfo=datetime.UTC)
DAY2 = datetime.datetime(2026, 12, 2, 0, 0, 1, tzinfo=datetime.UTC)


def lines(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines()


def test_each_line_carries_the_sha256_of_the_one_before(tmp_path: Path) -> None:
    writer = AuditWriter(str(tmp_path / "audit"))
    for n in range(3):
        writer.append({"event": "refused", "job": None, "n": n}, DAY1)
    raw = lines(tmp_path / "audit" / "audit-2026-12-01.jsonl")
    entries = [json.loads(line) for line in raw]
    assert [e["seq"] for e in entries] == [1, 2, 3]
    assert entries[0]["prev"] == GENESIS
    assert entries[1]["prev"] == hashlib.sha256(raw[0]).hexdigest()
    assert entries[2]["prev"] == line_hash(raw[1] + b"\n")
    assert list(entries[0]) == ["ts", "seq", "event", "job", "n", "prev"]
    assert entries[0]["ts"] == "2026-12-01T23:59:59.500000Z"


def test_files_are_private_and_a_new_day_chains_to_the_last_line_of_the_day_before(
    tmp_path: Path,
) -> None:
    directory = tmp_path / "audit"
    writer = AuditWriter(str(directory))
    writer.append({"event": "refused", "job": None}, DAY1)
    writer.append({"event": "refused", "job": None}, DAY2)
    first, second = (Path(p) for p in log_files(str(directory)))
    assert (first.name, second.name) == ("audit-2026-12-01.jsonl", "audit-2026-12-02.jsonl")
    assert json.loads(second.read_bytes())["prev"] == line_hash(first.read_bytes())
    assert json.loads(second.read_bytes())["seq"] == 2
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    assert {stat.S_IMODE(p.stat().st_mode) for p in (first, second)} == {0o600}
    assert first.stat().st_uid == os.getuid()


def test_a_clock_set_back_appends_to_the_newest_file_not_an_older_one(tmp_path: Path) -> None:
    writer = AuditWriter(str(tmp_path))
    writer.append({"event": "refused", "job": None}, DAY2)
    writer.append({"event": "refused", "job": None}, DAY1)
    assert [Path(p).name for p in log_files(str(tmp_path))] == ["audit-2026-12-02.jsonl"]
    assert len(lines(tmp_path / "audit-2026-12-02.jsonl")) == 2


def test_concurrent_writers_keep_one_unbroken_chain(tmp_path: Path) -> None:
    writer = AuditWriter(str(tmp_path))

    def write(worker: int) -> None:
        for n in range(25):
            entry = {"event": "refused", "job": None, "w": worker, "n": n}
            AuditWriter(writer.directory).append(entry)

    threads = [threading.Thread(target=write, args=(w,)) for w in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    raw = b"".join(Path(p).read_bytes() for p in log_files(str(tmp_path))).splitlines()
    entries = [json.loads(line) for line in raw]
    assert [e["seq"] for e in entries] == list(range(1, 101))
    assert all(e["prev"] == line_hash(raw[i - 1]) for i, e in enumerate(entries) if i)


def test_an_incomplete_last_line_stops_the_writer(tmp_path: Path) -> None:
    writer = AuditWriter(str(tmp_path))
    writer.append({"event": "refused", "job": None}, DAY1)
    path = tmp_path / "audit-2026-12-01.jsonl"
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(AuditFailed, match="incomplete line") as caught:
        writer.append({"event": "refused", "job": None}, DAY1)
    assert caught.value.exit_code == ExitCode.AUDIT_FAILED
    assert caught.value.path == str(path)


def test_an_unusable_audit_dir_is_an_audit_failure_naming_no_path(tmp_path: Path) -> None:
    (tmp_path / "taken").write_text("a file where the dir should be\n")
    writer = AuditWriter(str(tmp_path / "taken"))
    with pytest.raises(AuditFailed) as caught:
        writer.append({"event": "refused", "job": None})
    assert "cannot be written" in caught.value.message
    assert str(tmp_path) not in caught.value.message  # the bridge sees no site path
    assert caught.value.path == str(tmp_path / "taken")


def test_a_last_line_longer_than_one_read_block_still_chains(tmp_path: Path) -> None:
    writer = AuditWriter(str(tmp_path))
    writer.append({"event": "job_received", "job": None, "inputs": ["i" * 50] * 400}, DAY1)
    writer.append({"event": "refused", "job": None}, DAY1)
    raw = lines(tmp_path / "audit-2026-12-01.jsonl")
    assert len(raw[0]) > 2 * 8192
    assert json.loads(raw[1])["prev"] == line_hash(raw[0]) and json.loads(raw[1])["seq"] == 2
