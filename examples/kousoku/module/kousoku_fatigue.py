#!/usr/bin/env python3
"""MInt module program (Python form of kousoku_fatigue.sh): fast fatigue prediction at an
external site, through mint-bridge. Same arguments, same behaviour, same exit codes.
Settings: MINT_BRIDGE_SITE (default rme-u-tokyo), MINT_BRIDGE (the mint-bridge command).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

INPUT_PORTS = ("yield_strength", "tensile_strength", "reduction_area")
OUTPUT_PORTS = {"sscurve": "sscurve.csv", "fatigue_result": "fatigue_result.txt"}


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # usage errors exit 64 (EX_USAGE), like the .sh
        print(f"kousoku_fatigue: {message}", file=sys.stderr)
        sys.exit(64)


def parse(argv: list[str]) -> argparse.Namespace:
    parser = Parser(description=__doc__)
    for port in INPUT_PORTS:
        parser.add_argument(f"--{port}", required=True)
    for port in OUTPUT_PORTS:
        parser.add_argument(f"--{port}")
    parser.add_argument("--cycles", type=int)
    return parser.parse_args(argv)


def main(argv: list[str]) -> int:
    args = parse(argv)
    bridge = os.environ.get("MINT_BRIDGE", "mint-bridge")
    site = os.environ.get("MINT_BRIDGE_SITE", "rme-u-tokyo")
    with tempfile.TemporaryDirectory(prefix="kousoku.") as stage:
        command = [bridge, "run", "--site", site, "--command", "fatigue", "-o", "results"]
        for port in INPUT_PORTS:
            real = Path(getattr(args, port)).resolve()
            if not real.is_file():
                print(
                    f"kousoku_fatigue: --{port} {getattr(args, port)} is not a file",
                    file=sys.stderr,
                )
                return 64
            link = Path(stage) / f"{port}.dat"
            link.symlink_to(real)
            command += ["-i", str(link)]
        if args.cycles is not None:
            command += ["-p", f"cycles={args.cycles}"]
        code = subprocess.run(command, check=False).returncode
    if code != 0:
        return code
    for port, name in OUTPUT_PORTS.items():
        target = getattr(args, port)
        if target:
            link = Path(target)
            if link.is_symlink() or link.exists():
                link.unlink()
            link.symlink_to((Path("results") / name).resolve())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
