"""broker_transfer on both of its paths: the bridge (inputs up, results down) and the agent
(inputs down, results up), each against a scripted broker on loopback.

Every check of an answer is tested on both paths, so neither side can lose one: a wrong ETag,
a range from the wrong offset or of another size, a whole answer of another size, bytes that
do not match the SHA-256, an upload answer without progress. A refused file never appears
under its real name, and no partial file is left behind.
"""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from bridge.client.broker_job import BrokerJobRun
from bridge.client.node_config import BrokerSite
from bridge.client.request import LocalInput
from bridge.core import defaults
from bridge.core.broker_session import BrokerSession
from bridge.core.errors import (
    Conflict,
    InputMissing,
    ProtocolError,
    SiteUnreachable,
    TransferCorrupted,
)
from bridge.core.job import JobRequest
from bridge.core.streams import VerifiedFile
from bridge.site.agent_api import AgentApi, Lease
from bridge.site.config import AgentConfig
from tests.support.scripted_http import (
    Reply,
    Scripted,
    SleepRecorder,
    serving,
    session_for,
    write_token,
)

JOB = str(uuid.UUID(int=0x1234, version=4))
DATA = bytes(range(256)) * 40  # 10240 bytes
SHA = hashlib.sha256(DATA).hexdigest()
OTHER_SHA = hashlib.sha256(b"another file").hexdigest()
SIZE = len(DATA)


@dataclass
class Side:
    """One side's way of moving a file, through its own public class."""

    name: str
    url: str
    tmp_path: Path
    session: BrokerSession
    sleep: SleepRecorder

    @property
    def download_path(self) -> str:
        if self.name == "client":
            return f"/api/v1/jobs/{JOB}/results/r.dat"
        return f"/api/v1/agent/jobs/{JOB}/inputs/r.dat"

    @property
    def upload_path(self) -> str:
        if self.name == "client":
            return f"/api/v1/jobs/{JOB}/inputs/u.dat"
        return f"/api/v1/agent/jobs/{JOB}/results/u.dat"

    @property
    def into(self) -> Path:
        """Where the downloaded file appears (as r.dat) and nothing else may."""
        return self.tmp_path / "into"

    def download(self, size: int = SIZE, sha256: str = SHA) -> None:
        if self.name == "client":
            doc = {"results": [{"name": "r.dat", "size": size, "sha256": sha256, "mode": 0o644}]}
            assert self._client()._download_results(doc) == ["r.dat"]
            return
        self.into.mkdir(exist_ok=True)
        dir_fd = os.open(self.into, os.O_RDONLY | os.O_DIRECTORY)
        try:
            with VerifiedFile(dir_fd, "r.dat", size, sha256, 0o644, "input r.dat") as target:
                self._agent().download_input(Lease(JOB, 3, 30.0), "r.dat", target)
        finally:
            os.close(dir_fd)

    def upload(self, data: bytes = DATA) -> None:
        source = self.tmp_path / "u.dat"
        source.write_bytes(data)
        if self.name == "client":
            item = LocalInput("u.dat", str(source), len(data), 0o644)
            self._client([item])._upload_inputs()
            return
        with open(source, "rb") as handle:
            sha256 = hashlib.sha256(data).hexdigest()
            self._agent().upload_result(Lease(JOB, 3, 30.0), "u.dat", handle, len(data), sha256)

    def _client(self, inputs: list[LocalInput] | None = None) -> BrokerJobRun:
        site = BrokerSite("s", self.url, str(self.tmp_path / "token"), allow_http=True)
        return BrokerJobRun(
            site,
            JobRequest(JOB, "solve"),
            inputs or [],
            str(self.into),
            None,  # type: ignore[arg-type]
            None,  # type: ignore[arg-type]
            session=self.session,
        )

    def _agent(self) -> AgentApi:
        token = write_token(self.tmp_path / "token", 0o600)
        api = AgentApi(AgentConfig(self.url, str(token), allow_http=True))
        api.session.close()
        api.session = self.session  # the same scripted server, with recorded sleeps
        return api

    def check_headers(self, headers: dict[str, str]) -> None:
        """What this side adds to every request about a file."""
        if self.name == "agent":
            assert headers["Lease-Epoch"] == "3"
        else:
            assert "Lease-Epoch" not in headers

    def nothing_kept(self) -> bool:
        return not self.into.exists() or os.listdir(self.into) == []


@pytest.fixture
def script(monkeypatch: pytest.MonkeyPatch) -> Scripted:
    # Small reads: a body cut after a multiple of this keeps every byte that arrived (the
    # read that meets the cut raises and returns nothing, as with a real cut and big chunks).
    monkeypatch.setattr(defaults, "DOWNLOAD_CHUNK", 1000)
    return Scripted()


