"""A session-wide real Slurm cluster for integration tests.

Use it from a test module with::

    from tests.integration.slurm_fixtures import slurm  # noqa: F401  (the fixture)

    def test_x(slurm: SlurmCluster) -> None:
        slurm.run("sbatch", ...)                  # client commands get SLURM_CONF
        subprocess.run([...], env=slurm.env)      # so must any process that calls Slurm

With CI=true a cluster that cannot start fails the test; elsewhere the test is skipped.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator

import pytest

from tests.support.services import unavailable
from tests.support.slurm import SlurmCluster, SlurmUnavailable, start_slurm


@pytest.fixture(scope="session")
def slurm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SlurmCluster]:
    try:
        cluster = start_slurm(tmp_path_factory.mktemp("slurm"))
    except (SlurmUnavailable, OSError, subprocess.SubprocessError) as exc:
        unavailable(f"cannot start Slurm: {exc}")
    yield cluster
    cluster.stop()


__all__ = ["SlurmCluster", "slurm"]
