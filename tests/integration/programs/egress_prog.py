#!/usr/bin/env python3
"""A site program for the egress tests: leaves in its work dir what the policy must handle.

    unreadable CODE         ok.txt, a mode-000 file, a FIFO; exits CODE
    copy SRC CODE           ok.txt and SRC copied as model_copy.dat; exits CODE
    stamp SRC               ok.txt, model_copy.dat, and SRC's bytes after a line of its own
                            as stamped.txt (not identical to SRC, but it holds its marker)
    sparse                  ok.txt and a sparse 1 TiB file (a hole: no disk is used)
    sizes                   ok.txt, small.dat (10 B), mid.dat (1000 B), big.dat (5000 B),
                            notes.log, keep.csv
"""

import os
import shutil
import sys


def ok() -> None:
    with open("ok.txt", "w") as out:
        out.write("a result that may leave\n")


def unreadable(code: int) -> int:
    ok()
    with open("locked.dat", "w") as out:
        out.write("nobody may read this\n")
    os.chmod("locked.dat", 0)
    os.mkfifo("pipe")
    return code


def copy(source: str, code: int) -> int:
    ok()
    shutil.copyfile(source, "model_copy.dat")  # byte-identical, under another name
    return code


def stamp(source: str) -> int:
    copy(source, 0)
    with open(source, "rb") as src, open("stamped.txt", "wb") as out:
        out.write(b"derived from the model:\n" + src.read())  # not identical, still marked
    return 0


def sparse() -> int:
    ok()
    with open("huge.bin", "wb") as out:
        out.truncate(1 << 40)
    return 0


def sizes() -> int:
    ok()
    for name, size in (("small.dat", 10), ("mid.dat", 1000), ("big.dat", 5000)):
        with open(name, "wb") as out:
            out.write(b"x" * size)
    for name in ("notes.log", "keep.csv"):
        with open(name, "w") as out:
            out.write(name + "\n")
    return 0


def main() -> int:
    mode, args = sys.argv[1], sys.argv[2:]
    print(f"egress_prog {mode}", flush=True)
    if mode == "unreadable":
        return unreadable(int(args[0]))
    if mode == "copy":
        return copy(args[0], int(args[1]))
    if mode == "stamp":
        return stamp(args[0])
    if mode == "sparse":
        return sparse()
    if mode == "sizes":
        return sizes()
    raise SystemExit(f"unknown mode {mode}")


if __name__ == "__main__":
    sys.exit(main())
