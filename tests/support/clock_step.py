"""A process whose wall clock a test steps while it runs: libfaketime with a timestamp file.

``ClockStep.env()`` goes into the environment of the process (and is inherited by its
children); ``step(seconds)`` moves that process's wall clock by ``seconds`` at once, as an NTP
step or an operator's ``date -s`` would. The monotonic clock is left alone, as a real step
leaves it (``FAKETIME_DONT_FAKE_MONOTONIC``). ``FAKETIME_NO_CACHE`` makes libfaketime read the
file on every call, so a step takes effect at the process's next reading of the clock.

A small shim is compiled with the system C compiler and loaded first: see
``clock_shim.c`` for the libfaketime defect it works around.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from tests.support.services import unavailable

LIBFAKETIME = Path("/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1")
SHIM_SOURCE = Path(__file__).with_name("clock_shim.c")


def _compile_shim(directory: Path) -> Path:
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        unavailable("no C compiler (package gcc) to build the libfaketime shim")
    shim = directory / "clock_shim.so"
    done = subprocess.run([compiler, "-shared", "-fPIC", "-O2", "-o", str(shim),
                           str(SHIM_SOURCE), "-ldl"], capture_output=True, text=True,
                          check=False)  # fmt: skip
    if done.returncode != 0:
        unavailable(f"cannot build the libfaketime shim: {done.stderr.strip()}")
    return shim


def sweep_stale_shared_memory(shm: Path = Path("/dev/shm")) -> list[str]:
    """Remove libfaketime's shared memory and semaphore of processes that have ended.

    The first process under libfaketime creates ``faketime_shm_<pid>`` and
    ``sem.faketime_sem_<pid>`` and removes them when it exits normally; a process killed with
    SIGKILL (as the proof scenarios do) leaves them, and a later process under libfaketime
    that gets the same pid then fails to start (``shm_open failed: File exists``)."""
    removed = []
    for pattern, prefix in (("faketime_shm_*", "faketime_shm_"),
                            ("sem.faketime_sem_*", "sem.faketime_sem_")):  # fmt: skip
        for path in shm.glob(pattern):
            pid = path.name.removeprefix(prefix)
            if pid.isdigit() and not Path(f"/proc/{pid}").exists():
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
                    removed.append(path.name)
    return removed


class ClockStep:
    def __init__(self, directory: Path) -> None:
        if not LIBFAKETIME.exists():
            unavailable(f"{LIBFAKETIME} is missing; install the Debian package faketime")
        sweep_stale_shared_memory()
        directory.mkdir(parents=True, exist_ok=True)
        self.shim = _compile_shim(directory)
        self.file = directory / "faketime.rc"
        self.offset = 0.0
        self._write()

    def env(self) -> dict[str, str]:
        return {
            "LD_PRELOAD": f"{self.shim}:{LIBFAKETIME}",
            "FAKETIME_TIMESTAMP_FILE": str(self.file),
            "FAKETIME_NO_CACHE": "1",
            "FAKETIME_DONT_FAKE_MONOTONIC": "1",
        }

    def step(self, seconds: float) -> None:
        """Move the wall clock of every process started with ``env()`` by ``seconds``."""
        self.offset += seconds
        self._write()

    def _write(self) -> None:
        # Replaced whole, so that a process never reads half a line.
        partial = self.file.with_suffix(".partial")
        partial.write_text(f"{self.offset:+.0f}\n")
        partial.replace(self.file)

    def probe(self) -> tuple[float, bool]:
        """The wall-clock offset a Python under ``env()`` sees (whole seconds), and whether its
        monotonic clock is the machine's (read between two readings of ours) after a sleep."""
        code = "import time; time.sleep(0.01); print(time.time(), time.monotonic())"
        wall0, mono0 = time.time(), time.monotonic()
        done = subprocess.run([sys.executable, "-c", code], env={**os.environ, **self.env()},
                              capture_output=True, text=True, check=False)  # fmt: skip
        wall1, mono1 = time.time(), time.monotonic()
        assert done.returncode == 0, done.stderr
        wall, mono = (float(word) for word in done.stdout.split())
        offset = self.offset
        assert wall0 + offset <= wall <= wall1 + offset, (wall0, wall, wall1, offset)
        return offset, mono0 <= mono <= mono1


def hours_stepped(log_text: str, job_id: str) -> int:
    """Whole hours between the first and the last log line of ``job_id`` in a log whose lines
    start with their time (``2026-12-03 18:54:16,938 ...``): the step a process's own log shows
    it took, whatever else the job did in between."""
    stamps = [dt.datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f")
              for line in log_text.splitlines() if f"{job_id}:" in line]  # fmt: skip
    assert stamps, f"no log line of {job_id}"
    return round((stamps[-1] - stamps[0]).total_seconds() / 3600)
