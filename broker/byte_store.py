"""``ByteStore``: where the broker keeps the bytes of jobs (inputs, results, logs).

The store (``broker.store``) keeps only counts and digests; the bytes live behind this small
interface. ``broker.files.JobFiles`` keeps them in a directory, which several broker instances
share on a shared filesystem (``[storage] data_dir``); an object store could implement the
same methods. Every implementation must: never count a byte it has not made durable, refuse
names outside a job (the API checks them first, the implementation again), and raise
``BytesNotShared`` when the database counts bytes this instance cannot see (an instance with
another ``data_dir``), never answer as if they were empty.
"""

from __future__ import annotations

from typing import BinaryIO, Protocol

from broker.errors import StoreError

DATA_DIR_KEY = "storage.data_dir"


class BytesNotShared(StoreError):
    """Bytes the database counts are not in this instance's byte store.

    A 503: another instance (the one that wrote them) may serve the request, so a client with
    several broker URLs fails over to it; the operator reads the fix in the log and the message.
    """


class ByteStore(Protocol):
    def open_for_write(self, job_id: str, area: str, name: str, offset: int) -> BinaryIO:
        """The file positioned at ``offset``, cut there; BytesNotShared if ``offset`` > 0 and
        fewer bytes than that are here."""

    def open_for_read(
        self, job_id: str, area: str, name: str, size: int | None = None
    ) -> BinaryIO:
        """The file; with ``size`` (what the database counts), BytesNotShared if it is short."""

    def read_range(self, job_id: str, area: str, name: str, offset: int, count: int) -> bytes:
        """``count`` counted bytes from ``offset``; BytesNotShared if fewer are here."""

    def sha256(self, job_id: str, area: str, name: str) -> str: ...

    def remove_area(self, job_id: str, area: str) -> None: ...

    def remove_job(self, job_id: str) -> None: ...

    def check(self) -> None:
        """Write, read back and remove a probe (``/healthz``); StoreError naming the problem."""
