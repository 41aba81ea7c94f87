"""Moving files into and out of a work dir, safely by construction.

Rules this module enforces on both ends:

- An input name is a plain file name: no ``/``, not ``.`` or ``..``, no NUL or other control
  character, no leading ``-`` (so it can never be mistaken for an option), at most 255 bytes.
- A result path is a relative path whose every part is such a name.
- Files are opened relative to a directory file descriptor with ``O_NOFOLLOW``; intermediate
  directories are opened the same way, so a symlink never leads a read or a write outside the
  directory it was given.
- Collecting results never follows a symlink out of the work dir: such a link is reported as
  skipped and never read. Symlinked directories are never descended (no loops).
- A file is written with no larger permissions than it had (setuid/setgid/sticky and write for
  group and others are dropped), first under a temporary name, renamed only once its size and
  SHA-256 match.
"""

from __future__ import annotations

import contextlib
import fnmatch
import hashlib
import os
import queue
import stat
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, BinaryIO

from bridge.core import defaults
from bridge.core.errors import InputRejected, ProtocolError, StagingError, TransferCorrupted
from bridge.core.protocol import KIND_FILE, FrameReader, FrameWriter, copy_frames_to
from bridge.core.workdir_files import CONTROL_DIR

if TYPE_CHECKING:
    from pathlib import PurePosixPath

_PART_SUFFIX = ".mint-bridge-part"
_SAFE_MODE_MASK = 0o755
# Chunks a sender reads and hashes ahead of the one it is sending: enough to keep both busy,
# and a transfer holds a few chunks of memory whatever the file size.
_READ_AHEAD = 2


def check_name(name: object, what: str = "input name") -> str:
    """Return ``name`` if it is a safe plain file name, else raise InputRejected naming the rule."""
    if not isinstance(name, str) or not name:
        raise InputRejected(f"{what} must be a non-empty string", field=what)
    problem = _name_problem(name)
    if problem:
        raise InputRejected(f"{what} {name!r:.80} is not allowed: {problem}", field=what)
    return name


def _name_problem(name: str) -> str | None:
    if "/" in name or "\\" in name:
        return "it contains a path separator; send a plain file name"
    if name in (".", ".."):
        return "it names a directory"
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in name):
        return "it contains a NUL or control character"
    if name.startswith("-"):
        return "it starts with '-', which a program could read as an option"
    if name == CONTROL_DIR or name.endswith(_PART_SUFFIX):
        return "the name is reserved by mint-bridge"
    if len(name.encode("utf-8", "surrogateescape")) > defaults.MAX_NAME_LENGTH:
        return f"it is longer than {defaults.MAX_NAME_LENGTH} bytes"
    return None


def check_relative_path(path: object) -> PurePosixPath:
    """A result path: relative, each part a safe name. Raises StagingError otherwise."""
    # Imported here: only the receiving ends check result paths, and pathlib (with urllib and
    # ipaddress) would add ~5 ms to every site request, which needs it nowhere else.
    from pathlib import PurePosixPath

    if not isinstance(path, str) or not path:
        raise StagingError("result path must be a non-empty string", field="name")
    pure = PurePosixPath(path)
    if pure.is_absolute() or str(pure) != path:
        raise StagingError(f"result path {path!r:.120} is not a plain relative path")
    for part in pure.parts:
        problem = _name_problem(part)
        if problem:
            raise StagingError(f"result path {path!r:.120} is not allowed: {problem}")
    return pure


def safe_mode(mode: int) -> int:
    """Permission bits no larger than ``mode``: no setuid/setgid/sticky, no write for others."""
    return mode & _SAFE_MODE_MASK


# --- sending -------------------------------------------------------------------------------


