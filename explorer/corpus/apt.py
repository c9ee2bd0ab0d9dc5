"""A private apt for one archive and one foreign architecture: Debian package indexes and
downloads, by package name.

Everything apt reads or writes (sources list, package lists, its cache, a dpkg status file)
lives in one directory under the explorer cache, so fetching armhf or mipsel packages on an
amd64 host neither needs root nor touches /etc/apt or /var. Each archive of a release (the
release itself, its -updates and its -security) gets an apt of its own: when two archives list
the same package, apt downloads it from one of them only, and a mirror that serves one archive's
pool but not the other's would then lose a package it has. This module must never install
anything and never read the host's package configuration beyond apt's own defaults.
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from explorer.errors import CorpusError

DEBIAN_KEYRING = Path("/usr/share/keyrings/debian-archive-keyring.gpg")
DEBIAN_MIRROR = "http://deb.debian.org"

UPDATE_TIMEOUT_S = 900
QUERY_TIMEOUT_S = 120
DOWNLOAD_TIMEOUT_S = 1800

FIX_NETWORK = "check that deb.debian.org is reachable, then run `explorer corpus fetch` again"


@dataclass(frozen=True)
class PackageVersion:
    """One binary package as the index describes it: what to download and how to check it."""

    package: str
    version: str
    archive: str  # the archive's path on the mirror: "debian" or "debian-security"
    suite: str  # the archive's suite: "bookworm", "bookworm-updates", "bookworm-security"
    arch: str
    filename: str  # path in the archive pool; its basename is the .deb's file name
    size: int
    sha256: str

    @property
    def deb_name(self) -> str:
        return Path(self.filename).name

    def same_bytes(self, other: PackageVersion) -> bool:
        """Whether both name the same .deb, whichever archive serves it."""
        return (self.package, self.version, self.sha256) == (other.package, other.version, other.sha256)


@dataclass(frozen=True)
class Archive:
    """One archive line of a release: where on the mirror, and which suite."""

    path: str  # "debian" or "debian-security"
    suite: str

    def line(self) -> str:
        return f"{mirror()}/{self.path} {self.suite} main"


def mirror() -> str:
    """The archive's base URL: $EXPLORER_DEBIAN_MIRROR (a local mirror or a proxy), else Debian's
    own. It must hold debian/ and debian-security/ as Debian's does."""
    return os.environ.get("EXPLORER_DEBIAN_MIRROR", DEBIAN_MIRROR).rstrip("/")


def keyring() -> Path:
    """The keyring the archive's Release files are checked against: $EXPLORER_DEBIAN_KEYRING for a
    mirror signed by its own key, else Debian's archive keyring."""
    return Path(os.environ.get("EXPLORER_DEBIAN_KEYRING", DEBIAN_KEYRING))


def archives(release: str) -> tuple[Archive, ...]:
    """The archives of one Debian release, the release's own first: pinned by name, so the corpus
    is the same on hosts that run another release (or no Debian at all)."""
    return (
        Archive("debian", release),
        Archive("debian", f"{release}-updates"),
        Archive("debian-security", f"{release}-security"),
    )


def newest_first(packages: Iterable[PackageVersion]) -> list[PackageVersion]:
    """`packages` by Debian version, newest first (dpkg's order); equal versions keep their order."""

    def compare(a: PackageVersion, b: PackageVersion) -> int:
        if a.version == b.version:
            return 0
        newer = subprocess.run(["dpkg", "--compare-versions", a.version, "gt", b.version], check=False)
        return -1 if newer.returncode == 0 else 1

    return sorted(packages, key=functools.cmp_to_key(compare))


