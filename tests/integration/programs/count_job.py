#!/usr/bin/env python3
"""Appends this job's id to a counter file the site keeps outside the work dir.

Used by the pull-path tests to prove each job ran exactly once; O_APPEND writes of one short
line are atomic, so concurrent jobs never interleave their lines.
"""

import os
import sys
import time

counter, seconds = sys.argv[1], float(sys.argv[2]) if len(sys.argv) > 2 else 0.0
line = f"{os.environ['MINT_BRIDGE_JOB_ID']} {os.getpid()}\n".encode()
fd = os.open(counter, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
os.write(fd, line)
os.close(fd)
print(f"counted {os.environ['MINT_BRIDGE_JOB_ID']}", flush=True)
for i in range(int(seconds * 10)):
    if i % 10 == 0:
        print(f"working {i // 10}", flush=True)
    time.sleep(0.1)
with open("done.txt", "w") as out:
    out.write("done\n")
