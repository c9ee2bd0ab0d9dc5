"""Fixtures shared by every test: the real-kernel corpus.

Tests that take the `corpus` fixture are marked `corpus` automatically, so
`pytest -m "not corpus"` runs everything that needs neither network nor the cache.
"""

from __future__ import annotations

import os
import warnings

import pytest
from hypothesis import settings

import explorer.corpus
from explorer.corpus import Corpus

# CI replays the same examples every run, so a landing is judged on a reproducible suite; on a
# developer's machine hypothesis explores new examples each run (and keeps failures in .hypothesis/).
# No per-example deadline: the machine is shared, and a slow example is not a failing one.
settings.register_profile("shared", deadline=None)
settings.register_profile("ci", parent=settings.get_profile("shared"), derandomize=True, print_blob=True)
settings.load_profile("ci" if os.environ.get("CI") else "shared")


@pytest.fixture(scope="session")
def corpus() -> Corpus:
    """The real Debian kernels, DTBs, busybox and initramfs images at the versions the corpus lock
    names; fetched on first use (about 250 MB, a few minutes), then only verified (seconds).

    A flavour Debian serves no version of at all is left out with a warning: the tests that boot
    it fail, saying which `explorer corpus fetch` to run, and the others run."""
    outcome = explorer.corpus.fetch()
    for flavour, why in sorted(outcome.missing.items()):
        warnings.warn(f"corpus: {flavour} could not be fetched: {why}", stacklevel=1)
    return outcome.corpus


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "corpus" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.corpus)
