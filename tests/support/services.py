"""What a test does when a real service (sshd, Slurm, the broker) cannot be started here.

With CI=true such a test fails, because CI installs every service and a missing one is a broken
setup; elsewhere it is skipped, so a workstation without Slurm can still run the rest.
"""

from __future__ import annotations

import os
from typing import NoReturn

import pytest

IN_CI = os.environ.get("CI", "").lower() == "true"


def unavailable(message: str) -> NoReturn:
    """Fail the test in CI, skip it elsewhere; ``message`` says what could not start and why."""
    if IN_CI:
        pytest.fail(f"required service unavailable in CI: {message}")
    pytest.skip(message)
