"""The files through which the local scheduler and its supervisor talk, and how they are written.

Kept free of heavy imports: the supervisor (``schedulers.local_runner``) starts as a fresh
interpreter for every job, and everything it imports is start-up time before the solver runs.
"""

from __future__ import annotations

import json
import os

SPEC_FILE = "local-spec.json"
EXIT_FILE = "exit.json"
# Written by cancel() before it signals the supervisor, so a cancel that arrives before the
# supervisor installed its signal handler is still honoured.
CANCEL_FILE = "local-cancel"


def write_json_atomic(path: str, data: object) -> None:
    """Write atomically: readers see the old file or the whole new one, never half of it."""
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as handle:
        json.dump(data, handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
