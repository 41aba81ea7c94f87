"""Reading a MInt PBS job's remaining walltime."""

from __future__ import annotations

import time

import pytest

from bridge.client import mint_pbs

# `qstat -f -1` of a running Torque 6.1 job (attributes one per line thanks to -1).
QSTAT = """Job Id: 4242.mint-pbs
    Job_Name = kousoku
    job_state = R
    queue = batch
    Resource_List.walltime = 01:00:00
    resources_used.walltime = 00:10:30
    exec_host = ssh-node01/0
"""


def test_remaining_walltime_from_qstat() -> None:
    assert mint_pbs.parse_qstat_walltime(QSTAT) == 3600 - 630


def test_no_walltime_in_qstat() -> None:
    assert mint_pbs.parse_qstat_walltime("Job Id: 1\n    job_state = Q\n") is None
    assert mint_pbs.hms_seconds("1:02:03") == 3723
    assert mint_pbs.hms_seconds("soon") is None


def test_outside_pbs_nothing_is_detected() -> None:
    assert mint_pbs.detect({}) is None


def test_env_fallback_and_metadata(monkeypatch: pytest.MonkeyPatch) -> None:
    # The job script started 100 s ago (not this test process, which may be older than 900 s).
    monkeypatch.setattr(mint_pbs, "_job_start_time", lambda job_id: time.time() - 100)
    ctx = mint_pbs.detect({"PBS_JOBID": "77.nowhere-such-server", "PBS_WALLTIME": "900",
                      "PBS_O_WORKDIR": "/m/dir", "PBS_QUEUE": "q"})  # fmt: skip
    assert ctx is not None
    assert ctx.metadata() == {"mint_job_id": "77.nowhere-such-server", "module_dir": "/m/dir",
                              "mint_queue": "q"}  # fmt: skip
    assert ctx.remaining_walltime is not None and 795 < ctx.remaining_walltime <= 800