def send_file(writer: FrameWriter, name: str, source: BinaryIO, size: int, mode: int) -> str:
    """Send one file: header, body in chunks, trailer with SHA-256. Returns the hex digest.

    Exactly ``size`` bytes are sent; a file that shrank meanwhile is an error, one that grew is
    cut at ``size`` (the receiver checks both against the SHA-256 of what was sent).
    """
    writer.write_json({"file": name, "size": size, "mode": mode})
    with _ReadAhead(source, size, name) as body:
        for chunk in body.chunks():
            writer.write_frame(KIND_FILE, chunk)
        hexdigest = body.hexdigest()
    writer.write_frame(KIND_FILE, b"")
    writer.write_json({"sha256": hexdigest})
    return hexdigest


class _ReadAhead:
    """Reads and hashes a file's body in a helper thread, a few chunks ahead of the sender.

    Reading and hashing release the GIL, so they overlap with sending, which over SSH is
    paramiko's Python code: the critical path of an upload.
    """

    def __init__(self, source: BinaryIO, size: int, name: str) -> None:
        self._source = source
        self._size = size
        self._name = name
        self._digest = hashlib.sha256()
        self._slots: queue.Queue[bytes | BaseException | None] = queue.Queue(_READ_AHEAD)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="read-ahead", daemon=True)

    def __enter__(self) -> _ReadAhead:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()  # the sender failed or finished: the reader ends within a chunk
        with contextlib.suppress(queue.Empty):  # and a reader waiting for room is let go
            while True:
                self._slots.get_nowait()
        self._thread.join()

    def chunks(self) -> Iterator[bytes]:
        while (item := self._slots.get()) is not None:
            if isinstance(item, BaseException):
                raise item
            yield item

    def hexdigest(self) -> str:
        """The SHA-256 of the body; complete once ``chunks`` is exhausted."""
        return self._digest.hexdigest()

    def _run(self) -> None:
        remaining = self._size
        try:
            while remaining and not self._stop.is_set():
                chunk = self._source.read(min(remaining, defaults.CHUNK_SIZE))
                if not chunk:
                    raise StagingError(
                        f"{self._name} shrank while it was being sent ({remaining} bytes short)"
                    )
                self._digest.update(chunk)
                remaining -= len(chunk)
                self._put(chunk)
            self._put(None)
        except BaseException as exc:  # raised again by the sender, in its own thread
            self._put(exc)

    def _put(self, item: bytes | BaseException | None) -> None:
        # Never blocks for good: a sender that stopped takes nothing more from the queue.
        while not self._stop.is_set():
            with contextlib.suppress(queue.Full):
                self._slots.put(item, timeout=0.1)
                return


# --- receiving -----------------------------------------------------------------------------


@dataclass(frozen=True)
class FileHeader:
    name: str
    size: int
    mode: int

    @classmethod
    def from_message(cls, message: dict[str, Any]) -> FileHeader:
        name, size, mode = message.get("file"), message.get("size"), message.get("mode", 0o644)
        if not isinstance(name, str):
            raise ProtocolError("file header without a name")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise ProtocolError(f"file header for {name!r:.80} has an invalid size {size!r}")
        if not isinstance(mode, int) or isinstance(mode, bool):
            raise ProtocolError(f"file header for {name!r:.80} has an invalid mode {mode!r}")
        return cls(name, size, mode)


