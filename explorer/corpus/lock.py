"""The corpus lock: which Debian package, at which version and digest, each corpus entry was made of.

Debian's archive moves on (a kernel upload is superseded and its .deb leaves the pool within
weeks), so "the newest armmp" names different bytes each month. The lock, committed in the
repository beside this module, names the exact packages the tests and BENCHMARKS.md were
measured on: `explorer corpus fetch` takes the locked version where the archive still serves it
and says in one line when it had to take another. `explorer corpus fetch --update-lock` moves
the lock to what the archive serves today.

This module reads and writes the lock file only; it never downloads anything.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from explorer.corpus.apt import PackageVersion
from explorer.errors import CorpusError

LOCK_PATH = Path(__file__).resolve().parent / "lock.json"
LOCK_FORMAT_VERSION = 1


@dataclass(frozen=True)
class CorpusLock:
    """Locked packages: each kernel flavour's, and each architecture's busybox-static."""

    kernels: dict[str, PackageVersion]  # by corpus flavour ("armmp", "rpi-6.12", ...)
    busybox: dict[str, PackageVersion]  # by Debian architecture

    def to_dict(self) -> dict[str, Any]:
        return {
            "format_version": LOCK_FORMAT_VERSION,
            "kernels": {name: asdict(p) for name, p in sorted(self.kernels.items())},
            "busybox": {arch: asdict(p) for arch, p in sorted(self.busybox.items())},
        }

    def moved(self, kernels: dict[str, PackageVersion], busybox: dict[str, PackageVersion]) -> CorpusLock:
        """This lock with the given entries replaced (entries not given keep their locked version)."""
        return CorpusLock({**self.kernels, **kernels}, {**self.busybox, **busybox})


def read_lock(path: Path = LOCK_PATH) -> CorpusLock:
    """The lock at `path`; an absent lock is an empty one (every entry then takes the newest upload)."""
    try:
        d = json.loads(path.read_text())
    except FileNotFoundError:
        return CorpusLock({}, {})
    except (OSError, ValueError) as err:
        raise CorpusError(f"the corpus lock {path} is unreadable ({err}): restore it with git") from err
    if not isinstance(d, dict) or d.get("format_version") != LOCK_FORMAT_VERSION:
        raise CorpusError(
            f"the corpus lock {path} is of another format than this explorer's "
            f"({LOCK_FORMAT_VERSION}): use the explorer it came with, or restore it with git"
        )
    try:
        return CorpusLock(
            {name: PackageVersion(**p) for name, p in d["kernels"].items()},
            {arch: PackageVersion(**p) for arch, p in d["busybox"].items()},
        )
    except (KeyError, TypeError, AttributeError) as err:
        raise CorpusError(f"the corpus lock {path} is malformed ({err}): restore it with git") from err


def write_lock(lock: CorpusLock, path: Path = LOCK_PATH) -> None:
    """Replace the lock atomically."""
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(json.dumps(lock.to_dict(), indent=2, sort_keys=True) + "\n")
    os.replace(partial, path)
