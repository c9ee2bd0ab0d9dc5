"""Search sessions: start a search in a new work directory, or resume one, and run it on an executor.

What `explorer search`, `explorer resume` and `explorer bench` share, so that a bench entry is
exactly the search the CLI would run. A session runs on a store the caller opened for writing
(and closes); it never prints: progress goes to the caller's observer.

Invariants: a store's metadata holds the target, the options and the kernel's digest as the
search started; a resumed session uses them unchanged except for its own budget and workers,
and refuses a kernel that changed since. Which executor runs a session (a local pool, or Ray)
is never stored: each session runs on the one its own command line names, and the search cannot
tell them apart. Nor does a resumed session inherit whether children continue from snapshots
(explorer.search.boot_sharing) or how much of them to keep: each session chooses its own, on either
executor (Ray ships them through its object store: explorer.execution.ray_shipping); results are
the same either way, and the snapshots kept in the work directory serve every later session.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from explorer.corpus.initramfs import prints_marker
from explorer.errors import BadInput
from explorer.execution.executor import Executor
from explorer.execution.jobs import RunnerSetup
from explorer.execution.local import LocalPool
from explorer.firmware.boot_files import boot_files
from explorer.firmware.ingest import ingest, read_input
from explorer.firmware.model import Firmware
from explorer.runner.build import BUILD_COMMAND, PLUGIN
from explorer.runner.command import Plugin
from explorer.runner.kernel_hooks import STANDARD_OBSERVATION
from explorer.search.boot_sharing import DEFAULT_SNAPSHOT_LIMIT_BYTES, snapshot_cache
from explorer.search.engine import Observer, Search, SearchOptions
from explorer.search.initial import qemu_target
from explorer.search.state import Target
from explorer.search.strategy import strategy_named
from explorer.store import Store

EXECUTORS = ("local", "ray")


@dataclass(frozen=True)
class ExecutorChoice:
    """Which executor runs a session's jobs: `local`, a pool of worker processes on this machine,
    or `ray`, tasks on the Ray cluster at `address` (HOST:PORT)."""

    name: str = "local"
    address: str | None = None

    def __post_init__(self) -> None:
        if self.name not in EXECUTORS:
            raise BadInput(f"executor {self.name!r} is not one of: {', '.join(EXECUTORS)}")
        if self.name == "ray" and not self.address:
            raise BadInput("--executor ray needs the cluster's address: --address HOST:PORT or RAY_ADDRESS")


@contextmanager
def opened_executor(choice: ExecutorChoice, workers: int, setup: RunnerSetup) -> Iterator[Executor]:
    """The executor `choice` names, closed however the block ends (runs in flight are killed).

    `workers` sizes a local pool; a Ray cluster runs as many at once as it has CPUs.
    """
    executor: Executor
    if choice.name == "ray":
        assert choice.address is not None  # ExecutorChoice refuses ray without one
        try:
            from explorer.execution.ray_executor import RayExecutor
        except ImportError as error:
            if not (error.name or "").startswith("ray"):
                raise
            raise BadInput("--executor ray needs Ray: pip install 'explorer[ray]'") from None
        executor = RayExecutor(choice.address, setup)
    else:
        executor = LocalPool(workers, setup)
    try:
        yield executor
    finally:
        executor.close()


def create_search(work: Path, target: Target, options: SearchOptions) -> tuple[Store, Firmware, Target]:
    """A new store in `work` (which must not hold one) for this search, the firmware's facts, and
    the target the search boots: `target` with the kernel and initrd the firmware carries
    (explorer.firmware.boot_files) where they are not the file itself, kept in WORK/boot/ so the
    work directory is all a resumed search needs. An initrd the user gave wins over a carried one.
    The store's metadata says where each came from ("boot_files")."""
    strategy_named(options.strategy)
    qemu_target(ingest(target.kernel))  # a kernel no runner runs (AArch64) leaves no work directory
    booted, origins = _carried_target(work, target)
    if booted.initrd is not None:
        booted = dataclasses.replace(booted, prints_marker=prints_marker(read_input(booted.initrd, "initrd")))
    facts = ingest(booted.kernel, dtb=booted.dtb)
    metadata = {
        "target": booted.to_dict(),
        "options": options.to_dict(),
        "kernel_sha256": facts.sha256,
        "boot_files": origins,
    }
    return Store.create(work, metadata), facts, booted


