"""What setup can find out by itself on a site: schedulers, Python, mint-bridge, disk.

Detection only looks (``PATH`` lookups, file heads, ``statvfs``); it never runs a scheduler
command, so it is quick and has no side effects even where a scheduler is misconfigured.
"""

from __future__ import annotations

import os
import shutil
import sys
from dataclasses import dataclass

import psutil

MIN_PYTHON = (3, 11)


@dataclass(frozen=True)
class Detected:
    schedulers: tuple[str, ...]  # candidates found on PATH, most specific first
    python: str
    python_ok: bool
    mint_bridge: str | None  # absolute path of the mint-bridge command of this installation
    work_base_free: int | None  # bytes free where the work base is (or would be)


def detect(work_base: str) -> Detected:
    version = ".".join(str(part) for part in sys.version_info[:3])
    return Detected(
        schedulers=detect_schedulers(),
        python=f"{version} ({sys.executable})",
        python_ok=sys.version_info[:2] >= MIN_PYTHON,
        mint_bridge=find_mint_bridge(),
        work_base_free=free_bytes(work_base),
    )


def detect_schedulers(path: str | None = None) -> tuple[str, ...]:
    """Schedulers whose client commands are on ``path`` (default: ``$PATH``)."""
    found: list[str] = []
    if shutil.which("sbatch", path=path) and shutil.which("sinfo", path=path):
        found.append("slurm")
    qsub = shutil.which("qsub", path=path)
    if qsub and shutil.which("qstat", path=path) and not _is_slurm_wrapper(qsub):
        # PBS Pro / OpenPBS ship pbs_rsub and pbs_release_nodes; Torque ships momctl.
        if shutil.which("pbs_rsub", path=path) or shutil.which("pbs_release_nodes", path=path):
            found.append("pbspro")
        elif shutil.which("momctl", path=path):
            found.append("torque")
        else:
            found.extend(["torque", "pbspro"])  # cannot tell without asking the admin
    return tuple(found)


def _is_slurm_wrapper(path: str) -> bool:
    """Slurm's Torque-style ``qsub`` (slurm-wlm-torque) is a Perl script over Slurm."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(4096)
    except OSError:
        return False
    head = head.lower()
    return head.startswith(b"#!") and (b"slurm" in head or b"schedmd" in head)


def find_mint_bridge() -> str | None:
    """The ``mint-bridge`` next to this Python (same installation), else the one on PATH."""
    sibling = os.path.join(os.path.dirname(sys.executable), "mint-bridge")
    if os.access(sibling, os.X_OK):
        return os.path.abspath(sibling)
    found = shutil.which("mint-bridge")
    return os.path.abspath(found) if found else None


def free_bytes(path: str) -> int | None:
    """Free bytes on the file system that holds ``path`` (or its nearest existing parent)."""
    probe = os.path.abspath(path)
    while not os.path.exists(probe) and probe != os.path.dirname(probe):
        probe = os.path.dirname(probe)
    try:
        return int(psutil.disk_usage(probe).free)
    except OSError:
        return None