def receive_file(reader: FrameReader, header: FileHeader, dir_fd: int, leaf: str) -> str:
    """Receive the body of ``header`` into ``leaf`` inside the directory ``dir_fd``.

    The body goes to a temporary name first; only when size and SHA-256 match is it renamed
    over ``leaf`` (replacing a symlink there, never writing through it). Returns the digest.
    """
    # Cut by bytes, not characters: a valid 255-byte name must still leave room for the suffix.
    stem = leaf.encode("utf-8", "surrogateescape")[:180].decode("utf-8", "ignore")
    part = f".{stem}.{os.getpid()}{_PART_SUFFIX}"
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(part, flags, 0o600, dir_fd=dir_fd)
    except OSError as exc:
        raise StagingError(f"cannot create {header.name}: {exc.strerror}") from exc
    try:
        received, hexdigest = _receive_body(reader, header, fd)
        _verify(reader, header, received, hexdigest)
        os.rename(part, leaf, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(part, dir_fd=dir_fd)
        raise
    return hexdigest


def _receive_body(reader: FrameReader, header: FileHeader, fd: int) -> tuple[int, str]:
    """Write the body into ``fd`` (closed on return); the bytes received and their SHA-256."""
    digest = hashlib.sha256()

    def write(chunk: memoryview) -> None:
        digest.update(chunk)
        _write_all(fd, chunk)

    try:
        received = copy_frames_to(reader, write, header.size)
        os.fchmod(fd, safe_mode(header.mode) & ~current_umask())
    finally:
        os.close(fd)
    return received, digest.hexdigest()


def _write_all(fd: int, data: memoryview) -> None:
    # Straight from the received chunk to the file: no buffer in between to copy it into.
    while data:
        data = data[os.write(fd, data) :]


def _verify(reader: FrameReader, header: FileHeader, received: int, actual: str) -> None:
    if received != header.size:
        raise TransferCorrupted(
            f"{header.name} arrived truncated: {received} of {header.size} bytes"
        )
    trailer = reader.read_json()
    expected = trailer.get("sha256")
    if expected != actual:
        raise TransferCorrupted(
            f"{header.name} arrived corrupted: SHA-256 {actual[:16]}... "
            f"does not match the sender's {str(expected)[:16]}..."
        )


def current_umask() -> int:
    """The process umask, read without changing it where possible: ``os.umask(0)`` would
    briefly give the agent's other threads a zero umask while they create files."""
    with contextlib.suppress(OSError, ValueError), open("/proc/self/status") as status:
        for line in status:
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o077)  # no /proc: the briefest change, to the strictest mask
    os.umask(mask)
    return mask


def open_dir_nofollow(base_fd: int, parts: Sequence[str], create: bool) -> int:
    """Open (and optionally create) ``parts`` below ``base_fd`` without following any symlink."""
    fd = os.dup(base_fd)
    try:
        for part in parts:
            if create:
                with contextlib.suppress(FileExistsError):
                    os.mkdir(part, 0o755, dir_fd=fd)
            flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
            try:
                next_fd = os.open(part, flags, dir_fd=fd)
            except OSError as exc:
                raise StagingError(
                    f"cannot use directory {part!r}: {exc.strerror} "
                    "(a symlink or a file is in the way)"
                ) from exc
            os.close(fd)
            fd = next_fd
    except BaseException:
        os.close(fd)
        raise
    return fd


# --- collecting results at the site ------------------------------------------------------


@dataclass(frozen=True)
class ResultFile:
    name: str  # relative POSIX path inside the work dir
    source: str  # relative path to read (for a symlink inside the work dir: its target)
    size: int
    mode: int


@dataclass(frozen=True)
class Skipped:
    name: str
    reason: str


@dataclass(frozen=True)
class ReturnRule:
    """What comes back: ``patterns is None`` means every file (the original's behaviour)."""

    patterns: tuple[str, ...] | None
    exclude: tuple[str, ...] = ()

    def excluded(self, relpath: str) -> bool:
        return any(fnmatch.fnmatchcase(relpath, pat) for pat in self.exclude)

    def wants(self, relpath: str) -> bool:
        if self.excluded(relpath):
            return False
        if self.patterns is None:
            return True
        return any(fnmatch.fnmatchcase(relpath, pat) for pat in self.patterns)


