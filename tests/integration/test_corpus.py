"""The real-kernel corpus: what `explorer corpus fetch` promises about the files it hands out."""

from __future__ import annotations

import gzip
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

import explorer.corpus
from explorer.corpus import FLAVOUR_ARCH, Corpus
from explorer.corpus.catalogue import KERNELS
from explorer.corpus.initramfs import MARKER_INIT_SCRIPT
from explorer.corpus.manifest import MANIFEST_NAME, read_manifest, sha256_file
from explorer.errors import BadInput, CorpusError
from explorer.firmware.locate import locate_kernel

ZIMAGE_MAGIC = bytes.fromhex("18286f01")  # 0x016f2818 little-endian, at offset 0x24 of an ARM zImage
ELF_MACHINE = {"armhf": 40, "armel": 40, "mipsel": 8, "arm64": 183}  # EM_ARM, EM_MIPS, EM_AARCH64
ARM64_MAGIC = b"ARM\x64"  # at 0x38 of an AArch64 Image


def path_without_apt(tmp_path: Path) -> str:
    """A PATH with dpkg-deb and the tar it runs, but no apt: any attempt to reach the network fails."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("dpkg-deb", "tar"):
        (bin_dir / tool).symlink_to(shutil.which(tool) or f"/usr/bin/{tool}")
    return str(bin_dir)


def test_every_flavour_has_a_kernel_of_its_architecture(corpus: Corpus) -> None:
    assert set(corpus.flavours) == set(FLAVOUR_ARCH)
    for flavour, arch in FLAVOUR_ARCH.items():
        head = corpus.kernel(flavour).read_bytes()[:0x40]
        if arch == "mipsel":
            assert head[:4] == b"\x7fELF" and int.from_bytes(head[18:20], "little") == ELF_MACHINE[arch]
        elif arch == "arm64":
            assert head[0x38:0x3C] == ARM64_MAGIC, flavour
        else:
            assert head[0x24:0x28] == ZIMAGE_MAGIC, flavour


def test_busybox_is_a_static_binary_of_each_architecture(corpus: Corpus) -> None:
    for arch, machine in ELF_MACHINE.items():
        head = corpus.busybox(arch).read_bytes()[:20]
        assert head[:4] == b"\x7fELF" and int.from_bytes(head[18:20], "little") == machine


def test_manifest_digests_match_the_files_on_disk(corpus: Corpus) -> None:
    for record in corpus.manifest.product_files():
        assert sha256_file(corpus.root / record.path) == record.sha256, record.path
    for deb in corpus.manifest.debs:
        assert sha256_file(corpus.root / deb.deb.path) == deb.deb.sha256, deb.deb.path
        assert deb.version and deb.arch in ELF_MACHINE


def test_each_kernel_image_is_the_release_its_package_names(corpus: Corpus) -> None:
    # Flavours of one Debian release need not share an upload (the archive served armmp 6.1.0-57
    # beside the other flavours' 6.1.0-50): each kernel is checked against its own package.
    for flavour in corpus.flavours:
        image = locate_kernel(corpus.kernel(flavour).read_bytes()).data
        assert f"Linux version {corpus.release(flavour)} ".encode() in image, flavour


@pytest.mark.parametrize("name", sorted(KERNELS))
def test_each_kernel_is_the_package_of_its_release(corpus: Corpus, name: str) -> None:
    source = KERNELS[name]
    record = corpus.manifest.kernels[name]
    assert (
        (record.suite, record.arch)
        == (source.suite, source.arch)
        == (corpus.suite(name), corpus.arch_of(name))
    )
    assert source.abi_of(record.package) is not None
    assert corpus.release(name) in corpus.kernel(name).name


def test_kernels_of_other_releases_ship_their_own_device_trees(corpus: Corpus) -> None:
    assert corpus.dtb("armmp-5.10", "vexpress-v2p-ca9") != corpus.dtb("armmp", "vexpress-v2p-ca9")
    assert "vexpress-v2p-ca9" in corpus.boards("armmp-6.12")
    assert any(board.startswith("bcm2835-rpi") for board in corpus.boards("rpi-6.12"))
    assert corpus.dtb("arm64-6.12", "rockchip/rk3399-rockpro64") != corpus.dtb("arm64", "rk3399-rockpro64")


def test_arm64_device_trees_are_named_by_vendor_folder_or_by_a_unique_bare_name(corpus: Corpus) -> None:
    dtb = corpus.dtb("arm64", "rockchip/rk3399-rockpro64")
    assert dtb.read_bytes()[:4] == bytes.fromhex("d00dfeed")
    assert (
        corpus.dtb("arm64", "rk3399-rockpro64") == corpus.dtb("arm64", "rockchip/rk3399-rockpro64.dtb") == dtb
    )
    assert "rockchip/rk3399-rockpro64" in corpus.boards("arm64")
    vendors = {board.split("/", 1)[0] for board in corpus.boards("arm64")}
    assert {"allwinner", "amlogic", "broadcom", "freescale", "marvell", "rockchip"} <= vendors


def test_initramfs_carries_the_corpus_busybox(corpus: Corpus) -> None:
    for arch in ELF_MACHINE:
        archive = gzip.decompress(corpus.initramfs(arch).read_bytes())
        listed = subprocess.run(
            ["cpio", "-t", "--quiet"], input=archive, capture_output=True, check=True, timeout=60
        ).stdout.split()
        assert b"bin/busybox" in listed and b"init" in listed
        assert corpus.busybox(arch).read_bytes() in archive


def test_dtb_lookup_by_board_name(corpus: Corpus) -> None:
    dtb = corpus.dtb("armmp", "vexpress-v2p-ca9")
    assert dtb.read_bytes()[:4] == bytes.fromhex("d00dfeed")
    assert corpus.dtb("armmp", "vexpress-v2p-ca9.dtb") == dtb
    assert "vexpress-v2p-ca9" in corpus.boards("armmp")
    assert "kirkwood-dockstar" in corpus.boards("marvell")
    assert corpus.boards("4kc-malta") == []  # the malta kernel has its device tree built in


@pytest.mark.parametrize(
    ("flavour", "board"), [("armmp", "no-such-board"), ("4kc-malta", "malta"), ("x", "y")]
)
def test_unknown_names_are_bad_input(corpus: Corpus, flavour: str, board: str) -> None:
    with pytest.raises(BadInput):
        corpus.dtb(flavour, board)


def test_a_complete_corpus_is_fetched_again_without_apt(
    corpus: Corpus, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", path_without_apt(tmp_path))
    again = explorer.corpus.fetch()
    assert again.corpus.manifest == corpus.manifest and again.missing == {}


def test_lost_or_damaged_files_are_rebuilt_from_the_kept_debs_without_apt(
    corpus: Corpus, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A private copy holding only the debs (hard links: only ever read) and the manifest: what
    # is left after an interrupted fetch or a cleaned cache. It must come back, offline, digest
    # for digest, and so must a kernel damaged afterwards.
    copy = tmp_path / "corpus"
    (copy / "debs").mkdir(parents=True)
    for deb in corpus.manifest.debs:
        os.link(corpus.root / deb.deb.path, copy / deb.deb.path)
    shutil.copy(corpus.root / "manifest.json", copy / "manifest.json")
    outdated = copy / "initramfs" / "armhf-0123456789abcdef.cpio.gz"
    outdated.parent.mkdir()
    outdated.write_bytes(b"from an older fetch")
    monkeypatch.setenv("PATH", path_without_apt(tmp_path))

    assert explorer.corpus.fetch(root=copy).corpus.manifest == corpus.manifest
    assert not outdated.exists()

    kernel = copy / corpus.manifest.kernels["marvell"].image.path
    damaged = bytearray(kernel.read_bytes())
    damaged[-1] ^= 0xFF
    kernel.write_bytes(damaged)
    assert explorer.corpus.fetch(root=copy).corpus.manifest == corpus.manifest
    assert sha256_file(kernel) == corpus.manifest.kernels["marvell"].image.sha256


def test_a_manifest_from_before_the_lock_reads_as_packages_taken_for_no_lock_entry(
    corpus: Corpus, tmp_path: Path
) -> None:
    current = json.loads((corpus.root / MANIFEST_NAME).read_text())
    old = {
        **current,
        "format_version": 2,
        "debs": [{k: v for k, v in d.items() if k != "lock_sha256"} for d in current["debs"]],
    }
    (tmp_path / MANIFEST_NAME).write_text(json.dumps(old))
    upgraded = read_manifest(tmp_path)
    assert upgraded is not None and upgraded.kernels == corpus.manifest.kernels
    assert {d.lock_sha256 for d in upgraded.debs} == {None}


def test_a_version_1_manifest_is_upgraded_with_every_kernel_from_its_one_suite(
    corpus: Corpus, tmp_path: Path
) -> None:
    current = json.loads((corpus.root / MANIFEST_NAME).read_text())
    old = {**current, "format_version": 1, "suite": "bookworm"}
    old["kernels"] = {n: {k: v for k, v in r.items() if k != "suite"} for n, r in current["kernels"].items()}
    (tmp_path / MANIFEST_NAME).write_text(json.dumps(old))
    upgraded = read_manifest(tmp_path)
    assert upgraded is not None
    assert {k.suite for k in upgraded.kernels.values()} == {"bookworm"}
    assert upgraded.arches == corpus.manifest.arches
    assert [(d.package, d.deb) for d in upgraded.debs] == [(d.package, d.deb) for d in corpus.manifest.debs]


def test_a_manifest_of_an_unknown_version_reads_as_absent(corpus: Corpus, tmp_path: Path) -> None:
    future = {**json.loads((corpus.root / MANIFEST_NAME).read_text()), "format_version": 99}
    (tmp_path / MANIFEST_NAME).write_text(json.dumps(future))
    assert read_manifest(tmp_path) is None


def test_no_network_is_one_line_per_flavour_that_says_what_to_do(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EXPLORER_CACHE", str(tmp_path))
    monkeypatch.setenv("http_proxy", "http://127.0.0.1:9")  # the discard port: every download fails
    outcome = explorer.corpus.fetch(["armmp", "marvell"])
    assert set(outcome.missing) == {"armmp", "marvell"}
    assert all("deb.debian.org is reachable" in why for why in outcome.missing.values())
    assert not (tmp_path / "corpus" / "manifest.json").exists()
    with pytest.raises(CorpusError, match=r"explorer corpus fetch armmp"):
        outcome.corpus.kernel("armmp")


def test_load_without_a_fetch_says_what_to_run(tmp_path: Path) -> None:
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(CorpusError, match="explorer corpus fetch"):
        explorer.corpus.load(tmp_path)


def test_load_finds_what_fetch_made(corpus: Corpus) -> None:
    assert explorer.corpus.load(corpus.root) == corpus


def test_an_initramfs_built_with_another_init_is_rebuilt_offline_with_todays(
    corpus: Corpus, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A whole copy (hard links: the fetch replaces files, never writes into them) whose manifest
    # predates the /init recorded per architecture: all there and intact, but made by another /init.
    copy = tmp_path / "corpus"
    shutil.copytree(corpus.root, copy, copy_function=os.link)
    older = json.loads((corpus.root / MANIFEST_NAME).read_text())
    for arch in older["arches"].values():
        del arch["init_sha256"]
    (copy / MANIFEST_NAME).write_text(json.dumps(older))
    assert {record.init_sha256 for record in read_manifest(copy).arches.values()} == {""}
    monkeypatch.setenv("PATH", path_without_apt(tmp_path))

    assert explorer.corpus.fetch(root=copy).corpus.manifest == corpus.manifest
    archive = gzip.decompress((copy / corpus.manifest.arches["armhf"].initramfs.path).read_bytes())
    assert MARKER_INIT_SCRIPT.encode() in archive
