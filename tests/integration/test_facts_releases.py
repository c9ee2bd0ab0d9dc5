"""Kernel facts hold across Debian releases: the same flavour from bullseye (5.10), bookworm (6.1)
and trixie (6.12) gives the same answers wherever the kernel's configuration did not change."""

from __future__ import annotations

import functools
from collections.abc import Callable

import pytest

from explorer.corpus import Corpus
from explorer.firmware.devicetree import parse_dtb
from explorer.firmware.kernel_facts import cpu_class, kernel_version, load_address, page_offset
from explorer.firmware.locate import locate_kernel
from explorer.firmware.machines import find_machine_descs
from explorer.firmware.model import KernelImage, SymbolTable
from explorer.firmware.symbols import recover_symbols

ARMMP = ["armmp-5.10", "armmp", "armmp-6.12"]
RPI = ["rpi", "rpi-6.12"]

Loader = Callable[[str], tuple[KernelImage, SymbolTable]]


@pytest.fixture(scope="module")
def kernel(corpus: Corpus) -> Loader:
    """The located image and recovered symbols of a corpus kernel, by name, each made once."""

    @functools.cache
    def located(name: str) -> tuple[KernelImage, SymbolTable]:
        image = locate_kernel(corpus.kernel(name).read_bytes())
        return image, recover_symbols(image)

    return located


@pytest.mark.parametrize("name", [*ARMMP, *RPI])
def test_the_banner_is_the_release_of_the_package(corpus: Corpus, kernel: Loader, name: str) -> None:
    image, _ = kernel(name)
    version = kernel_version(image)
    assert version is not None and version.startswith(corpus.release(name) + " ")


@pytest.mark.parametrize("name", ARMMP)
def test_armmp_of_every_release_is_an_armv7_kernel_at_the_same_place(
    corpus: Corpus, kernel: Loader, name: str
) -> None:
    image, symbols = kernel(name)
    assert cpu_class(image, symbols) == "ARMv7"
    assert page_offset(image, symbols) == 0xC0000000
    assert symbols.base == 0xC0208000  # _text: TEXT_OFFSET 0x208000, below _stext at 0xc0300000
    vexpress = parse_dtb(corpus.dtb(name, "vexpress-v2p-ca9").read_bytes(), "given")
    assert load_address(image.arch, symbols, 0xC0000000, vexpress) == 0x60208000


@pytest.mark.parametrize("name", ARMMP)
def test_armmp_of_every_release_carries_the_dt_machines_of_the_development_set(
    kernel: Loader, name: str
) -> None:
    image, symbols = kernel(name)
    machines = find_machine_descs(image, symbols)
    compatibles = {c for m in machines for c in m.dt_compat}
    assert {"ti,am33xx", "rockchip,rk3288", "allwinner,sun7i-a20", "arm,vexpress"} <= compatibles
    assert all(m.nr is None for m in machines)
    assert len(machines) > 40


@pytest.mark.parametrize("name", RPI)
def test_rpi_of_every_release_is_an_armv6_bcm2835_kernel(kernel: Loader, name: str) -> None:
    image, symbols = kernel(name)
    assert cpu_class(image, symbols) == "ARMv6"
    assert page_offset(image, symbols) == 0xC0000000
    compatibles = {c for m in find_machine_descs(image, symbols) for c in m.dt_compat}
    assert "brcm,bcm2835" in compatibles


@pytest.mark.parametrize("name", ["armmp-5.10", "armmp-6.12", "rpi-6.12"])
def test_every_device_tree_of_other_releases_parses_with_memory_and_devices(
    corpus: Corpus, name: str
) -> None:
    boards = corpus.boards(name)
    assert boards
    for board in boards:
        facts = parse_dtb(corpus.dtb(name, board).read_bytes(), "given")
        assert facts.compatible, board
        assert facts.devices, board
