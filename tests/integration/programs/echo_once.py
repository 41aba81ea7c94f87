#!/usr/bin/env python3
"""Records this job's id in a counter file outside the work dir, then returns its input.

For the multi-instance tests: the counter proves each job ran exactly once (O_APPEND writes of
one short line are atomic), and ``echo.bin`` (the input's bytes) lets the client check the
result's SHA-256 against the input it sent.
"""

import os
import shutil
import sys

line = f"{os.environ['MINT_BRIDGE_JOB_ID']} {os.getpid()}\n".encode()
fd = os.open(sys.argv[1], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
os.write(fd, line)
os.close(fd)
shutil.copyfile("in.bin", "echo.bin")
print(f"echoed {os.path.getsize('echo.bin')} bytes", flush=True)
