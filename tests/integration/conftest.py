"""Fixtures several integration tests share: the armmp kernel in every form a firmware may carry it,
our QEMU build, and a real local Ray cluster."""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from explorer.corpus import Corpus
from explorer.firmware.locate import locate_kernel
from explorer.firmware.model import KernelImage
from tests.helpers import run
from tests.integration.rehosting import build_native


@pytest.fixture(scope="session")
def armmp_zimage(corpus: Corpus) -> bytes:
    return corpus.kernel("armmp").read_bytes()


@pytest.fixture(scope="session")
def armmp(armmp_zimage: bytes) -> KernelImage:
    return locate_kernel(armmp_zimage)


@pytest.fixture(scope="session")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("forms")


@pytest.fixture(scope="session")
def uimages(corpus: Corpus, workdir: Path, armmp_zimage: bytes, armmp: KernelImage) -> dict[str, bytes]:
    """mkimage's single-file, multi-file and gzip-compressed uImages of the armmp kernel."""
    zimage, image_gz = workdir / "zImage", workdir / "Image.gz"
    zimage.write_bytes(armmp_zimage)
    image_gz.write_bytes(run("gzip", "-n", "-1", "-c", stdin=armmp.data))
    initramfs = corpus.initramfs("armhf")
    common = ["-A", "arm", "-O", "linux", "-a", "0x60008000", "-e", "0x60008000", "-n", "armmp"]
    variants = {
        "single": ["-T", "kernel", "-C", "none", "-d", zimage],
        "multi": ["-T", "multi", "-C", "none", "-d", f"{zimage}:{initramfs}"],
        "gzip": ["-T", "kernel", "-C", "gzip", "-d", image_gz],
    }
    out = {}
    for name, args in variants.items():
        run("mkimage", *common, *args, workdir / f"uImage-{name}")
        out[name] = (workdir / f"uImage-{name}").read_bytes()
    return out


@pytest.fixture(scope="session")
def flash_with_uimage(uimages: dict[str, bytes]) -> bytes:
    """A flash-like dump: a bootloader, the multi-file uImage at the odd offset 0x20001, a rootfs."""
    rng = random.Random(20261125)
    return rng.randbytes(0x20001) + uimages["multi"] + rng.randbytes(3 << 20)


@pytest.fixture(scope="session")
def qemu_build() -> Path:
    """Our QEMU build (native/build.py): several minutes the first time, then cached by content.

    $EXPLORER_QEMU names a build directory to use instead (as `explorer boot --qemu` does)."""
    if env := os.environ.get("EXPLORER_QEMU"):
        return Path(env)
    return build_native()


# How long a Ray node may take to start on a busy machine, and to stop after SIGTERM.
RAY_NODE_START_SECONDS = 120
RAY_NODE_STOP_SECONDS = 15
RAY = Path(sys.executable).with_name("ray")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def processes() -> dict[int, tuple[int, int]]:
    """Every process's parent pid and process group, from /proc."""
    table = {}
    for entry in Path("/proc").iterdir():
        try:
            stat = (entry / "stat").read_text() if entry.name.isdigit() else ""
        except OSError:
            continue
        if stat:
            # The command name is in parentheses and may hold spaces: the fields after it are fixed.
            fields = stat[stat.rindex(")") + 2 :].split()
            table[int(entry.name)] = (int(fields[1]), int(fields[2]))
    return table


@dataclass
class RayNode:
    """One `ray start --block` and everything it started: its own process group, and the worker
    processes its raylet started, each of which Ray puts in a process group of its own."""

    process: subprocess.Popen[bytes]
    log: Path

    def workers(self) -> list[int]:
        table = processes()
        return [
            pid
            for pid, (parent, group) in table.items()
            if table.get(parent, (0, 0))[1] == self.process.pid != group
        ]

    def kill(self, sig: signal.Signals = signal.SIGKILL) -> None:
        """Send `sig` to the node's workers and to its process group at once, as a dying machine would."""
        for pid in self.workers():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, sig)

    def stop(self) -> None:
        self.kill(signal.SIGTERM)
        deadline = time.monotonic() + RAY_NODE_STOP_SECONDS
        while self._group_alive() and time.monotonic() < deadline:
            self.process.poll()
            time.sleep(0.2)
        self.kill(signal.SIGKILL)
        self.process.wait()

    def _group_alive(self) -> bool:
        try:
            os.killpg(self.process.pid, 0)
        except ProcessLookupError:
            return False
        return True


@dataclass
class LocalRayCluster:
    """A real Ray cluster on loopback: a head and worker nodes of one CPU each, in a private temp dir.

    Never `ray stop`: it would stop every Ray node on the machine, other people's too; each node
    is stopped through its own process group instead.
    """

    directory: Path
    port: int = field(default_factory=free_port)
    nodes: list[RayNode] = field(default_factory=list)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def add_node(self, environment: dict[str, str]) -> RayNode:
        """Start a node (the head if there is none yet) with `environment`; returned once it runs."""
        head = not self.nodes
        command = [str(RAY), "start", "--block", "--num-cpus", "1", "--object-store-memory", "100000000"]
        command += ["--node-ip-address", "127.0.0.1", "--disable-usage-stats"]
        command += ["--dashboard-agent-listen-port", str(free_port())]
        if head:
            command += ["--head", "--port", str(self.port), "--include-dashboard", "false"]
            command += ["--temp-dir", str(self.directory / "ray")]
            command += ["--dashboard-port", str(free_port()), "--ray-client-server-port", str(free_port())]
        else:
            command += ["--address", self.address]
        log = self.directory / f"node{len(self.nodes)}.log"
        with log.open("wb") as output:
            process = subprocess.Popen(
                command,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env={**environment, "RAY_USAGE_STATS_ENABLED": "0"},
            )
        node = RayNode(process, log)
        self.nodes.append(node)
        deadline = time.monotonic() + RAY_NODE_START_SECONDS
        while b"Ray runtime started" not in log.read_bytes():
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"Ray node did not start: {log.read_text(errors='replace')[-2000:]}")
            time.sleep(0.2)
        return node

    def stop(self) -> None:
        for node in reversed(self.nodes):
            node.stop()


@pytest.fixture(scope="session")
def ray_cluster(qemu_build: Path) -> Iterator[LocalRayCluster]:
    """A head node that runs our QEMU build as its own ($EXPLORER_QEMU) and a worker node with an
    empty cache of its own, which receives the build and the firmware through Ray."""
    directory = Path(tempfile.mkdtemp(prefix="explorer-ray-"))  # short: Ray's socket paths must fit
    cluster = LocalRayCluster(directory)
    base = {key: value for key, value in os.environ.items() if key not in ("EXPLORER_QEMU", "RAY_ADDRESS")}
    try:
        cluster.add_node({**base, "EXPLORER_QEMU": str(qemu_build)})
        cluster.add_node({**base, "EXPLORER_CACHE": str(directory / "worker-cache")})
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(directory, ignore_errors=True)