def collect_results(
    workdir: str, rule: ReturnRule, unchanged_inputs: dict[str, tuple[int, int]]
) -> tuple[list[ResultFile], list[Skipped]]:
    """Walk ``workdir`` without following symlinks and list what goes back.

    ``unchanged_inputs`` maps input names to their (size, mtime_ns) after staging: inputs the
    job did not touch are not sent back (the bridge already has them).
    """
    root = os.path.realpath(workdir)
    files: list[ResultFile] = []
    skipped: list[Skipped] = []
    for rel, entry in _walk(root, "", skipped):
        if not rule.wants(rel):
            continue
        st = entry.stat(follow_symlinks=False)
        if stat.S_ISLNK(st.st_mode):
            _collect_symlink(root, rel, entry.path, rule, files, skipped)
        elif stat.S_ISREG(st.st_mode):
            if unchanged_inputs.get(rel) == (st.st_size, st.st_mtime_ns):
                continue
            files.append(ResultFile(rel, rel, st.st_size, stat.S_IMODE(st.st_mode)))
        else:
            skipped.append(Skipped(rel, "not a regular file (device, socket or pipe)"))
    files.sort(key=lambda f: f.name)
    return files, skipped


def _walk(root: str, prefix: str, skipped: list[Skipped]) -> Iterator[tuple[str, os.DirEntry[str]]]:
    try:
        with os.scandir(os.path.join(root, prefix) if prefix else root) as scan:
            entries = sorted(scan, key=lambda e: e.name)
    except OSError as exc:
        skipped.append(
            Skipped(prefix.rstrip("/") or ".", f"directory not readable: {exc.strerror}")
        )
        return
    for entry in entries:
        rel = f"{prefix}{entry.name}"
        if not prefix and entry.name == CONTROL_DIR:
            continue
        problem = _name_problem(entry.name)
        if problem:
            if not entry.name.endswith(_PART_SUFFIX):  # our own partial uploads stay silent
                skipped.append(Skipped(rel, f"name not allowed: {problem}"))
            continue
        if entry.is_dir(follow_symlinks=False):
            yield from _walk(root, rel + "/", skipped)
        else:
            yield rel, entry


def _collect_symlink(
    root: str,
    rel: str,
    link_path: str,
    rule: ReturnRule,
    files: list[ResultFile],
    skipped: list[Skipped],
) -> None:
    target = os.path.realpath(link_path)
    if os.path.commonpath([root, target]) != root:
        skipped.append(Skipped(rel, "symlink to a path outside the work dir (not read)"))
        return
    # A link must not bring back what the site keeps: its control dir or an excluded file.
    target_rel = os.path.relpath(target, root)
    if target_rel.split("/", 1)[0] == CONTROL_DIR:  # relpath() gave a normalized path
        skipped.append(Skipped(rel, "symlink into mint-bridge's control dir (not read)"))
        return
    if rule.excluded(target_rel):
        skipped.append(Skipped(rel, "symlink to a file the site does not return (not read)"))
        return
    try:
        st = os.stat(target, follow_symlinks=False)
    except OSError:
        skipped.append(Skipped(rel, "dangling symlink"))
        return
    if not stat.S_ISREG(st.st_mode):
        skipped.append(Skipped(rel, "symlink to a directory or special file (not followed)"))
        return
    source = os.path.relpath(target, root)
    files.append(ResultFile(rel, source, st.st_size, stat.S_IMODE(st.st_mode)))


def open_result_for_reading(root_fd: int, result: ResultFile) -> BinaryIO:
    """Open a collected result below ``root_fd``, following no symlink on the way.

    Even if the job left a process behind that swaps a directory for a symlink after
    collection, the open fails rather than reading outside the work dir.
    """
    parts = result.source.split("/")  # normalized: collect_results built it
    dir_fd = open_dir_nofollow(root_fd, parts[:-1], create=False)
    # O_NONBLOCK: a FIFO swapped in for the file must fail the check below, not block the open.
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
    try:
        fd = os.open(parts[-1], flags, dir_fd=dir_fd)
    except OSError as exc:
        raise StagingError(f"cannot read result {result.name}: {exc.strerror}") from exc
    finally:
        os.close(dir_fd)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise StagingError(f"{result.name} is no longer a regular file")
    os.set_blocking(fd, True)
    return os.fdopen(fd, "rb")
