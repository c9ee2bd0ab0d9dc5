"""A private apt for one foreign architecture: Debian package indexes and downloads, by package name.

Everything apt reads or writes (sources list, package lists, its cache, a dpkg status file)
lives in one directory under the explorer cache, so fetching armhf or mipsel packages on an
amd64 host neither needs root nor touches /etc/apt or /var. This module must never install
anything and never read the host's package configuration beyond apt's own defaults.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from explorer.errors import CorpusError

KEYRING = Path("/usr/share/keyrings/debian-archive-keyring.gpg")

UPDATE_TIMEOUT_S = 900
QUERY_TIMEOUT_S = 120
DOWNLOAD_TIMEOUT_S = 1800

FIX_NETWORK = "check that deb.debian.org is reachable, then run `explorer corpus fetch` again"


@dataclass(frozen=True)
class PackageVersion:
    """One binary package as the index describes it: what to download and how to check it."""

    package: str
    version: str
    suite: str
    arch: str
    filename: str  # path in the archive pool; its basename is the .deb's file name
    size: int
    sha256: str

    @property
    def deb_name(self) -> str:
        return Path(self.filename).name


def sources(suite: str) -> tuple[str, ...]:
    """The archive lines of one Debian release: pinned by name, so the corpus is the same on
    hosts that run another release (or no Debian at all)."""
    return (
        f"http://deb.debian.org/debian {suite} main",
        f"http://deb.debian.org/debian {suite}-updates main",
        f"http://deb.debian.org/debian-security {suite}-security main",
    )


class PrivateApt:
    """apt-get / apt-cache pointed at `state_dir` for one Debian `suite` and one architecture `arch`."""

    def __init__(self, suite: str, arch: str, state_dir: Path) -> None:
        self.suite = suite
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
        if not KEYRING.is_file():
            raise CorpusError(f"{KEYRING} is missing: install the debian-archive-keyring package")
        for sub in ("lists/partial", "cache/archives/partial", "sources.list.d"):
            (self.state_dir / sub).mkdir(parents=True, exist_ok=True)
        (self.state_dir / "status").touch()
        lines = [f"deb [signed-by={KEYRING}] {source}\n" for source in sources(self.suite)]
        (self.state_dir / "sources.list").write_text("".join(lines))

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

        apt fails the whole update when one index fails (often -security, which has no kernels):
        that is harmless, and when the network is down the lookups that follow say so.
        """
        self._prepare()
        self._run("apt-get", ["update"], UPDATE_TIMEOUT_S, may_fail=True)

    def package_names(self, prefix: str) -> list[str]:
        """The names of the packages in the index that start with `prefix` (letters and '-' only)."""
        if not re.fullmatch(r"[a-z0-9-]+", prefix):
            raise ValueError(f"{prefix!r} would need escaping for apt-cache's POSIX regex")
        listing = self._run("apt-cache", ["search", "--names-only", f"^{prefix}"], QUERY_TIMEOUT_S)
        return [line.split(" - ", 1)[0] for line in listing.splitlines()]

    def candidate(self, package: str) -> PackageVersion:
        """The version apt would download for `package`, with the index's size and SHA-256."""
        record = self._run("apt-cache", ["show", "--no-all-versions", package], QUERY_TIMEOUT_S)
        fields = dict(
            line.split(": ", 1) for line in record.splitlines() if ": " in line and not line[0].isspace()
        )
        try:
            return PackageVersion(
                package=fields["Package"],
                version=fields["Version"],
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
