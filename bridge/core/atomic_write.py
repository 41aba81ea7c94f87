"""Writing a small JSON file so that readers see the old file or the whole new one.

Used for records other processes read while they may be rewritten: a job's control files and
the site's shared status file. Imports only the standard library (the local scheduler's
supervisor, which starts per job, writes its exit record with it); never holds a lock.
"""

from __future__ import annotations

import json
import os


def write_json_atomic(path: str, data: object) -> None:
    """Write atomically: readers see the old file or the whole new one, never half of it."""
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as handle:
        json.dump(data, handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
