#!/usr/bin/env python3
"""A small site program for the integration tests; its first argument picks what it does."""

import hashlib
import json
import os
import sys
import time


def checksum() -> None:
    names = sorted(n for n in os.listdir(".") if not n.startswith(".") and os.path.isfile(n))
    with open("sums.txt", "w") as out:
        for name in names:
            with open(name, "rb") as handle:
                out.write(f"{hashlib.sha256(handle.read()).hexdigest()}  {name}\n")
    os.makedirs("sub/dir", exist_ok=True)
    with open("sub/dir/nested.txt", "w") as out:
        out.write("nested result\n")
    print(f"checked {len(names)} files", flush=True)
    print("a line on stderr", file=sys.stderr, flush=True)


def ticks(count: int, delay: float) -> None:
    for i in range(count):
        print(f"tick {i}", flush=True)
        time.sleep(delay)
    with open("ticks.txt", "w") as out:
        out.write(f"{count}\n")


def links(target: str) -> None:
    with open("result.txt", "w") as out:
        out.write("real result\n")
    os.symlink(target, "leak")
    os.symlink(".", "loop")
    os.symlink("result.txt", "inside")
    os.symlink(os.path.dirname(target), "leakdir")
    os.mkfifo("fifo")


def once(counter: str, seconds: float) -> None:
    with open(counter, "a") as out:
        out.write(f"{os.getpid()}\n")
    for i in range(int(seconds * 10)):
        if i % 10 == 0:
            print(f"working {i // 10}", flush=True)
        time.sleep(0.1)
    with open("done.txt", "w") as out:
        out.write("done\n")


def main() -> int:
    mode, args = sys.argv[1], sys.argv[2:]
    if mode == "checksum":
        checksum()
    elif mode == "exit":
        print("about to fail", flush=True)
        print("failure detail", file=sys.stderr, flush=True)
        return int(args[0])
    elif mode == "ticks":
        ticks(int(args[0]), float(args[1]))
    elif mode == "argv":
        with open("argv.json", "w") as out:
            json.dump(args, out)
    elif mode == "links":
        links(args[0])
    elif mode == "once":
        once(args[0], float(args[1]))
    elif mode == "markup":
        # Log lines and a result name that a web page must show as text, never run.
        print('<script>window.__pwned = "log"; alert("log")</script>', flush=True)
        print("<img src=x onerror=\"window.__pwned='img'\"> & done", flush=True)
        with open("<svg onload=alert(1)>.txt", "w") as out:
            out.write("markup result\n")
    elif mode == "big":
        size = int(args[0])
        block = os.urandom(1 << 20)
        with open("big.out", "wb") as out:
            for _ in range(size >> 20):
                out.write(block)
    return 0


if __name__ == "__main__":
    sys.exit(main())
