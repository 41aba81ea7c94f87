"""The content rules of the egress policy, in the one read pass that hashes a result.

``inspect`` reads a result once: every chunk goes to the SHA-256 the manifest carries and is
searched for the site's markers, including across chunk boundaries. The digest is then looked
up in the private index. A file with a marker is not read to its end (it is withheld anyway).

Never: read a result twice to decide its content rules, or return bytes of the file.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import BinaryIO

from bridge.core import defaults
from bridge.core.errors import StagingError


@dataclass(frozen=True)
class Inspection:
    sha256: str | None  # None when a marker stopped the read before the end
    marker: bytes | None


def inspect(source: BinaryIO, size: int, markers: tuple[bytes, ...], label: str) -> Inspection:
    """Hash ``size`` bytes of ``source`` and find the first marker; leaves it at the start."""
    digest = hashlib.sha256()
    finder = _MarkerFinder(markers)
    source.seek(0)
    remaining = size
    while remaining:
        chunk = source.read(min(remaining, defaults.CHUNK_SIZE))
        if not chunk:
            raise StagingError(f"{label} shrank while it was being read ({remaining} short)")
        found = finder.feed(chunk)
        if found is not None:
            source.seek(0)
            return Inspection(None, found)
        digest.update(chunk)
        remaining -= len(chunk)
    source.seek(0)
    return Inspection(digest.hexdigest(), None)


class _MarkerFinder:
    """Finds any of ``markers`` in a stream fed chunk by chunk.

    Besides each chunk, only the seam is searched: the last ``longest - 1`` bytes of what came
    before with the first ``longest - 1`` of the new chunk, so no chunk is copied whole.
    """

    def __init__(self, markers: tuple[bytes, ...]) -> None:
        self.markers = markers
        self.keep = max((len(m) for m in markers), default=1) - 1
        self.tail = b""

    def feed(self, chunk: bytes) -> bytes | None:
        if not self.markers:
            return None
        found = self._search(self.tail + chunk[: self.keep]) if self.tail else None
        found = found or self._search(chunk)
        if self.keep:
            self.tail = (self.tail + chunk)[-self.keep :] if len(chunk) < self.keep else (
                chunk[-self.keep :]
            )
        return found

    def _search(self, data: bytes) -> bytes | None:
        for marker in self.markers:
            if marker in data:
                return marker
        return None
