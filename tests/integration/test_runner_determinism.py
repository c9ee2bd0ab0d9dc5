"""Determinism, the runner issue's acceptance: the same state and seed, five runs, byte-identical
serialized RunResults, with every observation on (hooks, initcalls, call stack, coverage, hot
loops, guest log, MMIO accesses recorded by the catch-all)."""

from __future__ import annotations

from pathlib import Path

import pytest

from explorer.corpus import Corpus
from explorer.firmware.ingest import ingest
from explorer.runner.boards import vexpress_a9
from explorer.runner.kernel_hooks import STANDARD_OBSERVATION, watching_kernel
from explorer.runner.launch import Plugin, RunnerLimits, run
from explorer.runner.rehost_pb2 import ExitReason
from explorer.runner.result import serialize
from tests.integration.rehosting import BOOT_DEADLINE_SECONDS

pytestmark = [pytest.mark.qemu, pytest.mark.corpus]
RUNS = 5


def test_five_runs_of_one_state_serialize_to_identical_bytes(qemu_build: Path, corpus: Corpus) -> None:
    kernel = corpus.kernel("armmp")
    config = vexpress_a9(kernel, corpus.dtb("armmp", "vexpress-v2p-ca9"), corpus.initramfs("armhf"))
    config = watching_kernel(config, ingest(kernel))
    config.seed = 20261125
    config.mmio_event_limit = 4096
    plugin = Plugin(qemu_build / "lib" / "librehost.so", STANDARD_OBSERVATION)
    limits = RunnerLimits(deadline_seconds=BOOT_DEADLINE_SECONDS)
    results = [run(config, qemu_build, plugin=plugin, limits=limits).result for _ in range(RUNS)]
    first = results[0]
    assert first.exit.reason == ExitReason.EXIT_USER_SPACE and not first.partial
    assert first.mmio_accesses and first.log and first.call_stack.frames and first.coverage.instructions
    assert {serialize(result) for result in results} == {serialize(first)}
