"""The content rules of the egress policy, in the one read pass that hashes a result.

``inspect`` reads a result once: every chunk goes to the SHA-256 the manifest carries and is
searched for the site's markers, including across chunk boundaries. The digest is then looked
up in the private index. A file with a marker is not read to its end (it is withheld anyway).

Never: read a result twice to decide its content rules, or return bytes of the file.
"""

from __future__ import annotations

import hashlib
import queue
import threading
from dataclasses import dataclass
from typing import BinaryIO

from bridge.core import defaults
from bridge.core.errors import StagingError

# Chunks the hashing thread may lag behind the search: a few MiB of memory whatever the size.
_HASH_AHEAD = 4


@dataclass(frozen=True)
class Inspection:
    sha256: str | None  # None when a marker stopped the read before the end
    marker: bytes | None


def inspect(source: BinaryIO, size: int, markers: tuple[bytes, ...], label: str) -> Inspection:
    """Hash ``size`` bytes of ``source`` and find the first marker; leaves it at the start.

    The digest is computed in a helper thread while this one searches the same chunk
    (hashlib lets go of the GIL), so the pass takes about as long as the slower of the two.
    """
    finder = _MarkerFinder(markers)
    source.seek(0)
    remaining = size
    with _Hasher() as hasher:
        while remaining:
            chunk = source.read(min(remaining, defaults.CHUNK_SIZE))
            if not chunk:
                raise StagingError(f"{label} shrank while it was being read ({remaining} short)")
            hasher.feed(chunk)
            found = finder.feed(chunk)
            if found is not None:
                source.seek(0)
                return Inspection(None, found)
            remaining -= len(chunk)
        digest = hasher.hexdigest()
    source.seek(0)
    return Inspection(digest, None)


class _Hasher:
    """SHA-256 of chunks fed in order, computed in a helper thread a few chunks behind."""

    def __init__(self) -> None:
        self._digest = hashlib.sha256()
        self._queue: queue.Queue[bytes | None] = queue.Queue(_HASH_AHEAD)
        self._thread = threading.Thread(target=self._run, name="egress-hash", daemon=True)

    def __enter__(self) -> _Hasher:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()

    def feed(self, chunk: bytes) -> None:
        self._queue.put(chunk)

    def hexdigest(self) -> str:
        self._queue.put(None)
        self._thread.join()
        return self._digest.hexdigest()

    def _run(self) -> None:
        while (chunk := self._queue.get()) is not None:
            self._digest.update(chunk)


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
