"""The runner build: which one a command runs on, where its sources are, and what is in it.

native/build.py builds our QEMU and the rehost plugin into a directory of the cache named by a
content hash of everything that makes it: the build identity. This module is the one place that
knows that directory's layout (bin/qemu-system-TARGET, lib/librehost.so, include/qemu-plugin.h,
manifest.json), where the native sources are, and which build a command runs on: the directory
given (--qemu, $EXPLORER_QEMU), else this explorer's pinned build in the cache, whose identity
it computes from the native sources without building anything. Everything else (native/build.py
too) asks it rather than spelling a path out.

The native sources are the checkout's native/ and proto/; an installed (not editable) package
carries a copy of both in explorer/_sources/ (setup.py), so it computes the same identity and
can run the same build. Nothing here runs QEMU, and nothing builds except `build`.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from explorer.errors import BadInput, ExplorerError, RunnerBuildFailed, RunnerNotBuilt
from explorer.paths import cache_root

# The qemu-system-TARGET binaries a build holds: the MachineConfig targets it can run.
TARGETS = ("arm", "aarch64", "mipsel", "mips")
PLUGIN = "lib/librehost.so"
PLUGIN_HEADER = "include/qemu-plugin.h"
# Written last, by rename of the whole directory: a directory with one is a finished build.
MANIFEST = "manifest.json"
# The only instruction a user is given when there is no build, or a wrong one.
BUILD_COMMAND = "explorer runner build"

# Where setup.py puts native/ and proto/ inside an installed package (beside explorer's modules).
PACKAGED_SOURCES = "_sources"
# The name native/build.py is loaded under (it is a script of the checkout, not a module of ours).
_NATIVE_BUILD_MODULE = "explorer_native_build"


def binary(target: str) -> str:
    """Where a build directory holds the QEMU of `target` (a MachineConfig target, e.g. arm)."""
    return f"bin/qemu-system-{target}"


def build_identity(directory: Path) -> str:
    """The build a directory holds: native/build.py names each result directory by its content hash."""
    return directory.resolve().name


def builds_directory(cache: Path) -> Path:
    """Where native/build.py keeps its results, one directory per identity, in the cache `cache`."""
    return cache / "qemu"


def source_root() -> Path:
    """The directory holding native/ and proto/: the installed package's copy, else the checkout's."""
    package = Path(__file__).resolve().parents[1]
    packaged = package / PACKAGED_SOURCES
    return packaged if (packaged / "native").is_dir() else package.parent


def native_build() -> ModuleType:
    """native/build.py as a module (loaded once per process): the build's inputs, identity and steps."""
    if (loaded := sys.modules.get(_NATIVE_BUILD_MODULE)) is not None:
        return loaded
    script = source_root() / "native" / "build.py"
    spec = importlib.util.spec_from_file_location(_NATIVE_BUILD_MODULE, script)
    if spec is None or spec.loader is None or not script.is_file():
        raise ExplorerError(f"this explorer has no native sources at {script.parent}: reinstall it")
    module = importlib.util.module_from_spec(spec)
    # Registered before it runs, as an import would: its dataclasses look their module up by name.
    sys.modules[_NATIVE_BUILD_MODULE] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[_NATIVE_BUILD_MODULE]
        raise
    return module


@dataclass(frozen=True)
class PinnedBuild:
    """One build this explorer's native sources make: its identity and the manifest it must carry."""

    identity: str
    manifest: dict[str, object]


def pinned_builds() -> tuple[PinnedBuild, ...]:
    """The builds of this explorer, one per pinned QEMU source (native/build.py builds the first it finds)."""
    return tuple(PinnedBuild(identity, manifest) for identity, manifest in native_build().pinned_results())


def pinned_build() -> Path | None:
    """This explorer's finished build in the cache (explorer.paths.cache_root()), if there is one."""
    builds = builds_directory(cache_root())
    for pinned in pinned_builds():
        if (builds / pinned.identity / MANIFEST).is_file():
            return builds / pinned.identity
    return None


def find_runner(override: Path | None) -> Path:
    """The build directory to run: `override` (--qemu, $EXPLORER_QEMU) when given, else the pinned build.

    An override is taken as it is (a run says what it lacks); without one, RunnerNotBuilt when
    the cache has no build of this explorer: one line naming the one command that builds it.
    """
    if override is not None:
        return override
    found = pinned_build()
    if found is None:
        identity = pinned_builds()[0].identity
        where = builds_directory(cache_root()) / identity
        raise RunnerNotBuilt(f"no runner build for this explorer at {where}: build it with `{BUILD_COMMAND}`")
    return found


def check_build(directory: Path) -> None:
    """BadInput, in one line saying what is wrong, unless `directory` is this explorer's whole build."""
    if not directory.is_dir():
        raise RunnerNotBuilt(f"runner build {directory} does not exist: build it with `{BUILD_COMMAND}`")
    if problems := build_problems(directory):
        raise BadInput(f"runner build {directory} {'; '.join(problems)}: rebuild it with `{BUILD_COMMAND}`")


def build_problems(directory: Path) -> list[str]:
    """What keeps the build directory `directory` from being this explorer's whole build, if anything."""
    problems = []
    wanted = [binary(target) for target in TARGETS] + [PLUGIN, PLUGIN_HEADER, MANIFEST]
    missing = [path for path in wanted if not (directory / path).is_file()]
    if missing:
        problems.append(f"lacks {', '.join(missing)}")
    binaries = [binary(target) for target in TARGETS if binary(target) not in missing]
    if unrunnable := [path for path in binaries if not os.access(directory / path, os.X_OK)]:
        problems.append(f"cannot execute {', '.join(unrunnable)}")
    pinned = {build.identity: build for build in pinned_builds()}
    identity = build_identity(directory)
    if identity not in pinned:
        problems.append(f"is build {identity}, not this explorer's {' or '.join(pinned)}")
    elif MANIFEST not in missing:
        try:
            manifest = json.loads((directory / MANIFEST).read_text())
        except (OSError, ValueError) as error:
            problems.append(f"has an unreadable {MANIFEST} ({error})")
        else:
            manifest = manifest if isinstance(manifest, dict) else {}
            differing = sorted(
                key
                for key in {*manifest, *pinned[identity].manifest}
                if manifest.get(key) != pinned[identity].manifest.get(key)
            )
            if differing:
                problems.append(f"has a {MANIFEST} other than its sources make ({', '.join(differing)})")
    return problems


def build(tarball: Path | None, jobs: int) -> Path:
    """Build this explorer's runner (progress on stderr), or find it already built; its directory.

    A pinned build that `check_build` refuses (a file lost or changed since it was made) is
    removed first and made again: native/build.py takes any directory with a manifest as done.
    """
    native = native_build()
    found = pinned_build()
    if found is not None and (problems := build_problems(found)):
        print(f"explorer: the runner build {found} {'; '.join(problems)}: building it again", file=sys.stderr)
        shutil.rmtree(found)
    try:
        return Path(native.build_qemu(tarball, jobs))
    except native.BuildError as error:
        raise RunnerBuildFailed(f"the runner build failed: {error}") from None
