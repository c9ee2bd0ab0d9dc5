"""Benchmark sets: named lists of firmware to search, read from benchmarks/sets/*.toml.

A set is a TOML file of `[[firmware]]` tables, one per firmware:

    name         unique within the set; names the firmware's work directories and report rows
    flavour      a corpus kernel ("armmp", "marvell", "4kc-malta"), or
    kernel       a kernel image's path (relative to the set file): firmware outside the corpus
    dtb          the board's device tree, by corpus board name (absent: no device tree)
    board_id     ARM machine type number for an ATAG boot (absent: none)
    initrd       "marker" (the flavour's marker initramfs), a path relative to the set file, or absent
    cmdline      the kernel command line [default: "rdinit=/init"]
    instruction_budget  guest instructions per run [default 0: the search's own choice]

Loading checks everything a bench would otherwise find out hours later: unknown keys, a
missing kernel, a DTB or flavour the corpus lacks, duplicate names; each is one BadInput line
naming the set and the entry. A slice of a set (`sliced`) keeps the set's name, so a bench run
slice by slice collects every slice's results in one place. This module only reads: it never
fetches the corpus.
"""

from __future__ import annotations

import tomllib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from explorer import corpus
from explorer.errors import BadInput
from explorer.search.state import Target

SETS_DIRECTORY = Path(__file__).resolve().parents[2] / "benchmarks" / "sets"
MARKER_INITRD = "marker"
DEFAULT_CMDLINE = "rdinit=/init"
_KEYS = {"name", "flavour", "kernel", "dtb", "board_id", "initrd", "cmdline", "instruction_budget"}
_TYPES: dict[str, type] = {
    "name": str,
    "flavour": str,
    "kernel": str,
    "dtb": str,
    "board_id": int,
    "initrd": str,
    "cmdline": str,
    "instruction_budget": int,
}


@dataclass(frozen=True)
class BenchFirmware:
    """One firmware of a set, resolved: what to search and with which per-firmware options."""

    name: str
    target: Target
    instruction_budget: int = 0


@dataclass(frozen=True)
class BenchSet:
    name: str
    firmware: tuple[BenchFirmware, ...]


def load_set(name_or_path: str, corpus_loader: Callable[[], corpus.Corpus] = corpus.load) -> BenchSet:
    """The set at a path, or the one named so in benchmarks/sets; BadInput if malformed.

    `corpus_loader` is called only when an entry names a corpus flavour.
    """
    path = Path(name_or_path)
    if not path.is_file():
        path = SETS_DIRECTORY / f"{name_or_path}.toml"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in SETS_DIRECTORY.glob("*.toml")))
        raise BadInput(f"no benchmark set '{name_or_path}': give a set file or one of: {known}")
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as error:
        raise BadInput(f"set {path} is not valid TOML: {error}") from None
    return parse_set(path.stem, data, path.parent, corpus_loader)


def sliced(bench_set: BenchSet, names: Sequence[str]) -> BenchSet:
    """The firmware of `bench_set` named in `names`, in the set's order, under the set's name;
    BadInput naming any name the set does not have."""
    unknown = sorted(set(names) - {firmware.name for firmware in bench_set.firmware})
    if unknown:
        raise BadInput(
            f"set {bench_set.name} has no firmware {', '.join(unknown)}: its firmware are "
            + ", ".join(firmware.name for firmware in bench_set.firmware)
        )
    return BenchSet(
        bench_set.name, tuple(firmware for firmware in bench_set.firmware if firmware.name in names)
    )


def parse_set(
    name: str, data: dict[str, Any], base: Path, corpus_loader: Callable[[], corpus.Corpus]
) -> BenchSet:
    """Check and resolve the parsed TOML of set `name`; relative paths are taken from `base`."""
    if set(data) != {"firmware"} or not isinstance(data["firmware"], list) or not data["firmware"]:
        raise BadInput(f"set {name}: expected only [[firmware]] tables, at least one")
    entries = [_checked(name, index, entry) for index, entry in enumerate(data["firmware"])]
    names = [entry["name"] for entry in entries]
    duplicates = sorted({entry for entry in names if names.count(entry) > 1})
    if duplicates:
        raise BadInput(f"set {name}: firmware names must be unique: {', '.join(duplicates)} repeated")
    kernels = corpus_loader() if any("flavour" in entry for entry in entries) else None
    return BenchSet(name, tuple(_resolved(name, entry, base, kernels) for entry in entries))


def _checked(set_name: str, index: int, entry: Any) -> dict[str, Any]:
    where = f"set {set_name}, firmware {index + 1}"
    if not isinstance(entry, dict):
        raise BadInput(f"{where}: expected a [[firmware]] table")
    unknown = sorted(set(entry) - _KEYS)
    if unknown:
        raise BadInput(f"{where}: unknown key {', '.join(unknown)}; known: {', '.join(sorted(_KEYS))}")
    for key, value in entry.items():
        if not isinstance(value, _TYPES[key]) or isinstance(value, bool):
            raise BadInput(f"{where}: {key} must be a {_TYPES[key].__name__}, not {value!r}")
    if "name" not in entry or not entry["name"].strip() or "/" in entry["name"]:
        raise BadInput(f"{where}: give each firmware a name (no '/': it names a directory)")
    if ("flavour" in entry) == ("kernel" in entry):
        raise BadInput(f"set {set_name}, firmware {entry['name']}: give a corpus flavour or a kernel path")
    if "dtb" in entry and "board_id" in entry:
        raise BadInput(f"set {set_name}, firmware {entry['name']}: give a dtb or a board_id, not both")
    if entry.get("initrd") == MARKER_INITRD and "flavour" not in entry:
        raise BadInput(f"set {set_name}, firmware {entry['name']}: the marker initrd needs a flavour")
    if "dtb" in entry and "flavour" not in entry:
        raise BadInput(f"set {set_name}, firmware {entry['name']}: a dtb by board name needs a flavour")
    return entry


def _resolved(
    set_name: str, entry: dict[str, Any], base: Path, kernels: corpus.Corpus | None
) -> BenchFirmware:
    where = f"set {set_name}, firmware {entry['name']}"
    try:
        if "flavour" in entry:
            assert kernels is not None  # parse_set loads the corpus when any entry has a flavour
            kernel = kernels.kernel(entry["flavour"])
            dtb = kernels.dtb(entry["flavour"], entry["dtb"]) if "dtb" in entry else None
        else:
            kernel, dtb = (base / entry["kernel"]).resolve(), None
        initrd = entry.get("initrd")
        if initrd == MARKER_INITRD:
            assert kernels is not None  # _checked: the marker initrd needs a flavour
            initrd_path: Path | None = kernels.initramfs(kernels.arch_of(entry["flavour"]))
        else:
            initrd_path = (base / initrd).resolve() if initrd else None
    except BadInput as error:
        raise BadInput(f"{where}: {error}") from None
    for path in (kernel, initrd_path):
        if path is not None and not path.is_file():
            raise BadInput(f"{where}: {path} is not a file")
    target = Target(
        kernel=kernel,
        dtb=dtb,
        initrd=initrd_path,
        cmdline=entry.get("cmdline", DEFAULT_CMDLINE),
        board_id=entry.get("board_id"),
    )
    return BenchFirmware(entry["name"], target, entry.get("instruction_budget", 0))
