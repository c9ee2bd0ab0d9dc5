"""Benchmark sets: a well-formed set loads to the targets it names; a malformed one is one BadInput line."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from explorer import corpus
from explorer.bench.sets import load_set, parse_set, sliced
from explorer.errors import BadInput


def no_corpus() -> corpus.Corpus:
    raise AssertionError("a set without flavours must not load the corpus")


names = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-_", min_size=1, max_size=20)
entries = st.fixed_dictionaries(
    {"name": names},
    optional={"cmdline": st.text(max_size=30), "instruction_budget": st.integers(0, 10**9)},
)


def kernel_file(tmp_path: Path) -> Path:
    kernel = tmp_path / "kernel.elf"
    kernel.write_bytes(b"\x7fELF")
    return kernel


@given(st.lists(entries, min_size=1, max_size=5, unique_by=lambda entry: entry["name"]))
def test_a_set_of_kernel_paths_resolves_each_entry_in_order(
    tmp_path_factory: Any, raw: list[dict[str, Any]]
) -> None:
    base = tmp_path_factory.mktemp("set")
    kernel_file(base)
    data = {"firmware": [{**entry, "kernel": "kernel.elf"} for entry in raw]}
    loaded = parse_set("tiny", data, base, no_corpus)
    assert [firmware.name for firmware in loaded.firmware] == [entry["name"] for entry in raw]
    for firmware, entry in zip(loaded.firmware, raw, strict=True):
        assert firmware.target.kernel == base / "kernel.elf"
        assert firmware.target.cmdline == entry.get("cmdline", "rdinit=/init")
        assert firmware.instruction_budget == entry.get("instruction_budget", 0)


@given(
    key=st.text(min_size=1, max_size=12).filter(
        lambda key: (
            key
            not in {"name", "flavour", "kernel", "dtb", "board_id", "initrd", "cmdline", "instruction_budget"}
        )
    )
)
def test_an_unknown_key_is_refused_by_name(tmp_path_factory: Any, key: str) -> None:
    base = tmp_path_factory.mktemp("set")
    kernel_file(base)
    with pytest.raises(BadInput, match="unknown key"):
        parse_set("tiny", {"firmware": [{"name": "a", "kernel": "kernel.elf", key: 1}]}, base, no_corpus)


@pytest.mark.parametrize(
    ("entry", "complaint"),
    [
        ({"name": "a"}, "flavour or a kernel"),
        ({"name": "a", "kernel": "kernel.elf", "flavour": "armmp"}, "flavour or a kernel"),
        ({"kernel": "kernel.elf"}, "name"),
        ({"name": "a/b", "kernel": "kernel.elf"}, "name"),
        ({"name": "a", "kernel": "missing.elf"}, "is not a file"),
        ({"name": "a", "kernel": "kernel.elf", "board_id": "1565"}, "board_id must be a int"),
        ({"name": "a", "kernel": "kernel.elf", "initrd": "marker"}, "needs a flavour"),
        ({"name": "a", "kernel": "kernel.elf", "dtb": "vexpress-v2p-ca9"}, "needs a flavour"),
        ({"name": "a", "flavour": "armmp", "dtb": "x", "board_id": 1}, "not both"),
    ],
)
def test_a_malformed_entry_is_one_line_naming_the_problem(
    tmp_path: Path, entry: dict[str, Any], complaint: str
) -> None:
    kernel_file(tmp_path)
    with pytest.raises(BadInput, match=complaint) as raised:
        parse_set("tiny", {"firmware": [entry]}, tmp_path, no_corpus)
    assert "\n" not in str(raised.value)


def test_repeated_names_and_empty_sets_are_refused(tmp_path: Path) -> None:
    kernel_file(tmp_path)
    twice = {"name": "a", "kernel": "kernel.elf"}
    with pytest.raises(BadInput, match="unique"):
        parse_set("tiny", {"firmware": [twice, twice]}, tmp_path, no_corpus)
    with pytest.raises(BadInput, match="at least one"):
        parse_set("tiny", {"firmware": []}, tmp_path, no_corpus)


def test_a_set_is_found_by_path_or_by_name_and_bad_toml_is_bad_input(tmp_path: Path) -> None:
    kernel_file(tmp_path)
    (tmp_path / "tiny.toml").write_text('[[firmware]]\nname = "a"\nkernel = "kernel.elf"\n')
    assert load_set(str(tmp_path / "tiny.toml"), no_corpus).name == "tiny"
    with pytest.raises(BadInput, match=r"no benchmark set 'no-such-set'.*dev"):
        load_set("no-such-set", no_corpus)
    (tmp_path / "broken.toml").write_text("[[firmware]\n")
    with pytest.raises(BadInput, match="not valid TOML"):
        load_set(str(tmp_path / "broken.toml"), no_corpus)


def test_a_slice_keeps_the_sets_name_and_order_and_refuses_a_name_it_lacks(tmp_path: Path) -> None:
    kernel_file(tmp_path)
    data = {"firmware": [{"name": name, "kernel": "kernel.elf"} for name in ("a", "b", "c")]}
    whole = parse_set("tiny", data, tmp_path, no_corpus)
    part = sliced(whole, ["c", "a"])
    assert part.name == "tiny"
    assert [firmware.name for firmware in part.firmware] == ["a", "c"]
    with pytest.raises(BadInput, match="set tiny has no firmware d, e: its firmware are a, b, c"):
        sliced(whole, ["a", "e", "d"])
