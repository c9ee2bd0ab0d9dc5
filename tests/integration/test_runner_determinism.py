"""Determinism, the runner issue's acceptance: the same state and seed, five runs, byte-identical
serialized RunResults, with every observation on (hooks, initcalls, call stacks, coverage, hot
loops, guest log, MMIO accesses recorded by the catch-all); and a ticking guest that idles ends
alike however busy QEMU's main loop is."""

from __future__ import annotations

import socket
import tempfile
import threading
import time
from dataclasses import dataclass, field
from itertools import chain, repeat
from pathlib import Path
from typing import BinaryIO

import pytest

from explorer.corpus import Corpus
from explorer.firmware.ingest import ingest
from explorer.runner import launch
from explorer.runner.boards import vexpress_a9
from explorer.runner.build import PLUGIN
from explorer.runner.command import Plugin
from explorer.runner.containment import RunnerLimits
from explorer.runner.kernel_hooks import STANDARD_OBSERVATION, watching_kernel
from explorer.runner.launch import run
from explorer.runner.rehost_pb2 import ExitReason
from explorer.runner.result import serialize
from tests.integration.rehosting import BOOT_DEADLINE_SECONDS, boot_state, ticking_idle_am335x

pytestmark = [pytest.mark.qemu, pytest.mark.corpus]
RUNS = 5


def test_five_runs_of_one_state_serialize_to_identical_bytes(qemu_build: Path, corpus: Corpus) -> None:
    kernel = corpus.kernel("armmp")
    config = vexpress_a9(kernel, corpus.dtb("armmp", "vexpress-v2p-ca9"), corpus.initramfs("armhf"))
    config = watching_kernel(config, ingest(kernel))
    config.seed = 20261125
    config.mmio_event_limit = 4096
    plugin = Plugin(qemu_build / PLUGIN, STANDARD_OBSERVATION)
    limits = RunnerLimits(deadline_seconds=BOOT_DEADLINE_SECONDS)
    results = [run(config, qemu_build, plugin=plugin, limits=limits).result for _ in range(RUNS)]
    first = results[0]
    assert first.exit.reason == ExitReason.EXIT_USER_SPACE and not first.partial
    assert first.mmio_accesses and first.log and first.coverage.instructions
    # At the first user-space instruction the thread that ran last (init, once kernel_init) has
    # returned from all its calls; the other kernel threads' stacks are there.
    assert not first.call_stack.frames and len(first.threads) > 20
    assert {serialize(result) for result in results} == {serialize(first)}


@dataclass
class MainLoopWaker:
    """QMP `query-status` in a loop, from as soon as QEMU listens until it exits: nothing the guest
    can see, but QEMU's main loop wakes for each. Counts the replies, and whether the connection
    lasted until QEMU went away (it then closes it)."""

    socket_path: Path
    stop: threading.Event = field(default_factory=threading.Event)
    answered: int = 0
    connected_to_the_end: bool = False

    def run(self) -> None:
        while not self.stop.is_set():
            connection = socket.socket(socket.AF_UNIX)
            try:
                connection.connect(str(self.socket_path))
            except OSError:  # QEMU does not listen yet, or any more
                connection.close()
                time.sleep(0.01)
                continue
            with connection:
                self._keep_awake(connection.makefile("rwb"))

    def _keep_awake(self, stream: BinaryIO) -> None:
        try:
            stream.readline()
            greeting = [b'{"execute":"qmp_capabilities"}\n']
            for command in chain(greeting, repeat(b'{"execute":"query-status"}\n')):
                if self.stop.is_set():
                    return
                stream.write(command)
                stream.flush()
                if not stream.readline():
                    break
                self.answered += 1
        except (BrokenPipeError, ConnectionResetError):
            pass
        self.connected_to_the_end = self.answered > 0  # QEMU went away while connected


def test_a_guest_idling_between_ticks_ends_alike_however_busy_qemus_main_loop_is(
    qemu_build: Path, corpus: Corpus, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Each tick wakes QEMU's main loop; a main loop that warped the guest clock, or ended the
    # run, while the CPU was between its WFI and accounting its instructions made the exit's
    # time, log and call stack vary (4 of 4 runs with the main loop kept awake, before the fix).
    state, target, firmware = ticking_idle_am335x(corpus)
    quiet = boot_state(state, target, firmware, qemu_build)
    assert quiet.exit.detail.startswith("idle: the guest's clock reached"), quiet.exit

    # A short path: tmp_path can exceed the 108 bytes of a Unix socket's name.
    socket_path = Path(tempfile.mkdtemp(prefix="qmp-", dir="/tmp")) / "s"
    plain_command_line = launch.command_line
    monkeypatch.setattr(
        launch,
        "command_line",
        lambda *args, **kwargs: [
            *plain_command_line(*args, **kwargs),
            "-qmp",
            f"unix:{socket_path},server=on,wait=off",
        ],
    )
    for _ in range(2):
        waker = MainLoopWaker(socket_path)
        thread = threading.Thread(target=waker.run)
        thread.start()
        try:
            busy = boot_state(state, target, firmware, qemu_build)
        finally:
            waker.stop.set()
            thread.join()
        socket_path.unlink(missing_ok=True)
        # Kept awake for the whole run however fast the machine: connected once QEMU listened (it
        # retries every 10 ms), answered, and still connected when QEMU exited.
        assert waker.connected_to_the_end, "the main loop was not kept awake"
        assert serialize(busy) == serialize(quiet)
    socket_path.parent.rmdir()
