"""Symbol recovery on Debian's arm64 kernel against its real System.map, and how long ingestion takes.

Debian packages an 83-byte placeholder as /boot/System.map; the real symbol table is in the
kernel's -dbg package (about 800 MB), whose vmlinux `nm -n` turns into the System.map the build
made (scripts/mksysmap drops the same entries: nm types a, N, U, w, mapping symbols `$x`/`$d`,
local labels, __crc_). The -dbg package is fetched with the corpus's private apt into a temporary
directory (or give --vmlinux). Printed: the ingestion's wall and CPU time (uncached, best of
`--repeat`), how many recovered (name, address) pairs System.map has, and how many of
System.map's text symbols within the kallsyms text range were recovered, with the prefixes of
those that were not (kallsyms leaves some out by design).

    .venv/bin/python benchmarks/arm64_symbols.py [--flavour arm64] [--vmlinux FILE] [--repeat 3]
"""

from __future__ import annotations

import argparse
import collections
import re
import subprocess
import tempfile
import time
from pathlib import Path

from explorer import corpus
from explorer.corpus.apt import PrivateApt, archives
from explorer.corpus.catalogue import KERNELS
from explorer.corpus.fetch import _apt_dir
from explorer.firmware.ingest import ingest
from explorer.firmware.model import Firmware

MKSYSMAP_DROPS = re.compile(r"^(\$|\.L|L0|__crc_)")
TEXT = frozenset("Tt")


def fetch_vmlinux(flavour: str, into: Path) -> Path:
    """The vmlinux of the corpus kernel `flavour`, from its -dbg package of the same version."""
    the_corpus = corpus.load()
    record = the_corpus.manifest.kernels[flavour]
    package = f"{record.package}-dbg"
    source = KERNELS[flavour]
    for archive in archives(source.suite):
        apt = PrivateApt(archive, source.arch, _apt_dir(archive.suite, source.arch))
        apt.update()
        versions = [v for v in apt.versions(package) if v.version == record.version]
        if versions:
            deb = apt.download(versions[0], into)
            member = f"./usr/lib/debug/boot/vmlinux-{the_corpus.release(flavour)}"
            tar = subprocess.run(
                f"dpkg-deb --fsys-tarfile {deb} | tar -x -C {into} {member}", shell=True, check=False
            )
            if tar.returncode != 0:
                raise SystemExit(f"could not extract {member} from {deb}")
            deb.unlink()
            return into / member
    raise SystemExit(f"no {package} {record.version} in the {source.suite} archives")


def system_map(vmlinux: Path) -> list[tuple[int, str, str]]:
    """(address, type, name) as scripts/mksysmap writes System.map from `nm -n vmlinux`."""
    listing = subprocess.run(["nm", "-n", str(vmlinux)], capture_output=True, text=True, check=True).stdout
    out = []
    for line in listing.splitlines():
        fields = line.split()
        if len(fields) == 3 and fields[1] not in "aNUw" and not MKSYSMAP_DROPS.match(fields[2]):
            out.append((int(fields[0], 16), fields[1], fields[2]))
    return out


def timed_ingest(kernel: Path, repeat: int) -> tuple[Firmware, float, float]:
    """The firmware, and the best wall and CPU seconds of `repeat` uncached ingestions."""
    walls, cpus = [], []
    firmware = None
    for _ in range(repeat):
        wall, cpu = time.perf_counter(), time.process_time()
        firmware = ingest(kernel, use_cache=False)
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    assert firmware is not None
    return firmware, min(walls), min(cpus)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--flavour", default="arm64")
    parser.add_argument("--vmlinux", type=Path)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    kernel = corpus.load().kernel(args.flavour)
    firmware, wall, cpu = timed_ingest(kernel, args.repeat)
    size = kernel.stat().st_size
    print(f"{kernel.name}: {size} bytes, ingested uncached in {wall:.2f} s ({cpu:.2f} s CPU)")
    print(f"base {firmware.symbols.base:#x}: {firmware.symbols.proof}")
    with tempfile.TemporaryDirectory() as tmp:
        vmlinux = args.vmlinux or fetch_vmlinux(args.flavour, Path(tmp))
        truth = system_map(vmlinux)
    recovered = {(s.name, s.address) for s in firmware.symbols.symbols}
    pairs = {(name, address) for address, _, name in truth}
    agree = len(recovered & pairs)
    print(
        f"recovered {len(recovered)} (name, address) pairs; {agree} are in System.map "
        f"({100 * agree / len(recovered):.3f}%); {len(truth)} System.map entries"
    )
    low, high = min(a for _, a in recovered), max(a for _, a in recovered)
    text = {(name, address) for address, kind, name in truth if kind in TEXT and low <= address <= high}
    missed = text - recovered
    print(
        f"System.map text symbols in the kallsyms range {low:#x}-{high:#x}: {len(text)}, recovered "
        f"{len(text) - len(missed)} ({100 * (len(text) - len(missed)) / len(text):.3f}%)"
    )
    prefixes = collections.Counter(re.match(r"_*[a-z0-9]+", name).group(0) for name, _ in missed)  # type: ignore[union-attr]
    print(f"not recovered, by prefix: {dict(prefixes.most_common(8))}")


if __name__ == "__main__":
    main()
