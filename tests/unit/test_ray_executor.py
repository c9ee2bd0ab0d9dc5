"""The Ray executor's shipping without a cluster: what the master puts, what a worker writes and runs.

`put` and `fetch` here are a list standing for Ray's object store (the real one is exercised by
tests/integration/test_search_ray.py, on a real local cluster).
"""

from __future__ import annotations

import hashlib
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from explorer.errors import BadInput, RunnerError
from explorer.execution.jobs import Job, RunnerSetup
from explorer.execution.ray_executor import cluster_address
from explorer.execution.ray_shipping import ShippedBuild, ShippedFile, Shipper
from explorer.execution.ray_worker import localized, materialized, worker_build
from explorer.runner.build import MANIFEST, PLUGIN, binary
from explorer.runner.command import Plugin
from explorer.runner.machine_config_pb2 import MachineConfig
from tests.integration.conftest import free_port
from tests.unit.test_cli import explorer

BUILD_HASH = "a46cca493aceaaae"
MANIFEST_TEXT = b'{"qemu_version": "10.2.2"}\n'


class ObjectStore:
    """Stands for Ray's object store: `put` returns a handle, `fetch` gives the bytes back."""

    def __init__(self) -> None:
        self.objects: list[bytes] = []
        self.fetched = 0

    def put(self, content: bytes) -> int:
        self.objects.append(content)
        return len(self.objects) - 1

    def fetch(self, handle: int) -> bytes:
        self.fetched += 1
        return self.objects[handle]


def make_build(directory: Path, binaries: tuple[str, ...] = ("arm", "mipsel")) -> RunnerSetup:
    for target in binaries:
        write(directory / binary(target), f"qemu for {target}".encode())
    write(directory / PLUGIN, b"plugin")
    write(directory / MANIFEST, MANIFEST_TEXT)
    return RunnerSetup(directory, Plugin(directory / PLUGIN, ("coverage=on",)))


