"""The bridge trusts a site no more than a site trusts the bridge: result names and bytes."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest

from bridge.client.channel_job import JobRun
from bridge.core.errors import ProtocolError, StagingError, TransferCorrupted
from bridge.core.job import JobRequest, new_job_id
from tests.support.frames import ScriptedChannel, site_script


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
