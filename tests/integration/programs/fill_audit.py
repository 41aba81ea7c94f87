#!/usr/bin/env python3
"""A solver that fills the site's audit filesystem, then leaves many results behind.

``fill_audit.py AUDIT_DIR COUNT``: writes a filler file into AUDIT_DIR until the filesystem
is full (ENOSPC), then COUNT result files with long names, so the site entry runs out of room
for its audit lines partway through the results. Only the disk-full tests use it.
"""

import os
import sys

audit_dir, count = sys.argv[1], int(sys.argv[2])
with open(os.path.join(audit_dir, "filler"), "wb", buffering=0) as filler:
    try:
        while True:
            filler.write(b"\0" * 4096)
    except OSError:
        pass  # full: exactly what this solver is for
for n in range(count):
    with open(f"result-{n:03d}-{'x' * 180}.txt", "w") as out:
        out.write(f"result {n}\n")
print(f"filled; wrote {count} results", flush=True)