class PrivateApt:
    """apt-get / apt-cache pointed at `state_dir` for one Debian archive and one architecture `arch`."""

    def __init__(self, archive: Archive, arch: str, state_dir: Path) -> None:
        self.archive = archive
        self.suite = archive.suite
        self.arch = arch
        self.state_dir = state_dir

    def _options(self) -> list[str]:
        # apt-get update deletes every file it does not know from the lists directory, so
        # the lists get a directory of their own, next to (never around) our other files.
        d = self.state_dir
        return [
            f"-oAPT::Architecture={self.arch}",
            f"-oAPT::Architectures={self.arch}",
            f"-oDir::State::Lists={d / 'lists'}",
            f"-oDir::State::status={d / 'status'}",
            f"-oDir::Cache={d / 'cache'}",
            f"-oDir::Etc::SourceList={d / 'sources.list'}",
            f"-oDir::Etc::SourceParts={d / 'sources.list.d'}",
        ]

    def _prepare(self) -> None:
        if shutil.which("apt-get") is None or shutil.which("apt-cache") is None:
            raise CorpusError("apt-get is not installed: run the corpus fetch on a Debian or Ubuntu host")
        signed_by = keyring()
        if not signed_by.is_file():
            raise CorpusError(f"{signed_by} is missing: install the debian-archive-keyring package")
        for sub in ("lists/partial", "cache/archives/partial", "sources.list.d"):
            (self.state_dir / sub).mkdir(parents=True, exist_ok=True)
        (self.state_dir / "status").touch()
        (self.state_dir / "sources.list").write_text(f"deb [signed-by={signed_by}] {self.archive.line()}\n")

    def _run(
        self, tool: str, args: list[str], timeout_s: int, cwd: Path | None = None, may_fail: bool = False
    ) -> str:
        command = [tool, *self._options(), *args]
        try:
            done = subprocess.run(
                command, cwd=cwd, capture_output=True, text=True, timeout=timeout_s, check=False
            )
        except subprocess.TimeoutExpired as err:
            raise CorpusError(
                f"`{tool} {args[0]}` for {self.suite} {self.arch} took over {timeout_s} s: {FIX_NETWORK}"
            ) from err
        if done.returncode != 0 and not may_fail:
            last = (done.stderr.strip().splitlines() or ["no message"])[-1]
            raise CorpusError(
                f"`{tool} {args[0]}` for {self.suite} {self.arch} failed ({last}): {FIX_NETWORK}"
            )
        return done.stdout

    def update(self) -> None:
        """Refresh the package lists.

        An archive without this architecture (or gone, as old releases' -updates) fails its
        update: that is harmless (it lists nothing), and when the network is down the lookups
        that follow say so.
        """
        self._prepare()
        self._run("apt-get", ["update"], UPDATE_TIMEOUT_S, may_fail=True)

    def package_names(self, prefix: str) -> list[str]:
        """The names of the packages in the index that start with `prefix` (letters and '-' only)."""
        if not re.fullmatch(r"[a-z0-9-]+", prefix):
            raise ValueError(f"{prefix!r} would need escaping for apt-cache's POSIX regex")
        listing = self._run(
            "apt-cache", ["search", "--names-only", f"^{prefix}"], QUERY_TIMEOUT_S, may_fail=True
        )
        return [line.split(" - ", 1)[0] for line in listing.splitlines()]

    def versions(self, package: str) -> list[PackageVersion]:
        """Every version of `package` the index lists (each once), in apt's order; empty if none."""
        listing = self._run("apt-cache", ["show", package], QUERY_TIMEOUT_S, may_fail=True)
        found: list[PackageVersion] = []
        for record in listing.split("\n\n"):
            if record.strip() and (version := self._package_version(package, record)) not in found:
                found.append(version)
        return found

    def _package_version(self, package: str, record: str) -> PackageVersion:
        fields = dict(
            line.split(": ", 1) for line in record.splitlines() if ": " in line and not line[0].isspace()
        )
        try:
            return PackageVersion(
                package=fields["Package"],
                version=fields["Version"],
                archive=self.archive.path,
                suite=self.suite,
                arch=fields["Architecture"],
                filename=fields["Filename"],
                size=int(fields["Size"]),
                sha256=fields["SHA256"],
            )
        except (KeyError, ValueError) as err:
            raise CorpusError(
                f"the {self.suite} {self.arch} index has no usable record for {package}: {FIX_NETWORK}"
            ) from err

    def download(self, package: PackageVersion, into: Path) -> Path:
        """Download exactly `package` (name=version) into the directory `into`; apt checks the hash."""
        self._run(
            "apt-get", ["download", f"{package.package}={package.version}"], DOWNLOAD_TIMEOUT_S, cwd=into
        )
        # apt names the file after the pool name, with the epoch's ':' escaped as '%3a'.
        matches = sorted(into.glob(f"{package.package}_*_{package.arch}.deb"))
        if len(matches) != 1:
            raise CorpusError(
                f"apt-get download of {package.package} left {len(matches)} files: {FIX_NETWORK}"
            )
        return matches[0]
