"""One file to or from the broker, resumable: the bridge's inputs and results, the agent's too.

Both sides move files the same way, so both call this module: the bridge uploads inputs and
downloads results, the agent downloads inputs and uploads results. Only the URL path and the
headers each side adds (the agent's lease epoch, a result's declaration) differ.

- ``upload`` asks the broker (``HEAD``) how many bytes it holds and ``PATCH``-es the rest in
  chunks from there, each chunk at an explicit ``Upload-Offset``. After a cut the session's
  retry policy asks for the offset again, so nothing is sent twice or skipped.
- ``download`` ``GET``-s what the target still lacks (``Range`` from its offset) and checks
  every answer before a byte of it is kept: the status, the ``ETag`` against the SHA-256 the
  job declared, that a partial answer starts exactly where we asked and has the declared
  total size, and that a whole answer has the declared size. The bytes go through
  ``VerifiedFile``, which renames the file into place only once its size and SHA-256 match.

What this module must never do: let a file appear under its real name before its size and
SHA-256 are verified, keep bytes from an answer that fails a check, or loop forever on an
answer that makes no progress.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import BinaryIO

import requests

from bridge.core import defaults
from bridge.core.broker_session import BrokerSession, about, answer_count, iter_body
from bridge.core.errors import (
    BridgeError,
    Conflict,
    JobUnknown,
    ProtocolError,
    SiteUnreachable,
    TransferCorrupted,
)
from bridge.core.streams import FileSlice, VerifiedFile

log = logging.getLogger(__name__)

# The broker's ETag is the file's SHA-256; a proxy may mark it weak or drop the quotes.
_ETAG_SHA256 = re.compile(r'(?:W/)?"?([0-9a-fA-F]{64})"?')
_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)", re.ASCII)


def upload(
    session: BrokerSession,
    path: str,
    source: BinaryIO,
    size: int,
    label: str,
    *,
    headers: Mapping[str, str] | None = None,
    sha256: str | None = None,
) -> None:
    """Send ``size`` bytes of the open file ``source`` to ``path``, resuming from what the
    broker holds. ``headers`` go with every request.

    With ``sha256`` the upload declares itself (``Upload-Length``, ``Upload-SHA256``), as a
    result does: the broker's offset counts only for this very declaration, and an older
    declaration of the same name is replaced (once) by starting again at 0. Without it the
    broker already knows the file (an input declared when the job was created).
    """
    sending = _Upload(session, path, source, size, label, dict(headers or {}), sha256)
    session.retrying(about(path, label))(sending.send_rest)


def download(
    session: BrokerSession,
    path: str,
    target: VerifiedFile,
    *,
    headers: Mapping[str, str] | None = None,
) -> None:
    """Fetch ``path`` into ``target`` and commit it (size and SHA-256 verified). A cut
    answer is resumed from ``target.offset`` under the session's retry policy."""
    receiving = _Download(session, path, target, dict(headers or {}))
    session.retrying(about(path, target.label))(receiving.fetch_rest)
    target.commit()


