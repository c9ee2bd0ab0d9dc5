"""The initramfs writer: GNU cpio reads back exactly what we wrote; same inputs, same bytes."""

from __future__ import annotations

import gzip
import re
import subprocess
import tempfile
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from explorer.corpus.initramfs import (
    MARKER_INIT_SCRIPT,
    USERSPACE_MARKER,
    Entry,
    busybox_initramfs,
    char_device,
    cpio_newc,
    directory,
    prints_marker,
    regular,
    symlink,
)

names = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789_.-", min_size=1, max_size=40).filter(
    lambda n: n not in {".", ".."}
)
contents = st.binary(max_size=3000)


@st.composite
def trees(draw: st.DrawFn) -> list[Entry]:
    """A directory of regular files and symlinks (parents before children), with unique names."""
    file_names = draw(st.lists(names, unique=True, max_size=12))
    entries = [directory("d")]
    for name in file_names:
        if draw(st.booleans()):
            entries.append(regular(f"d/{name}", draw(contents), mode=draw(st.sampled_from([0o644, 0o755]))))
        else:
            entries.append(symlink(f"d/{name}", draw(names)))
    return entries


def cpio(*args: str, archive: bytes, cwd: Path | None = None) -> str:
    done = subprocess.run(
        ["cpio", *args], input=archive, capture_output=True, cwd=cwd, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr.decode()
    return done.stdout.decode()


@settings(max_examples=40, deadline=None)
@given(trees())
def test_gnu_cpio_lists_exactly_the_entries_in_order(entries: list[Entry]) -> None:
    assert cpio("-t", "--quiet", archive=cpio_newc(entries)).splitlines() == [e.path for e in entries]


@settings(max_examples=25, deadline=None)
@given(trees())
def test_gnu_cpio_extracts_the_same_contents_and_link_targets(entries: list[Entry]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        cpio("-i", "-d", "--quiet", "--no-absolute-filenames", archive=cpio_newc(entries), cwd=out)
        for entry in entries[1:]:
            extracted = out / entry.path
            if extracted.is_symlink():
                assert extracted.readlink().as_posix().encode() == entry.data
            else:
                assert extracted.read_bytes() == entry.data
                assert extracted.stat().st_mode & 0o777 == entry.mode & 0o777


@settings(max_examples=40)
@given(trees())
def test_same_entries_give_same_bytes(entries: list[Entry]) -> None:
    assert cpio_newc(entries) == cpio_newc(list(entries))


def test_busybox_initramfs_is_deterministic_and_lists_the_boot_essentials() -> None:
    fake_busybox = b"\x7fELF" + bytes(range(256)) * 8
    image = busybox_initramfs(fake_busybox, MARKER_INIT_SCRIPT)
    assert image == busybox_initramfs(fake_busybox, MARKER_INIT_SCRIPT)
    listed = cpio("-t", "--quiet", archive=gzip.decompress(image)).splitlines()
    assert {"init", "bin/busybox", "bin/sh", "dev/console"} <= set(listed)


def test_console_device_node_has_the_console_numbers() -> None:
    listing = cpio(
        "-t", "-v", "--quiet", archive=cpio_newc([directory("dev"), char_device("dev/console", 5, 1)])
    )
    console_line = listing.splitlines()[1]
    assert console_line.startswith("crw-------")
    assert re.search(r"\b5,\s+1\b", console_line), console_line


def test_marker_bytes_appear_only_once_a_shell_has_run_init() -> None:
    archive = gzip.decompress(busybox_initramfs(b"busybox", MARKER_INIT_SCRIPT))
    assert USERSPACE_MARKER.encode() not in archive
    # Only the echo line: the script's last line powers the machine off, which no test should run on a host.
    (echo_line,) = [line for line in MARKER_INIT_SCRIPT.splitlines() if line.startswith("echo ")]
    printed = subprocess.run(["sh", "-c", echo_line], capture_output=True, text=True, timeout=10, check=True)
    assert printed.stdout == USERSPACE_MARKER + "\n"


def test_an_initrd_prints_the_marker_when_its_init_is_the_marker_script_gzip_or_not() -> None:
    marker = busybox_initramfs(b"busybox", MARKER_INIT_SCRIPT)
    other = busybox_initramfs(b"busybox", "#!/bin/sh\nexec /bin/sh\n")
    assert prints_marker(marker) and prints_marker(gzip.decompress(marker))
    assert not prints_marker(other) and not prints_marker(b"\x1f\x8b not gzip")
