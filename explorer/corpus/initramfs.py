"""Initramfs images: a newc cpio archive written in Python, so no host tool shapes what the guest sees.

The archive is deterministic (fixed inode numbers, owners and mtimes): the same inputs give
the same bytes, which keeps runs that boot it reproducible.
"""

from __future__ import annotations

import gzip
import hashlib
import stat
from dataclasses import dataclass

# What /init prints once user space runs. The shell computes the "42", so the marker's bytes
# exist nowhere in the archive or in guest memory until a user-space program has executed.
USERSPACE_MARKER = "explorer-init: user space reached, 6*7=42"
# After the marker, for people (`explorer run`): busybox's applets as commands, /proc and /sys,
# and a shell on the console (init's stdin, stdout and stderr are /dev/console); job control
# stays off (/dev/console is never a controlling terminal). Leaving the shell powers the machine
# off. A search's run ends where that shell first reads the console (the console_input hook,
# explorer.runner.kernel_hooks), so nothing before the marker changes what a search sees.
MARKER_INIT_SCRIPT = """#!/bin/sh
echo "explorer-init: user space reached, 6*7=$((6 * 7))"
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t sysfs sysfs /sys
/bin/busybox --install -s /bin
/bin/sh
exec /bin/busybox poweroff -f
"""
# The corpus rebuilds an initramfs made with another /init (explorer.corpus.manifest.ArchRecord).
MARKER_INIT_SHA256 = hashlib.sha256(MARKER_INIT_SCRIPT.encode()).hexdigest()
# What an /init that prints the marker carries verbatim: the line before the shell computes 42.
_MARKER_SOURCE = USERSPACE_MARKER.split("=", 1)[0].encode()
_GZIP_MAGIC = b"\x1f\x8b"


@dataclass(frozen=True)
class Entry:
    """One file, directory, symlink or device node in the archive."""

    path: str  # without a leading slash, e.g. "bin/busybox"
    mode: int  # full st_mode, type bits included
    data: bytes = b""  # file contents, or the link target for a symlink
    rdev: tuple[int, int] = (0, 0)  # (major, minor) for device nodes


def directory(path: str) -> Entry:
    return Entry(path, stat.S_IFDIR | 0o755)


def regular(path: str, data: bytes, mode: int = 0o755) -> Entry:
    return Entry(path, stat.S_IFREG | mode, data)


def symlink(path: str, target: str) -> Entry:
    return Entry(path, stat.S_IFLNK | 0o777, target.encode())


def char_device(path: str, major: int, minor: int) -> Entry:
    return Entry(path, stat.S_IFCHR | 0o600, rdev=(major, minor))


def _pad4(n: int) -> bytes:
    return b"\0" * (-n % 4)


def _header(ino: int, entry: Entry, name: bytes) -> bytes:
    nlink = 2 if stat.S_ISDIR(entry.mode) else 1
    fields = (
        ino,
        entry.mode,
        0,
        0,
        nlink,
        0,
        len(entry.data),
        0,
        0,
        entry.rdev[0],
        entry.rdev[1],
        len(name) + 1,
        0,
    )
    return b"070701" + b"".join(b"%08X" % f for f in fields)


def cpio_newc(entries: list[Entry]) -> bytes:
    """Serialize `entries` (parents before children) as an uncompressed newc cpio archive."""
    out = bytearray()
    for ino, entry in enumerate([*entries, Entry("TRAILER!!!", 0)], start=1):
        name = entry.path.encode()
        out += _header(ino, entry, name) + name + b"\0"
        out += _pad4(len(out))
        out += entry.data + _pad4(len(entry.data))
    out += _pad4(len(out))
    return bytes(out)


def prints_marker(initrd: bytes) -> bool:
    """Does this initrd (a cpio archive, gzip'd or not) carry an /init that prints the marker?"""
    try:
        archive = gzip.decompress(initrd) if initrd.startswith(_GZIP_MAGIC) else initrd
    except (OSError, EOFError):
        return False
    return _MARKER_SOURCE in archive


def busybox_initramfs(busybox: bytes, init_script: str) -> bytes:
    """A gzip'd initramfs with a static busybox, /dev/console, and `init_script` as /init."""
    entries = [
        directory("bin"),
        regular("bin/busybox", busybox),
        symlink("bin/sh", "busybox"),
        directory("dev"),
        char_device("dev/console", 5, 1),
        directory("proc"),
        directory("sys"),
        regular("init", init_script.encode()),
    ]
    return gzip.compress(cpio_newc(entries), mtime=0)