@dataclass(frozen=True)
class _Upload:
    session: BrokerSession
    path: str
    source: BinaryIO
    size: int
    label: str
    headers: dict[str, str]
    sha256: str | None

    def send_rest(self) -> None:
        """Send what the broker lacks, from the offset it says it holds. A cut raises a
        transient error; the retry asks for the offset again (a blind repeat of the PATCH
        would push the whole body only to hear that the offset moved)."""
        declared = dict(self.headers)
        if self.sha256 is not None:
            declared.update({"Upload-Length": str(self.size), "Upload-SHA256": self.sha256})
        offset = self.held()
        restarted = False
        while offset < self.size:  # an empty file counts as received from the start
            length = min(defaults.UPLOAD_CHUNK, self.size - offset)
            try:
                response = self.session.request(
                    "PATCH",
                    self.path,
                    body=FileSlice(self.source, offset, length, self.label),
                    headers={
                        **declared,
                        "Upload-Offset": str(offset),
                        "Content-Type": "application/offset+octet-stream",
                    },
                    ok=(200, 204),
                    retry=False,  # the caller's retry loop asks for the offset again
                )
            except Conflict as exc:
                if exc.code == "offset_mismatch":
                    offset = self.held() if exc.offset is None else self.within(exc.offset)
                    continue
                if exc.code == "conflict" and self.sha256 is not None and not restarted:
                    # An older declaration of the same name (the file changed): replace it.
                    log.info("%s: %s", about(self.path, self.label), exc.message)
                    offset, restarted = 0, True
                    continue
                raise
            moved = answer_count(response.headers.get("Upload-Offset"), "Upload-Offset")
            if not offset < moved <= offset + length:
                # Without progress this loop would never end; beyond the chunk, bytes we
                # never sent would count as received.
                raise ProtocolError(
                    f"broker took {self.label} from offset {offset} ({length} bytes) and "
                    f"answered offset {moved}"
                )
            offset = moved

    def held(self) -> int:
        """The offset the broker holds for this file (for a declared file: for this very
        declaration, else 0, and a new declaration at 0 replaces the old one)."""
        try:
            response = self.session.request("HEAD", self.path, headers=self.headers)
        except JobUnknown:
            if self.sha256 is None:
                raise
            return 0  # the broker has not heard of this result yet
        if self.sha256 is not None:
            held = (response.headers.get("Upload-Length"), response.headers.get("Upload-SHA256"))
            if held != (str(self.size), self.sha256):
                return 0
        return self.within(answer_count(response.headers.get("Upload-Offset"), "Upload-Offset"))

    def within(self, offset: int) -> int:
        if offset > self.size:
            raise ProtocolError(
                f"broker holds {offset} bytes of {self.label}, which has only {self.size}"
            )
        return offset


@dataclass(frozen=True)
class _Download:
    session: BrokerSession
    path: str
    target: VerifiedFile
    headers: dict[str, str]

    def fetch_rest(self) -> None:
        """Fetch what the target still lacks; a cut raises a transient error and the retry
        continues from ``target.offset``."""
        target = self.target
        offset = target.offset
        headers = dict(self.headers)
        if offset:
            headers["Range"] = f"bytes={offset}-"
            log.debug("%s: resuming at byte %d", about(self.path, target.label), offset)
        response = self.session.request(
            "GET",
            self.path,
            headers=headers,
            ok=(200, 206),
            stream=True,
            retry=False,  # the caller's retry loop resumes from the new offset
        )
        try:
            skip = self.checked(response, offset)
        except BridgeError:
            response.close()
            raise
        for chunk in iter_body(response, defaults.DOWNLOAD_CHUNK):
            if skip:
                dropped = min(skip, len(chunk))
                chunk, skip = chunk[dropped:], skip - dropped
            if chunk:
                target.write(chunk)
        if target.offset < target.size:  # cut short: the retry resumes from here
            raise SiteUnreachable(
                f"{target.label} was cut at {target.offset} of {target.size} bytes"
            )

    def checked(self, response: requests.Response, offset: int) -> int:
        """Check the answer's headers against the declared file; the bytes of the body to
        drop before ours (a server that ignored ``Range`` sends the file from its start)."""
        target = self.target
        etag = _ETAG_SHA256.fullmatch(response.headers.get("ETag", ""))
        if etag and etag.group(1).lower() != target.sha256:
            raise TransferCorrupted(
                f"{target.label} at the broker is not the declared one (its ETag is another "
                "SHA-256)"
            )
        if response.status_code == 206:
            return self._checked_range(response, offset)
        length = response.headers.get("Content-Length")
        encoded = response.headers.get("Content-Encoding", "identity").lower() != "identity"
        if length is not None and not encoded and length != str(target.size):
            raise TransferCorrupted(
                f"{target.label} at the broker has {length:.20} bytes, not the declared "
                f"{target.size}"
            )
        return offset  # Range ignored (or not sent): skip what we already have

    def _checked_range(self, response: requests.Response, offset: int) -> int:
        target = self.target
        value = response.headers.get("Content-Range", "")
        match = _CONTENT_RANGE.fullmatch(value.strip())
        if match is None or int(match.group(1)) != offset:
            raise ProtocolError(
                f"broker sent {target.label} from the wrong offset (asked for {offset}, "
                f"Content-Range {value!r:.60})"
            )
        total = match.group(3)
        if total != "*" and int(total) != target.size:
            raise TransferCorrupted(
                f"{target.label} at the broker has {total} bytes, not the declared {target.size}"
            )
        if int(match.group(2)) < offset or int(match.group(2)) >= target.size:
            raise ProtocolError(f"broker sent {target.label} with Content-Range {value!r:.60}")
        return 0


__all__ = ["download", "upload"]
