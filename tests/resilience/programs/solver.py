#!/usr/bin/env python3
"""The resilience suite's solver: counts its runs, checksums its inputs, writes a known result.

argv: COUNTER SECONDS SIZE. It appends "JOB_ID PID" to COUNTER (outside the work dir; one short
O_APPEND write is atomic), writes sums.txt (SHA-256 of every input file), sleeps SECONDS in
0.1 s steps printing progress, then writes result.bin: SIZE bytes from a generator seeded with
the job id, so the test knows its SHA-256 without reading the site's copy.
"""

import hashlib
import os
import random
import sys
import time

counter, seconds, size = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
job_id = os.environ["MINT_BRIDGE_JOB_ID"]
fd = os.open(counter, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
os.write(fd, f"{job_id} {os.getpid()}\n".encode())
os.close(fd)
print(f"started {job_id}", flush=True)
sums = []
for name in sorted(os.listdir(".")):
    if name.startswith("in") and os.path.isfile(name):
        with open(name, "rb") as handle:
            sums.append(f"{hashlib.sha256(handle.read()).hexdigest()}  {name}\n")
with open("sums.txt", "w") as out:
    out.writelines(sums)
for step in range(int(seconds * 10)):
    if step % 10 == 0:
        print(f"working {step // 10}", flush=True)
    time.sleep(0.1)
with open("result.bin", "wb") as out:
    out.write(random.Random(job_id).randbytes(size))
print("done", flush=True)
