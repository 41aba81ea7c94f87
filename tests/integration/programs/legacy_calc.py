#!/usr/bin/env python3
"""A calculation in the style of the original API's sites, for the legacy API tests.

Run in the job's work dir with no arguments (the original poller passes none): reads in.dat,
writes out.dat (its SHA-256) and bin.out (every byte value), prints a UTF-8 line on stdout and
one on stderr. An in.dat that starts with "fail" makes it fail with exit code 3 instead.
"""

import hashlib
import sys


def main() -> int:
    with open("in.dat", "rb") as handle:
        data = handle.read()
    if data.startswith(b"fail"):
        print("about to fail", flush=True)
        print("failure detail", file=sys.stderr, flush=True)
        return 3
    with open("out.dat", "wb") as out:
        out.write(hashlib.sha256(data).hexdigest().encode() + b"\n")
    with open("bin.out", "wb") as out:
        out.write(bytes(range(256)))
    print("計算しました", flush=True)
    print("a line on stderr", file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
