"""Symbol recovery on every corpus kernel, Debian 11 to 13, and the two independent proofs of
the base (prologues under the symbols; the image's own pointers at its functions) agreeing."""

from __future__ import annotations

import pytest

from explorer.corpus import FLAVOUR_ARCH, Corpus
from explorer.firmware.locate import locate_kernel
from explorer.firmware.model import Symbol
from explorer.firmware.symbols import prove_base_by_pointers, recover_symbols


@pytest.mark.parametrize("name", sorted(FLAVOUR_ARCH))
def test_the_pointer_census_proves_the_base_the_prologues_prove(corpus: Corpus, name: str) -> None:
    image = locate_kernel(corpus.kernel(name).read_bytes())
    table = recover_symbols(image)
    assert table.source == "kallsyms" and len(table.symbols) > 30000
    assert table.address_of("start_kernel") is not None
    # What a place-relative (7.0+) table would give: the same symbols, by image offset.
    placed = tuple(Symbol(s.address - table.base, s.type, s.name) for s in table.symbols)
    base, proof = prove_base_by_pointers(image, placed)
    assert base == table.base, proof