def write(path: Path, content: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return path


def job(state_id: str, target: str = "arm", **boot: Path) -> Job:
    config = MachineConfig(target=target, cpu="cortex-a9")
    for field, path in boot.items():
        setattr(config.boot, field, str(path))
    config.boot.cmdline = "console=ttyAMA0"
    return Job(state_id, config.SerializeToString(), 60.0)


def shipped(content: bytes, store: ObjectStore) -> ShippedFile:
    return ShippedFile(hashlib.sha256(content).hexdigest(), store.put(content))


def test_each_distinct_file_is_put_once_per_search(tmp_path: Path) -> None:
    store = ObjectStore()
    shipper = Shipper(make_build(tmp_path / "qemu" / BUILD_HASH), store.put)
    kernel = write(tmp_path / "zImage", b"kernel")
    dtb = write(tmp_path / "board.dtb", b"dtb")
    same_as_dtb = write(tmp_path / "copy.dtb", b"dtb")
    first, build = shipper.jobs([job("a", kernel=kernel, dtb=dtb)])[0]
    second, again = shipper.jobs([job("b", kernel=kernel, dtb=same_as_dtb)])[0]
    assert set(first.files) == {"kernel", "dtb"} and second.files == first.files
    assert again is build and set(build.files) == {binary("arm"), PLUGIN, MANIFEST}
    assert build.build_hash == BUILD_HASH
    # kernel, dtb, the arm QEMU, the plugin and the manifest: nothing twice.
    assert sorted(store.objects) == sorted([b"kernel", b"dtb", b"qemu for arm", b"plugin", MANIFEST_TEXT])
    _, mips = shipper.jobs([job("c", target="mipsel", kernel=kernel)])[0]
    assert set(mips.files) == {binary("mipsel"), PLUGIN, MANIFEST}
    assert len(store.objects) == 6


def test_a_directory_that_is_not_a_build_is_refused(tmp_path: Path) -> None:
    setup = make_build(tmp_path / BUILD_HASH)
    (tmp_path / BUILD_HASH / MANIFEST).unlink()
    with pytest.raises(BadInput, match=r"not a build of native/build\.py"):
        Shipper(setup, ObjectStore().put)


def test_a_file_that_went_away_is_one_line(tmp_path: Path) -> None:
    shipper = Shipper(make_build(tmp_path / BUILD_HASH), ObjectStore().put)
    with pytest.raises(BadInput, match=r"cannot read .*zImage"):
        shipper.jobs([job("a", kernel=tmp_path / "zImage")])[0]


# Files on disk: a busy machine's I/O, not the code, would decide a per-example deadline.
@settings(deadline=None)
@given(
    contents=st.dictionaries(st.sampled_from(["kernel", "dtb", "initrd"]), st.binary(max_size=64), min_size=1)
)
def test_a_localized_config_names_copies_with_the_same_bytes(
    tmp_path_factory: pytest.TempPathFactory, contents: dict[str, bytes]
) -> None:
    master, worker = tmp_path_factory.mktemp("master"), tmp_path_factory.mktemp("worker")
    store = ObjectStore()
    shipper = Shipper(make_build(master / BUILD_HASH), store.put)
    paths = {field: write(master / f"{field}.bin", content) for field, content in contents.items()}
    sent, _ = shipper.jobs([job("a", **paths)])[0]
    original = MachineConfig()
    original.ParseFromString(sent.job.config)

    local = localized(original, sent.files, worker, store.fetch)

    for field, content in contents.items():
        copy = Path(getattr(local.boot, field))
        assert copy.read_bytes() == content
        assert copy.parent == worker / "ray" / "files" / hashlib.sha256(content).hexdigest()
        assert copy.name == paths[field].name
    for field in {"kernel", "dtb", "initrd"} - set(contents):
        assert getattr(local.boot, field) == ""
    for field in ("kernel", "dtb", "initrd"):
        local.boot.ClearField(field)
        original.boot.ClearField(field)
    assert local == original  # nothing but the paths changed


def test_a_file_is_fetched_once_per_worker_cache(tmp_path: Path) -> None:
    store = ObjectStore()
    file = shipped(b"kernel", store)
    for _ in range(3):
        path = materialized(file, tmp_path / "zImage", store.fetch, 0o644)
    assert path.read_bytes() == b"kernel" and store.fetched == 1


def test_a_file_whose_content_is_not_its_digest_is_never_written(tmp_path: Path) -> None:
    store = ObjectStore()
    wrong = ShippedFile(hashlib.sha256(b"other").hexdigest(), store.put(b"kernel"))
    with pytest.raises(RunnerError, match=r"not the .* sent"):
        materialized(wrong, tmp_path / "files" / "zImage", store.fetch, 0o644)
    assert not (tmp_path / "files" / "zImage").exists()


def shipped_build(setup: RunnerSetup, store: ObjectStore) -> ShippedBuild:
    return Shipper(setup, store.put).build("arm")


def test_a_worker_without_a_build_receives_the_masters(tmp_path: Path) -> None:
    store = ObjectStore()
    build = shipped_build(make_build(tmp_path / "master" / BUILD_HASH), store)
    directory = worker_build(build, "arm", None, tmp_path / "worker", store.fetch)
    assert directory == tmp_path / "worker" / "ray" / "builds" / BUILD_HASH
    assert (directory / binary("arm")).read_bytes() == b"qemu for arm"
    assert os.access(directory / binary("arm"), os.X_OK)
    assert (directory / PLUGIN).read_bytes() == b"plugin"
    assert (directory / MANIFEST).read_bytes() == MANIFEST_TEXT
    assert not os.access(directory / MANIFEST, os.X_OK)
    assert not (directory / binary("mipsel")).exists()  # only what its runs need


def test_a_worker_runs_its_own_build_of_the_same_hash(tmp_path: Path) -> None:
    store = ObjectStore()
    build = shipped_build(make_build(tmp_path / "master" / BUILD_HASH), store)
    make_build(tmp_path / "worker" / "qemu" / BUILD_HASH)
    assert (
        worker_build(build, "arm", None, tmp_path / "worker", store.fetch)
        == tmp_path / "worker" / "qemu" / BUILD_HASH
    )
    own = make_build(tmp_path / "elsewhere" / BUILD_HASH).qemu_dir
    assert worker_build(build, "arm", own, tmp_path / "worker", store.fetch) == own
    assert store.fetched == 0


def test_a_worker_with_another_build_refuses_naming_both_hashes(tmp_path: Path) -> None:
    store = ObjectStore()
    build = shipped_build(make_build(tmp_path / "master" / BUILD_HASH), store)
    other = make_build(tmp_path / "worker" / "0123456789abcdef").qemu_dir
    with pytest.raises(
        RunnerError, match=f"{socket.gethostname()}.*0123456789abcdef is not the master's {BUILD_HASH}"
    ):
        worker_build(build, "arm", other, tmp_path / "worker", store.fetch)


def test_a_worker_build_lacking_the_binary_refuses(tmp_path: Path) -> None:
    store = ObjectStore()
    build = shipped_build(make_build(tmp_path / "master" / BUILD_HASH), store)
    make_build(tmp_path / "worker" / "qemu" / BUILD_HASH, binaries=("mipsel",))
    with pytest.raises(RunnerError, match=f"{BUILD_HASH} lacks {binary('arm')}"):
        worker_build(build, "arm", None, tmp_path / "worker", store.fetch)


def test_a_worker_build_with_another_manifest_refuses(tmp_path: Path) -> None:
    store = ObjectStore()
    build = shipped_build(make_build(tmp_path / "master" / BUILD_HASH), store)
    own = make_build(tmp_path / "worker" / BUILD_HASH).qemu_dir
    write(own / MANIFEST, b'{"qemu_version": "10.1.0"}\n')
    with pytest.raises(RunnerError, match=f"another {MANIFEST}"):
        worker_build(build, "arm", own, tmp_path / "worker", store.fetch)


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("127.0.0.1:6379", ("127.0.0.1", 6379)),
        ("head:10001", ("head", 10001)),
        ("[::1]:6379", ("::1", 6379)),
    ],
)
def test_cluster_addresses(address: str, expected: tuple[str, int]) -> None:
    assert cluster_address(address) == expected


