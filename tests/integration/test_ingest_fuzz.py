"""Fuzzing the whole ingestion pipeline with damaged real kernels.

The real armmp Image is damaged where the parsers look hardest (the kallsyms tables, the image
head) and everywhere else, then ingested from a file as a user would. Whatever the damage, the
result is a `Firmware` or a one-line `FirmwareError`: never another exception, never a hang
(pytest-timeout bounds every example).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from explorer.errors import FirmwareError
from explorer.firmware.ingest import ingest
from explorer.firmware.kallsyms import find_kallsyms
from explorer.firmware.model import KernelImage


@pytest.fixture(scope="module")
def kallsyms_span(armmp: KernelImage) -> tuple[int, int]:
    """The byte range of the armmp image holding every kallsyms table."""
    layout = find_kallsyms(armmp.data, armmp.endian).layout
    offsets = [layout.addresses, layout.num_syms, layout.names, layout.markers, layout.token_index]
    return min(offsets), max(offsets) + 512


@st.composite
def damage(draw: st.DrawFn, span: tuple[int, int], size: int) -> list[tuple[str, int, int]]:
    """A few edits: (kind, offset, length) with kind in flip / zero / cut, aimed at the span mostly."""
    edits = []
    for _ in range(draw(st.integers(1, 4))):
        lo, hi = draw(st.sampled_from([span, span, (0, 0x10000), (0, size)]))
        at = draw(st.integers(lo, hi - 1))
        edits.append((draw(st.sampled_from(["flip", "zero", "cut"])), at, draw(st.integers(1, 4096))))
    return edits


def apply(data: bytes, edits: list[tuple[str, int, int]]) -> bytes:
    out = bytearray(data)
    for kind, at, length in edits:
        if kind == "flip":
            out[at] ^= 1 << (length % 8)
        elif kind == "zero":
            out[at : at + length] = bytes(len(out[at : at + length]))
        else:
            del out[at:]
    return bytes(out)


@pytest.mark.timeout(900)
def test_damaged_real_kernel_ingests_or_fails_with_one_line(
    armmp: KernelImage, kallsyms_span: tuple[int, int], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EXPLORER_CACHE", str(tmp_path / "cache"))
    image = tmp_path / "damaged.img"

    @settings(max_examples=25, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
    @given(edits=damage(kallsyms_span, len(armmp.data)))
    def check(edits: list[tuple[str, int, int]]) -> None:
        image.write_bytes(apply(armmp.data, edits))
        try:
            firmware = ingest(image, use_cache=False)
        except FirmwareError as err:
            assert "\n" not in str(err) and str(err)
        else:
            assert firmware.symbols.symbols

    check()