@pytest.fixture(params=["client", "agent"])
def side(request: pytest.FixtureRequest, script: Scripted, tmp_path: Path) -> Iterator[Side]:
    with serving(script) as url:
        session, sleep = session_for(url, tmp_path)
        yield Side(request.param, url, tmp_path, session, sleep)
        session.close()


def whole(body: bytes = DATA, etag: str | None = SHA, **kwargs: object) -> Reply:
    headers = {"ETag": f'"{etag}"'} if etag else {}
    return Reply(200, body, headers, **kwargs)  # type: ignore[arg-type]


def part(start: int, total: int = SIZE, body: bytes | None = None, etag: str = SHA) -> Reply:
    body = DATA[start:] if body is None else body
    content_range = f"bytes {start}-{start + len(body) - 1}/{total}"
    return Reply(206, body, {"ETag": f'"{etag}"', "Content-Range": content_range})


# --- downloads -----------------------------------------------------------------------------


def test_a_cut_download_resumes_from_where_it_stopped(script: Scripted, side: Side) -> None:
    appeared_early: list[bool] = []
    replies = [whole(cut_after=3000), part(3000)]

    def responder(seen: object) -> Reply:
        appeared_early.append((side.into / "r.dat").exists())
        return replies.pop(0)

    script.responder = responder  # type: ignore[assignment]
    side.download()
    assert (side.into / "r.dat").read_bytes() == DATA
    assert os.listdir(side.into) == ["r.dat"]  # no partial file left
    assert appeared_early == [False, False]
    first, second = script.seen
    assert first.path == second.path == side.download_path
    assert "Range" not in first.headers
    assert second.headers["Range"] == "bytes=3000-"
    side.check_headers(first.headers)
    side.check_headers(second.headers)
    assert len(side.sleep.delays) == 1  # one retry under the session's policy


def test_a_server_that_ignores_range_is_skipped_ahead(script: Scripted, side: Side) -> None:
    script.replies = [whole(cut_after=5000), whole()]
    side.download()
    assert (side.into / "r.dat").read_bytes() == DATA


def test_a_weak_or_unquoted_etag_of_the_same_sha256_is_accepted(
    script: Scripted, side: Side
) -> None:
    script.replies = [Reply(200, DATA, {"ETag": f'W/"{SHA.upper()}"'})]
    side.download()
    assert (side.into / "r.dat").read_bytes() == DATA


def test_a_wrong_etag_is_refused(script: Scripted, side: Side) -> None:
    script.replies = [whole(etag=OTHER_SHA)]
    with pytest.raises(TransferCorrupted, match=r"r\.dat at the broker is not the declared one"):
        side.download()
    assert side.nothing_kept()
    assert len(script.seen) == 1  # not retried: another file will not become ours


def test_a_wrong_etag_on_resume_is_refused(script: Scripted, side: Side) -> None:
    script.replies = [whole(cut_after=4000), part(4000, etag=OTHER_SHA)]
    with pytest.raises(TransferCorrupted, match="ETag"):
        side.download()
    assert side.nothing_kept()


@pytest.mark.parametrize("start", [0, 3999, 4001])
def test_a_range_from_the_wrong_offset_is_refused(script: Scripted, side: Side, start: int) -> None:
    script.replies = [whole(cut_after=4000), part(start)]
    with pytest.raises(ProtocolError, match="wrong offset") as caught:
        side.download()
    assert not isinstance(caught.value, TransferCorrupted | Conflict)
    assert side.nothing_kept()
    assert len(script.seen) == 2


@pytest.mark.parametrize(
    "content_range", ["", "bytes */10240", "bytes 4000-/10240", "items 4000-10239/10240"]
)
def test_a_partial_answer_without_a_proper_content_range_is_refused(
    script: Scripted, side: Side, content_range: str
) -> None:
    reply = part(4000)
    reply.headers["Content-Range"] = content_range
    script.replies = [whole(cut_after=4000), reply]
    with pytest.raises(ProtocolError):
        side.download()
    assert side.nothing_kept()


@pytest.mark.parametrize("total", [SIZE - 1, SIZE + 1])
def test_a_range_of_another_total_size_is_refused(script: Scripted, side: Side, total: int) -> None:
    script.replies = [whole(cut_after=4000), part(4000, total=total, body=DATA[4000:total])]
    with pytest.raises(TransferCorrupted, match=f"has {total} bytes, not the declared {SIZE}"):
        side.download()
    assert side.nothing_kept()


def test_a_range_that_ends_past_the_file_is_refused(script: Scripted, side: Side) -> None:
    reply = part(4000)
    reply.headers["Content-Range"] = f"bytes 4000-{SIZE}/{SIZE}"
    script.replies = [whole(cut_after=4000), reply]
    with pytest.raises(ProtocolError, match="Content-Range"):
        side.download()
    assert side.nothing_kept()