def _carried_target(work: Path, target: Target) -> tuple[Target, dict[str, str]]:
    # Ingestion found the kernel's layers (cached by the file's hash): they say what to cut out.
    carried = boot_files(read_input(target.kernel, "firmware"), ingest(target.kernel).layers)
    origins = {"kernel": f"{target.kernel}", "initrd": f"{target.initrd}" if target.initrd else "none"}
    kernel, initrd = target.kernel, target.initrd
    if carried.kernel is not None:
        kernel = _kept(work, "kernel", carried.kernel.data)
        origins["kernel"] = f"{carried.kernel.origin} of {target.kernel}"
    if carried.initrd is not None and target.initrd is None:
        initrd = _kept(work, "initrd", carried.initrd.data)
        origins["initrd"] = f"{carried.initrd.origin} of {target.kernel}"
    return dataclasses.replace(target, kernel=kernel, initrd=initrd), origins


def _kept(work: Path, name: str, data: bytes) -> Path:
    """`data` in WORK/boot/, named by its digest, written atomically."""
    path = work / "boot" / f"{name}-{hashlib.sha256(data).hexdigest()[:16]}"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f".{path.name}.partial")
        partial.write_bytes(data)
        os.replace(partial, path)
    return path.resolve()


def resumed_session(
    store: Store,
    budget_seconds: float | None,
    workers: int,
    snapshots: bool = False,
    snapshot_limit_bytes: int = DEFAULT_SNAPSHOT_LIMIT_BYTES,
) -> tuple[Firmware, Target, SearchOptions]:
    """The firmware, target and options to continue the search in `store`.

    The budget is `budget_seconds`, or what is left of the search's own [default]; `workers`
    0 keeps the search's; `snapshots` and `snapshot_limit_bytes` are this session's own.
    """
    metadata = store.metadata()
    target = Target.from_dict(metadata["target"])
    options = SearchOptions.from_dict(metadata["options"])
    facts = ingest(target.kernel, dtb=target.dtb)
    if facts.sha256 != metadata["kernel_sha256"]:
        raise BadInput(f"{target.kernel} changed since the search started: restore it or start a new search")
    spent = float(store.counters().get("wall_seconds", 0.0))
    remaining = budget_seconds if budget_seconds is not None else max(options.budget_seconds - spent, 0.0)
    session = SearchOptions.from_dict(
        {
            **options.to_dict(),
            "budget_seconds": remaining,
            "workers": workers or options.workers,
            "snapshots": snapshots,
            "snapshot_limit_bytes": snapshot_limit_bytes,
        }
    )
    return facts, target, session


def runner_setup(qemu: Path) -> RunnerSetup:
    """What the runners need from the runner build in `qemu`; BadInput if it has no rehost plugin."""
    plugin_path = qemu / PLUGIN
    if not plugin_path.is_file():
        raise BadInput(f"no rehost plugin at {plugin_path}: {qemu} is not a runner build ({BUILD_COMMAND})")
    return RunnerSetup(qemu, Plugin(plugin_path, STANDARD_OBSERVATION))


def run_search(
    store: Store,
    facts: Firmware,
    target: Target,
    options: SearchOptions,
    setup: RunnerSetup,
    observer: Observer | None = None,
    executor: Executor | None = None,
) -> str:
    """Run the search until it ends; why it ended (explorer.search.engine.Search.run).

    On `executor`, which the caller opened and closes; None: a local pool of `options.workers`
    runners with `setup`, closed however the search ends (a KeyboardInterrupt goes through).
    With options.snapshots and a local pool, children continue from snapshots kept in the work
    directory (explorer.execution.snapshot_cache.SnapshotCache).
    """
    if executor is not None:
        return _search(store, facts, target, options, setup, executor, observer).run()
    with opened_executor(ExecutorChoice(), options.workers, setup) as pool:
        return _search(store, facts, target, options, setup, pool, observer).run()


def _search(
    store: Store,
    facts: Firmware,
    target: Target,
    options: SearchOptions,
    setup: RunnerSetup,
    executor: Executor,
    observer: Observer | None,
) -> Search:
    snapshots = None
    if options.snapshots:
        snapshots = snapshot_cache(store.directory, setup.qemu_dir, options.snapshot_limit_bytes)
    return Search(store, facts, target, options, executor, observer, snapshots=snapshots)
