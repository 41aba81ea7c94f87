"""One job, one work dir: ``<work_base>/<job-uuid>``, private (0700), with its control files.

The control files live in ``<work dir>/.mint-bridge/`` and are never returned as results; their
names, and what each holds, are listed in ``bridge.core.workdir_files``. ``WorkDir`` keeps the
marks the site entry acts on: the ``submitting`` mark, the native id (durable before the job is
reported started), the cancel and delivery marks, and the lock under which a job is staged and
started. It never takes a symlink or a file for the work dir, and removes nothing outside it.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from collections.abc import Iterator
from typing import Any

from bridge.core.atomic_write import write_json_atomic
from bridge.core.errors import JobUnknown, SiteError
from bridge.core.job import check_job_id
from bridge.core.workdir_files import (
    CANCEL_REQUESTED_FILE,
    CONTROL_DIR,
    DELIVERED_FILE,
    LOCK_FILE,
    NATIVE_ID_FILE,
    SUBMITTING_FILE,
)


class WorkDir:
    def __init__(self, work_base: str, job_id: str) -> None:
        self.job_id = check_job_id(job_id)
        self.path = os.path.join(work_base, job_id)
        self.control = os.path.join(self.path, CONTROL_DIR)

    def control_file(self, name: str) -> str:
        return os.path.join(self.control, name)

    def exists(self) -> bool:
        return os.path.isdir(self.control)

    def create(self, site_config: str = "the site config") -> bool:
        """Create the work dir (0700); False if it already existed (a retried submit).

        ``site_config``: the path of the site's config, named in the fix when it fails."""
        base = os.path.dirname(self.path)
        try:
            os.makedirs(base, mode=0o700, exist_ok=True)
            os.mkdir(self.path, 0o700)
        except FileExistsError:
            if os.path.islink(self.path) or not os.path.isdir(self.path):
                raise SiteError(f"{self.job_id}: work dir path is not a directory") from None
            os.makedirs(self.control, mode=0o700, exist_ok=True)
            return False
        except OSError as exc:
            raise SiteError(_create_failed(self.path, base, site_config, exc)) from exc
        os.mkdir(self.control, 0o700)
        return True

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        fd = os.open(self.control_file(LOCK_FILE), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def write_json(self, name: str, data: object) -> None:
        write_json_atomic(self.control_file(name), data)

    def read_json(self, name: str) -> Any:
        with open(self.control_file(name), encoding="utf-8") as handle:
            return json.load(handle)

    def native_id(self) -> str | None:
        try:
            with open(self.control_file(NATIVE_ID_FILE), encoding="utf-8") as handle:
                return handle.read().strip() or None
        except FileNotFoundError:
            return None

    def record_native_id(self, native_id: str) -> None:
        """Durable before the job is reported started: a restart must find it, not resubmit."""
        tmp = self.control_file(f"{NATIVE_ID_FILE}.tmp")
        with open(tmp, "w", encoding="utf-8") as handle:
            handle.write(native_id + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, self.control_file(NATIVE_ID_FILE))

    def mark_submitting(self) -> None:
        """Durable before the submit: a restart that finds it without a native id recovers."""
        with open(self.control_file(SUBMITTING_FILE), "w", encoding="utf-8") as handle:
            handle.write(f"{time.time():.3f}\n")
            handle.flush()
            os.fsync(handle.fileno())

    def submitting(self) -> bool:
        return os.path.exists(self.control_file(SUBMITTING_FILE))

    def clear_submitting(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.control_file(SUBMITTING_FILE))

    def require_started(self) -> str:
        native = self.native_id() if self.exists() else None
        if native is None:
            raise JobUnknown(f"no started job {self.job_id} at this site")
        return native

    def discard_inputs(self) -> None:
        """Remove everything but the control dir (a staging attempt that did not finish)."""
        for entry in os.scandir(self.path):
            if entry.name == CONTROL_DIR:
                continue
            if entry.is_dir(follow_symlinks=False):
                _remove_tree(entry.path)
            else:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(entry.path)

    def mark_cancel_requested(self) -> None:
        with open(self.control_file(CANCEL_REQUESTED_FILE), "w", encoding="utf-8") as handle:
            handle.write(f"{time.time():.3f}\n")

    def cancel_requested(self) -> bool:
        return os.path.exists(self.control_file(CANCEL_REQUESTED_FILE))

    def mark_delivered(self) -> None:
        with open(self.control_file(DELIVERED_FILE), "w", encoding="utf-8") as handle:
            handle.write(f"{time.time():.3f}\n")

    def remove(self) -> None:
        _remove_tree(self.path)


def _create_failed(path: str, base: str, site_config: str, exc: OSError) -> str:
    """Why a work dir cannot be made, naming the directory and ``work_base``, with a fix that
    works as written: the site admin either opens ``work_base`` to the account or moves it."""
    user = _account()
    if os.path.isdir(base):
        fix = f"make {base} writable by {user}"
    else:
        fix = f"create {base} (mkdir -p -m 700 {base}) as {user}"
    return (
        f"cannot create work dir {path}: {exc.strerror} (work_base = {base}); "
        f"{fix} or set work_base in {site_config}"
    )


def _account() -> str:
    # pwd, not getpass: $USER may be unset or wrong under sshd's forced command or systemd.
    import pwd

    try:
        return pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        return f"uid {os.getuid()}"


def _remove_tree(path: str) -> None:
    # shutil is imported only when a tree is removed: its import (bz2, lzma, ...) would add
    # ~4 ms to every request, and a normal submit finds nothing to remove.
    import shutil

    shutil.rmtree(path, ignore_errors=True)