@pytest.mark.parametrize("body", [DATA + b"x", DATA[:-1]])
def test_a_whole_answer_of_another_size_is_refused(
    script: Scripted, side: Side, body: bytes
) -> None:
    script.replies = [whole(body)]
    with pytest.raises(TransferCorrupted, match=f"has {len(body)} bytes, not the declared"):
        side.download()
    assert side.nothing_kept()
    assert len(script.seen) == 1


def test_bytes_that_do_not_match_the_sha256_are_refused(script: Scripted, side: Side) -> None:
    corrupted = bytearray(DATA)
    corrupted[5000] ^= 0xFF
    script.replies = [whole(bytes(corrupted), etag=None)]  # nothing in the headers gives it away
    with pytest.raises(TransferCorrupted, match="arrived corrupted"):
        side.download()
    assert side.nothing_kept()


def test_a_resumed_whole_answer_of_another_size_is_refused(script: Scripted, side: Side) -> None:
    script.replies = [whole(cut_after=4000), Reply(200, DATA + b"tail", {}, length=SIZE + 4)]
    with pytest.raises(TransferCorrupted):
        side.download()
    assert side.nothing_kept()


@pytest.mark.parametrize("status", [204, 416, 302])
def test_other_statuses_are_refused(script: Scripted, side: Side, status: int) -> None:
    script.replies = [Reply(status, b"", {"Location": "/elsewhere"})]
    with pytest.raises(ProtocolError):
        side.download()
    assert side.nothing_kept()


def test_a_download_cut_every_time_gives_up_after_the_session_attempts(
    script: Scripted, side: Side
) -> None:
    script.responder = lambda seen: whole(cut_after=0)  # type: ignore[assignment,arg-type]
    with pytest.raises(SiteUnreachable):
        side.download()
    assert len(script.seen) == side.session.attempts
    assert side.nothing_kept()


def test_an_empty_file(script: Scripted, side: Side) -> None:
    empty = hashlib.sha256(b"").hexdigest()
    script.replies = [whole(b"", etag=empty)]
    side.download(0, empty)
    assert (side.into / "r.dat").read_bytes() == b""


# --- uploads -------------------------------------------------------------------------------


def head(offset: int, side: Side, size: int = SIZE, sha256: str = SHA) -> Reply:
    headers = {"Upload-Offset": str(offset), "Upload-Length": str(size)}
    if side.name == "agent":
        headers["Upload-SHA256"] = sha256
    return Reply(200, b"", headers)


def took(offset: int) -> Reply:
    return Reply(204, b"", {"Upload-Offset": str(offset)})


def patches(script: Scripted) -> list[tuple[str, bytes]]:
    return [(s.headers["Upload-Offset"], s.body) for s in script.seen if s.method == "PATCH"]


def test_an_upload_sends_the_rest_from_the_offset_the_broker_holds(
    script: Scripted, side: Side
) -> None:
    script.replies = [head(6000, side), took(SIZE)]
    side.upload()
    assert [s.method for s in script.seen] == ["HEAD", "PATCH"]
    assert {s.path for s in script.seen} == {side.upload_path}
    assert patches(script) == [("6000", DATA[6000:])]
    patch = script.seen[1]
    assert patch.headers["Content-Type"] == "application/offset+octet-stream"
    for seen in script.seen:
        side.check_headers(seen.headers)
    if side.name == "agent":  # a result declares itself with every chunk
        assert (patch.headers["Upload-Length"], patch.headers["Upload-SHA256"]) == (
            str(SIZE),
            SHA,
        )


