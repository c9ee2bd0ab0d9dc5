"""Packaging beyond pyproject.toml: an installed explorer carries its runner's native sources.

explorer.runner.build computes the runner build's identity from native/ and proto/ and runs
native/build.py from them. A wheel (a `pip install` that is not editable) copies both into the
package, where explorer.runner.build looks first; an editable install reads the checkout's own.
"""

import shutil
import sys
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))

from explorer.runner.build import PACKAGED_SOURCES  # noqa: E402  (stdlib only: no dependency needed)

SOURCE_DIRECTORIES = ("native", "proto")


class BuildPyWithNativeSources(build_py):
    """build_py, then native/ and proto/ copied into explorer/PACKAGED_SOURCES/ of the build."""

    def run(self) -> None:
        super().run()
        if self.editable_mode:
            return
        destination = Path(self.build_lib) / "explorer" / PACKAGED_SOURCES
        for name in SOURCE_DIRECTORIES:
            shutil.rmtree(destination / name, ignore_errors=True)
            shutil.copytree(ROOT / name, destination / name, ignore=shutil.ignore_patterns("__pycache__"))


setup(cmdclass={"build_py": BuildPyWithNativeSources})
