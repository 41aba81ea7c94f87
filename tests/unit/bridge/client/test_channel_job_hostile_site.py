"""The bridge trusts a site no more than a site trusts the bridge: result names and bytes."""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path

import pytest

from bridge.client.channel_job import JobRun
from bridge.core.errors import ProtocolError, StagingError, TransferCorrupted
from bridge.core.job import JobRequest, new_job_id
from bridge.core.protocol import KIND_FILE, KIND_STDOUT, FrameWriter


class Recorder:
    def __init__(self) -> None:
        self.data = bytearray()

    def recv(self, size: int) -> bytes:
        raise AssertionError("not readable")

    def send_all(self, data: bytes | memoryview) -> None:
        self.data += bytes(data)


class ScriptedChannel:
    """Plays back what a (hostile) site would send; swallows what the bridge sends."""

    def __init__(self, script: bytes) -> None:
        self.script = io.BytesIO(script)

    def recv(self, size: int) -> bytes:
        return self.script.read(min(size, 4096))

    def send_all(self, data: bytes | memoryview) -> None:
        pass

    def close(self) -> None:
        pass


class ScriptedConnector:
    site_name = "hostile"

    def __init__(self, script: bytes) -> None:
        self.script = script

    def connect(self) -> ScriptedConnector:
        return self

    def open_channel(self, timeout: float | None = None) -> ScriptedChannel:
        return ScriptedChannel(self.script)

    def close(self) -> None:
        pass


def site_script(name: str, body: bytes, sha: str | None = None, size: int | None = None) -> bytes:
    rec = Recorder()
    out = FrameWriter(rec)
    out.write_json({"ready": True})
    out.write_json({"started": True})
    out.write_frame(KIND_STDOUT, b"log line\n")
    out.write_json({"exit": {"state": "completed", "exit_code": 0, "reason": "ok"}})
    declared = len(body) if size is None else size
    out.write_json({"manifest": [{"name": name, "size": declared, "mode": 0o644}], "skipped": []})
    out.write_json({"file": name, "size": declared, "mode": 0o644})
    out.write_frame(KIND_FILE, body)
    out.write_frame(KIND_FILE, b"")
    out.write_json({"sha256": sha or hashlib.sha256(body).hexdigest()})
    out.write_json({"done": True})
    return bytes(rec.data)


def run_against(script: bytes, out_dir: Path) -> int:
    request = JobRequest(new_job_id(), "x")
    job = JobRun(
        ScriptedConnector(script),  # type: ignore[arg-type]
        request,
        [],
        str(out_dir),
        io.BytesIO(),
        io.BytesIO(),
        reconnect_attempts=1,
    )
    return job.run().exit_code


def test_a_well_behaved_site_delivers(tmp_path: Path) -> None:
    assert run_against(site_script("sub/r.txt", b"result"), tmp_path) == 0
    assert (tmp_path / "sub" / "r.txt").read_bytes() == b"result"


@pytest.mark.parametrize("name", ["../escape.txt", "/tmp/abs.txt", "a/../../x", "./x", "a\x00b"])
def test_result_names_escaping_the_output_dir_are_refused(tmp_path: Path, name: str) -> None:
    out = tmp_path / "out"
    with pytest.raises(StagingError):
        run_against(site_script(name, b"evil"), out)
    assert not (tmp_path / "escape.txt").exists()
    assert not os.path.exists("/tmp/abs.txt") or b"evil" not in Path("/tmp/abs.txt").read_bytes()


def test_result_written_through_a_symlinked_dir_is_refused(tmp_path: Path) -> None:
    out, elsewhere = tmp_path / "out", tmp_path / "elsewhere"
    out.mkdir()
    elsewhere.mkdir()
    (out / "sub").symlink_to(elsewhere)
    with pytest.raises(StagingError, match="a symlink or a file is in the way"):
        run_against(site_script("sub/r.txt", b"evil"), out)
    assert list(elsewhere.iterdir()) == []


def test_corrupted_result_is_refused_and_not_kept(tmp_path: Path) -> None:
    with pytest.raises(TransferCorrupted, match="arrived corrupted"):
        run_against(site_script("r.txt", b"result", sha="0" * 64), tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_result_longer_than_declared_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ProtocolError):
        run_against(site_script("r.txt", b"result", size=3), tmp_path)
    assert list(tmp_path.iterdir()) == []