def test_an_upload_goes_in_chunks(
    script: Scripted, side: Side, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(defaults, "UPLOAD_CHUNK", 4096)
    script.replies = [head(0, side), took(4096), took(8192), took(SIZE)]
    side.upload()
    assert patches(script) == [
        ("0", DATA[:4096]),
        ("4096", DATA[4096:8192]),
        ("8192", DATA[8192:]),
    ]


def test_an_offset_mismatch_continues_from_the_brokers_offset(script: Scripted, side: Side) -> None:
    script.replies = [
        head(0, side),
        Reply.error(409, "offset_mismatch", "holds 7000", **{"Upload-Offset": "7000"}),
        took(SIZE),
    ]
    side.upload()
    assert patches(script) == [("0", DATA), ("7000", DATA[7000:])]


def test_an_offset_mismatch_without_an_offset_asks_again(script: Scripted, side: Side) -> None:
    script.replies = [
        head(0, side),
        Reply.error(409, "offset_mismatch", "moved"),
        head(9000, side),
        took(SIZE),
    ]
    side.upload()
    assert [s.method for s in script.seen] == ["HEAD", "PATCH", "HEAD", "PATCH"]
    assert patches(script)[-1] == ("9000", DATA[9000:])


def test_a_cut_upload_asks_for_the_offset_again(script: Scripted, side: Side) -> None:
    script.replies = [
        head(0, side),
        Reply.error(503, "unavailable", "restarting"),
        head(2048, side),
        took(SIZE),
    ]
    side.upload()
    assert patches(script) == [("0", DATA), ("2048", DATA[2048:])]
    assert len(side.sleep.delays) == 1


@pytest.mark.parametrize("answered", [0, 5, SIZE + 1])
def test_an_upload_answer_without_progress_or_beyond_the_chunk_is_refused(
    script: Scripted, side: Side, answered: int
) -> None:
    script.replies = [head(5, side), took(answered)]
    with pytest.raises(ProtocolError, match=f"answered offset {answered}"):
        side.upload()
    assert len(script.seen) == 2  # refused at once: no loop, no retry


@pytest.mark.parametrize("answer", ["", "-1", "x", "1.5"])
def test_an_upload_answer_with_an_invalid_offset_is_refused(
    script: Scripted, side: Side, answer: str
) -> None:
    script.replies = [head(0, side), Reply(204, b"", {"Upload-Offset": answer})]
    with pytest.raises(ProtocolError, match="invalid Upload-Offset"):
        side.upload()


def test_a_broker_holding_more_than_the_file_is_refused(script: Scripted, side: Side) -> None:
    script.replies = [head(SIZE + 1, side)]
    with pytest.raises(ProtocolError, match=f"holds {SIZE + 1} bytes"):
        side.upload()
    assert patches(script) == []


def test_a_file_the_broker_holds_entirely_is_not_sent_again(script: Scripted, side: Side) -> None:
    script.replies = [head(SIZE, side)]
    side.upload()
    assert patches(script) == []


def test_client_an_input_discarded_for_its_checksum_is_reported_as_changed(
    script: Scripted, tmp_path: Path
) -> None:
    with serving(script) as url:
        session, _ = session_for(url, tmp_path)
        side = Side("client", url, tmp_path, session, SleepRecorder())
        script.replies = [
            Reply(200, b"", {"Upload-Offset": "0"}),
            Reply.error(400, "checksum_mismatch", "sha differs", **{"Upload-Offset": "0"}),
        ]
        with pytest.raises(InputMissing, match="changed while it was being sent"):
            side.upload()


def test_agent_a_result_held_under_another_declaration_starts_at_0(
    script: Scripted, tmp_path: Path
) -> None:
    with serving(script) as url:
        session, _ = session_for(url, tmp_path)
        side = Side("agent", url, tmp_path, session, SleepRecorder())
        script.replies = [head(5000, side, sha256=OTHER_SHA), took(SIZE)]
        side.upload()
        script.seen.clear()
        script.replies = [head(5000, side, size=SIZE + 1), took(SIZE)]
        side.upload()
        script.seen.clear()
        script.replies = [Reply.error(404, "not_found", "no result yet"), took(SIZE)]
        side.upload()
    assert patches(script) == [("0", DATA)]


def test_agent_an_older_declaration_is_replaced_once(script: Scripted, tmp_path: Path) -> None:
    with serving(script) as url:
        session, _ = session_for(url, tmp_path)
        side = Side("agent", url, tmp_path, session, SleepRecorder())
        script.replies = [
            head(3000, side),
            Reply.error(409, "conflict", "declared otherwise"),
            took(SIZE),
        ]
        side.upload()
        assert patches(script) == [("3000", DATA[3000:]), ("0", DATA)]
        script.seen.clear()
        script.replies = [
            head(3000, side),
            Reply.error(409, "conflict", "declared otherwise"),
            Reply.error(409, "conflict", "still declared otherwise"),
        ]
        with pytest.raises(Conflict, match="still declared otherwise"):
            side.upload()


def test_client_a_conflict_is_not_a_new_declaration(script: Scripted, tmp_path: Path) -> None:
    with serving(script) as url:
        session, _ = session_for(url, tmp_path)
        side = Side("client", url, tmp_path, session, SleepRecorder())
        script.replies = [head(3000, side), Reply.error(409, "conflict", "job submitted")]
        with pytest.raises(Conflict, match="job submitted"):
            side.upload()
    assert len(patches(script)) == 1


def test_agent_an_empty_result_is_not_uploaded(script: Scripted, tmp_path: Path) -> None:
    with serving(script) as url:
        session, _ = session_for(url, tmp_path)
        Side("agent", url, tmp_path, session, SleepRecorder()).upload(b"")
    assert script.seen == []  # ``complete`` lists it; the broker records it then
