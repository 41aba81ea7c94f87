"""``mint-bridge site index-private``: the SHA-256 of every file under the site's private dirs.

With ``[egress] deny_private = true`` a result byte-identical to one of these files is withheld.
Each entry keeps the file's size, mtime and inode: a refresh rehashes only the files where one of
them changed, so refreshing before each job's results are checked costs a ``stat`` per private
file. Empty files are not indexed (every empty result would match them).

Never: follow a symlink while walking, or write the index anywhere but its configured path
(private to the site account, 0600).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from bridge.core import defaults
from bridge.core.atomic_write import write_json_atomic
from bridge.core.errors import SiteError

log = logging.getLogger(__name__)

_FORMAT = 1


@dataclass
class PrivateIndex:
    entries: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def sizes(self) -> frozenset[int]:
        return frozenset(int(e["size"]) for e in self.entries.values())

    @property
    def hashes(self) -> frozenset[str]:
        return frozenset(str(e["sha256"]) for e in self.entries.values())


@dataclass
class Refreshed:
    index: PrivateIndex
    hashed: int = 0  # new or changed files, read and hashed
    kept: int = 0  # unchanged files, not read
    removed: int = 0  # entries whose file is gone
    unreadable: list[str] = field(default_factory=list)


def refresh(dirs: tuple[str, ...], index_path: str) -> Refreshed:
    """Bring the index at ``index_path`` up to date with ``dirs``; rehash only what changed."""
    path = os.path.expanduser(index_path)
    _ensure_parent(path)
    with _locked(path):
        old = load(path).entries
        result = Refreshed(PrivateIndex())
        for file_path, st in _walk(dirs):
            result.index.entries[file_path] = _entry(file_path, st, old.get(file_path), result)
        result.index.entries = {k: v for k, v in result.index.entries.items() if v}
        result.removed = len(set(old) - set(result.index.entries))
        write_json_atomic(path, {"format": _FORMAT, "files": result.index.entries})
        os.chmod(path, 0o600)
    return result


def load(index_path: str) -> PrivateIndex:
    path = os.path.expanduser(index_path)
    try:
        with open(path, encoding="utf-8") as handle:
            doc = json.load(handle)
    except FileNotFoundError:
        return PrivateIndex()
    except (OSError, ValueError) as exc:
        raise SiteError(
            f"private index {path} cannot be read ({exc}); rebuild it with "
            "`mint-bridge site index-private --config SITE.toml`"
        ) from exc
    files = doc.get("files") if isinstance(doc, dict) else None
    return PrivateIndex(files if isinstance(files, dict) else {})


def _entry(
    path: str, st: os.stat_result, old: dict[str, Any] | None, result: Refreshed
) -> dict[str, Any]:
    key = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "inode": st.st_ino}
    if old is not None and all(old.get(k) == v for k, v in key.items()):
        result.kept += 1
        return old
    try:
        digest = _sha256(path)
    except OSError as exc:
        log.warning("private file %s not indexed: %s", path, exc.strerror)
        result.unreadable.append(path)
        return {}
    result.hashed += 1
    return {**key, "sha256": digest}


def _walk(dirs: tuple[str, ...]) -> Iterator[tuple[str, os.stat_result]]:
    for top in dirs:
        for parent, subdirs, names in os.walk(top, followlinks=False):
            subdirs.sort()
            for name in sorted(names):
                path = os.path.join(parent, name)
                with contextlib.suppress(FileNotFoundError):
                    st = os.lstat(path)
                    if stat.S_ISREG(st.st_mode) and st.st_size > 0:
                        yield path, st


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb", buffering=0) as handle:
        while chunk := handle.read(defaults.CHUNK_SIZE):
            digest.update(chunk)
    return digest.hexdigest()


def _ensure_parent(path: str) -> None:
    try:
        os.makedirs(os.path.dirname(path) or ".", mode=0o700, exist_ok=True)
    except OSError as exc:
        raise SiteError(
            f"cannot create the directory of the private index {path}: {exc.strerror}; set "
            "[egress] private_index to a path this account can write"
        ) from exc


@contextlib.contextmanager
def _locked(path: str) -> Iterator[None]:
    # Two jobs ending together refresh one index: one after the other, never interleaved.
    fd = os.open(f"{path}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)