@pytest.mark.parametrize(
    "address",
    ["", "head", "head:", ":6379", "head:port", "head:0", "head:70000", "ray://head:10001", "[]:6379"],
)
def test_bad_cluster_addresses_are_one_line(address: str) -> None:
    with pytest.raises(BadInput, match="is not HOST:PORT"):
        cluster_address(address)


@pytest.mark.parametrize(
    ("executor", "code", "message"),
    [
        (["--executor", "ray"], 2, "--executor ray needs the cluster's address"),
        (["--executor", "slurm"], 2, "executor 'slurm' is not one of: local, ray"),
        (["--executor", "ray", "--address", "nowhere"], 2, "is not HOST:PORT"),
        (
            ["--executor", "ray", "--address", "127.0.0.1:{port}"],
            1,
            "no Ray cluster answers at 127.0.0.1:{port}",
        ),
    ],
)
def test_an_executor_that_cannot_run_is_one_line_and_leaves_no_search(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, executor: list[str], code: int, message: str
) -> None:
    port = str(free_port())
    kernel = write(tmp_path / "zImage", b"\0" * 64)
    qemu = make_build(tmp_path / BUILD_HASH).qemu_dir
    arguments = [argument.replace("{port}", port) for argument in executor]
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    result = explorer(
        "search",
        str(kernel),
        "--work",
        str(tmp_path / "w"),
        "--qemu",
        str(qemu),
        *arguments,
        cache=tmp_path / "cache",
    )
    assert result.returncode == code, result
    assert result.stderr.startswith("explorer: error: ") and result.stderr.count("\n") == 1, result.stderr
    assert message.replace("{port}", port) in result.stderr
    assert not (tmp_path / "w").exists()


def test_ray_not_installed_is_one_line(tmp_path: Path) -> None:
    # The interpreter is told that Ray is missing: the import fails as on a machine without it.
    kernel = write(tmp_path / "zImage", b"\0" * 64)
    qemu = make_build(tmp_path / BUILD_HASH).qemu_dir
    without_ray = "import sys; sys.modules['ray'] = None; from explorer.cli.main import run; run()"
    arguments = ["search", str(kernel), "--work", str(tmp_path / "w"), "--qemu", str(qemu)]
    result = subprocess.run(
        [sys.executable, "-c", without_ray, *arguments, "--executor", "ray", "--address", "127.0.0.1:1"],
        capture_output=True,
        text=True,
        env={**os.environ, "EXPLORER_CACHE": str(tmp_path / "cache")},
        timeout=120,
    )
    assert result.returncode == 2, result
    assert result.stderr == "explorer: error: --executor ray needs Ray: pip install 'explorer[ray]'\n"
    assert not (tmp_path / "w").exists()
