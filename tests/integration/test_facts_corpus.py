"""Device trees, machine tables and kernel facts of the real Debian kernels."""

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

Loader = Callable[[str], tuple[KernelImage, SymbolTable]]


@pytest.fixture(scope="module")
def kernel(corpus: Corpus) -> Loader:
    """The located image and recovered symbols of a corpus kernel, by flavour, each made once."""

    @functools.cache
    def located(flavour: str) -> tuple[KernelImage, SymbolTable]:
        image = locate_kernel(corpus.kernel(flavour).read_bytes())
        return image, recover_symbols(image)

    return located


def devices(corpus: Corpus, board: str) -> dict[str, tuple[int, ...]]:
    """First reg address of each device, by its first compatible (first node wins)."""
    facts = parse_dtb(corpus.dtb("armmp", board).read_bytes(), "given")
    out: dict[str, tuple[int, ...]] = {}
    for d in facts.devices:
        if d.compatible:
            out.setdefault(d.compatible[0], tuple(a for a, _ in d.reg))
    return out


@pytest.mark.parametrize("flavour", ["armmp", "marvell", "rpi"])
def test_every_shipped_device_tree_parses_with_memory_and_devices(corpus: Corpus, flavour: str) -> None:
    boards = corpus.boards(flavour)
    assert boards
    for board in boards:
        facts = parse_dtb(corpus.dtb(flavour, board).read_bytes(), "given")
        assert facts.compatible, board
        assert facts.devices, board


def test_vexpress_a9_tree(corpus: Corpus) -> None:
    facts = parse_dtb(corpus.dtb("armmp", "vexpress-v2p-ca9").read_bytes(), "given")
    assert facts.memory[0][0] == 0x60000000
    found = devices(corpus, "vexpress-v2p-ca9")
    assert found["arm,pl011"][0] == 0x10009000
    assert found["arm,cortex-a9-gic"] == (0x1E001000, 0x1E000100)
    uart = next(d for d in facts.devices if d.path.endswith("uart@9000"))
    # On the motherboard bus, whose interrupt-map routes line 5 to GIC SPI 5.
    assert uart.interrupt_parent == "/interrupt-controller@1e001000"
    assert uart.interrupts == (0, 5, 4)


@pytest.mark.parametrize(
    ("board", "compatible", "address"),
    [
        ("am335x-boneblack", "ti,am33xx-intc", 0x48200000),
        ("am335x-boneblack", "ti,am3352-uart", 0x44E09000),
        ("rk3288-tinker", "arm,gic-400", 0xFFC01000),
        ("rk3288-tinker", "rockchip,rk3288-uart", 0xFF180000),
        ("sun7i-a20-cubieboard2", "arm,gic-400", 0x01C81000),
        ("sun7i-a20-cubieboard2", "snps,dw-apb-uart", 0x01C28000),
    ],
)
def test_boards_of_the_development_set(corpus: Corpus, board: str, compatible: str, address: int) -> None:
    assert devices(corpus, board)[compatible][0] == address


def test_armmp_facts_and_dt_machines(corpus: Corpus, kernel: Loader) -> None:
    image, symbols = kernel("armmp")
    assert kernel_version(image).startswith(corpus.release("armmp") + " ")
    assert cpu_class(image, symbols) == "ARMv7"
    assert page_offset(image, symbols) == 0xC0000000
    vexpress = parse_dtb(corpus.dtb("armmp", "vexpress-v2p-ca9").read_bytes(), "given")
    assert load_address(image.arch, symbols, 0xC0000000, vexpress) == 0x60208000
    machines = find_machine_descs(image, symbols)
    compatibles = {c for m in machines for c in m.dt_compat}
    assert {"ti,am33xx", "rockchip,rk3288", "allwinner,sun7i-a20", "arm,vexpress"} <= compatibles
    assert all(m.nr is None for m in machines)
    assert len(machines) > 40


def test_marvell_facts_atag_boards_and_kirkwood(kernel: Loader) -> None:
    image, symbols = kernel("marvell")
    assert cpu_class(image, symbols) == "ARMv5"
    assert page_offset(image, symbols) == 0xC0000000
    machines = find_machine_descs(image, symbols)
    by_id = {m.nr: m.name for m in machines if m.nr is not None}
    # ids from arch/arm/tools/mach-types
    assert by_id[1565] == "QNAP TS-109/TS-209"
    assert by_id[1601] == "QNAP TS-409"
    assert by_id[1693] == "HP Media Vault mv2120"
    assert len(by_id) == 8
    assert any("marvell,kirkwood" in m.dt_compat for m in machines)


def test_malta_facts_and_builtin_tree(corpus: Corpus, kernel: Loader) -> None:
    image, symbols = kernel("4kc-malta")
    assert kernel_version(image).startswith(corpus.release("4kc-malta") + " ")
    assert cpu_class(image, symbols) == "MIPS32r2"
    assert page_offset(image, symbols) == 0x80000000
    assert [m.dt_compat for m in find_machine_descs(image, symbols)] == [("mti,malta",)]


def test_rpi_is_armv6(kernel: Loader) -> None:
    image, symbols = kernel("rpi")
    assert cpu_class(image, symbols) == "ARMv6"
