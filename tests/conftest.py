"""Every test run keeps the site audit log's default dir out of the real home directory.

Site configs that set no ``[site] audit_dir`` (most tests') write to
``$XDG_STATE_HOME/mint-bridge/audit``: here a temporary dir for the run, inherited by the site
entries and agents the tests start (sshd gives its sessions their own environment; the sshd
tests' site config sets ``audit_dir``).
"""

from __future__ import annotations

import os
import shutil
import tempfile

import pytest

_STATE = tempfile.mkdtemp(prefix="mint-bridge-state-")


def pytest_configure(config: pytest.Config) -> None:
    os.environ["XDG_STATE_HOME"] = _STATE


def pytest_unconfigure(config: pytest.Config) -> None:
    shutil.rmtree(_STATE, ignore_errors=True)
