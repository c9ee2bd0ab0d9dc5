"""parse_dtb reads a tree the way Linux does, and fails on any bad blob with DeviceTreeError only."""

from __future__ import annotations

import contextlib
import shutil
import struct
import subprocess

import fdt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from explorer.errors import DeviceTreeError
from explorer.firmware.devicetree import find_dtbs, parse_dtb

pytestmark = pytest.mark.skipif(shutil.which("dtc") is None, reason="needs dtc (apt: device-tree-compiler)")

BOARD = """
/dts-v1/;
/ {
    #address-cells = <1>;
    #size-cells = <1>;
    model = "Test board";
    compatible = "acme,board", "acme,soc";
    interrupt-parent = <&gic>;

    chosen { bootargs = "console=ttyS0"; stdout-path = "serial0:115200n8"; };
    aliases { serial0 = &uart; gpio0 = "/soc/gpio@5000"; };
    memory@80000000 { device_type = "memory"; reg = <0x80000000 0x10000000 0xa0000000 0x0>; };
    memory@0 { device_type = "memory"; reg = <0x0 0x1000>; status = "disabled"; };

    soc {
        compatible = "simple-bus";
        #address-cells = <1>;
        #size-cells = <1>;
        ranges = <0x0 0x40000000 0x100000>;

        gic: interrupt-controller@0 {
            compatible = "arm,cortex-a9-gic";
            reg = <0x0 0x1000>, <0x2000 0x100>;
            #interrupt-cells = <3>;
            interrupt-controller;
        };
        uart: uart@1000 {
            compatible = "ns16550a";
            reg = <0x1000 0x100>;
            interrupts = <0 5 4>;
            status = "disabled";
        };
        i2c@3000 {
            reg = <0x3000 0x100>;
            #address-cells = <1>;
            #size-cells = <0>;
            rtc@68 { compatible = "dallas,ds1307"; reg = <0x68>; };
        };
        bridge {
            #address-cells = <1>;
            #size-cells = <1>;
            ranges;
            timer@4000 { reg = <0x4000 0x20>; interrupts-extended = <&gic 0 7 4>, <&gpio 3>, <&gic 0 8 4>; };
        };
        gpio: gpio@5000 { reg = <0x5000 0x100>; #interrupt-cells = <1>; };
    };
};
"""


def compile_dts(source: str) -> bytes:
    return subprocess.run(
        ["dtc", "-q", "-I", "dts", "-O", "dtb", "-"], input=source.encode(), capture_output=True, check=True
    ).stdout


@pytest.fixture(scope="module")
def board() -> bytes:
    return compile_dts(BOARD)


def devices_by_path(blob: bytes) -> dict:
    return {d.path: d for d in parse_dtb(blob, "given").devices}


def test_root_identity_chosen_and_enabled_nonempty_memory(board: bytes) -> None:
    facts = parse_dtb(board, "given")
    assert facts.source == "given"
    assert facts.model == "Test board"
    assert facts.compatible == ("acme,board", "acme,soc")
    assert facts.bootargs == "console=ttyS0"
    assert facts.stdout_path == "serial0:115200n8"
    assert facts.aliases == {"serial0": "/soc/uart@1000", "gpio0": "/soc/gpio@5000"}
    assert facts.memory == ((0x80000000, 0x10000000),)


def test_reg_is_translated_through_ranges_and_empty_ranges_is_identity(board: bytes) -> None:
    devices = devices_by_path(board)
    assert devices["/soc/interrupt-controller@0"].reg == ((0x40000000, 0x1000), (0x40002000, 0x100))
    assert devices["/soc/uart@1000"].reg == ((0x40001000, 0x100),)
    assert devices["/soc/bridge/timer@4000"].reg == ((0x40004000, 0x20),)


def test_children_of_a_bus_without_ranges_and_memory_nodes_are_not_devices(board: bytes) -> None:
    devices = devices_by_path(board)
    assert "/soc/i2c@3000" in devices
    assert "/soc/i2c@3000/rtc@68" not in devices
    assert not any(path.startswith("/memory") for path in devices)


def test_interrupt_parent_is_inherited_and_status_kept(board: bytes) -> None:
    uart = devices_by_path(board)["/soc/uart@1000"]
    assert uart.compatible == ("ns16550a",)
    assert uart.interrupt_parent == "/soc/interrupt-controller@0"
    assert uart.interrupts == (0, 5, 4)
    assert uart.status == "disabled"
    assert devices_by_path(board)["/soc/gpio@5000"].interrupt_parent is None


def test_interrupts_extended_gives_first_controller_and_its_specifiers(board: bytes) -> None:
    timer = devices_by_path(board)["/soc/bridge/timer@4000"]
    assert timer.interrupt_parent == "/soc/interrupt-controller@0"
    assert timer.interrupts == (0, 7, 4, 0, 8, 4)


