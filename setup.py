"""Build hook: the wheel carries ``examples/`` as package data (``bridge/_examples``).

Everything else is in pyproject.toml. The examples stay at the top of the source tree, where
the README and the tests name them; only the built package gets a copy.
"""

from __future__ import annotations

import os
import shutil

from setuptools import setup
from setuptools.command.build_py import build_py


class BuildPyWithExamples(build_py):
    def run(self) -> None:
        super().run()
        if self.editable_mode:
            return  # an editable install reads the checkout's examples/ directly
        target = os.path.join(self.build_lib, "bridge", "_examples")
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree("examples", target, ignore=shutil.ignore_patterns("__pycache__"))


setup(cmdclass={"build_py": BuildPyWithExamples})