def test_two_cell_addresses_and_nested_offsets() -> None:
    blob = compile_dts("""
/dts-v1/;
/ {
    #address-cells = <2>;
    #size-cells = <2>;
    memory@0 { device_type = "memory"; reg = <0x1 0x0 0x0 0x40000000>; };
    bus@f0000000 {
        #address-cells = <1>;
        #size-cells = <1>;
        ranges = <0x0 0x0 0xf0000000 0x1000000>;
        inner@100000 {
            #address-cells = <1>;
            #size-cells = <1>;
            ranges = <0x0 0x100000 0x10000>;
            dev@20 { reg = <0x20 0x4>; };
            outside@20000 { reg = <0x20000 0x4>; };
        };
    };
};
""")
    facts = parse_dtb(blob, "given")
    assert facts.memory == ((0x1_0000_0000, 0x40000000),)
    assert [(d.path, d.reg) for d in facts.devices] == [
        ("/bus@f0000000/inner@100000/dev@20", ((0xF0100020, 4),))
    ]


def test_interrupts_are_followed_through_an_interrupt_map_to_the_controller() -> None:
    blob = compile_dts("""
/dts-v1/;
/ {
    #address-cells = <1>;
    #size-cells = <1>;
    gic: gic@1000 { reg = <0x1000 0x100>; interrupt-controller; #interrupt-cells = <3>; };
    bus@10000000 {
        compatible = "simple-bus";
        #address-cells = <1>;
        #size-cells = <1>;
        ranges = <0 0x10000000 0x100000>;
        #interrupt-cells = <1>;
        interrupt-parent = <&gic>;
        interrupt-map-mask = <0 63>;
        interrupt-map = <0 5 &gic 0 5 4>, <0 7 &gic 0 42 1>;
        uart@9000 { reg = <0x9000 0x1000>; interrupts = <7>; };
        lost@a000 { reg = <0xa000 0x1000>; interrupts = <9>; };
    };
};
""")
    by_path = {d.path: d for d in parse_dtb(blob, "given").devices}
    uart = by_path["/bus@10000000/uart@9000"]
    assert (uart.interrupt_parent, uart.interrupts) == ("/gic@1000", (0, 42, 1))
    assert by_path["/bus@10000000/lost@a000"].interrupt_parent is None  # no map entry routes line 9


def test_interrupt_parent_phandle_loop_is_an_error() -> None:
    blob = compile_dts("""
/dts-v1/;
/ {
    #address-cells = <1>;
    #size-cells = <1>;
    a: a { interrupt-parent = <&b>; };
    b: b { interrupt-parent = <&a>; };
    dev@0 { reg = <0 4>; interrupts = <1>; interrupt-parent = <&a>; };
};
""")
    with pytest.raises(DeviceTreeError, match="loop"):
        parse_dtb(blob, "given")


def test_absurd_cell_count_is_an_error() -> None:
    blob = compile_dts(
        "/dts-v1/;\n/ { #address-cells = <1000>; #size-cells = <1>; dev { reg = <0 4>; }; };\n"
    )
    with pytest.raises(DeviceTreeError, match="#address-cells"):
        parse_dtb(blob, "given")


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda b: b"\0" + b[1:], "magic"),
        (lambda b: b[: len(b) // 2], "truncated"),
        (lambda b: b[:8] + struct.pack(">I", 0x7FFFFFF0) + b[12:], "structure block"),
        (lambda b: b[:8] + struct.pack(">I", 2) + b[12:], "misplaced structure block"),
        (lambda b: b[:20] + struct.pack(">I", 1) + b[24:], "version"),
        (lambda b: b[:4], "magic"),
    ],
)
def test_damaged_headers_fail_with_one_line(board: bytes, damage, message: str) -> None:
    with pytest.raises(DeviceTreeError, match=message) as caught:
        parse_dtb(damage(board), "given")
    assert "\n" not in str(caught.value)


def test_find_dtbs_finds_blobs_inside_other_data(board: bytes) -> None:
    data = b"\xd0\x0d\xfe\xed junk" + bytes(100) + board + bytes(3) + board
    assert find_dtbs(data) == [109, 109 + len(board) + 3]
    assert find_dtbs(bytes(1000)) == []


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2048))
def test_random_bytes_parse_or_raise_device_tree_error(blob: bytes) -> None:
    with contextlib.suppress(DeviceTreeError):
        parse_dtb(blob, "given")


@settings(max_examples=500, deadline=None)
@given(st.data())
def test_mutated_blobs_parse_or_raise_device_tree_error(board: bytes, data: st.DataObject) -> None:
    blob = bytearray(board)
    for _ in range(data.draw(st.integers(1, 8))):
        position = data.draw(st.integers(0, len(blob) - 1))
        blob[position] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(blob)))
    with contextlib.suppress(DeviceTreeError):
        parse_dtb(bytes(blob[:cut]) if data.draw(st.booleans()) else bytes(blob), "given")


def test_parsing_trees_with_reservations_leaves_no_reservation_behind_in_the_library() -> None:
    # fdt.FDT's default `entries` list is shared by every tree it parses; it must not grow.
    tree = fdt.FDT(entries=[{"address": 0x1000, "size": 0x1000}, {"address": 0x8000, "size": 0x100}])
    tree.add_item(fdt.PropWords("#address-cells", 1))
    blob = bytes(tree.to_dtb(version=17))
    for _ in range(3):
        parse_dtb(blob, "given")
    assert fdt.FDT().entries == []
