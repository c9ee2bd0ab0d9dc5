"""Small helpers the tests share (importable as `tests.helpers`)."""

from __future__ import annotations

import subprocess
from pathlib import Path


def run(*command: str | Path, stdin: bytes | None = None) -> bytes:
    """Run a host tool (mkimage, a compressor) and return its stdout; fail the test if it fails."""
    return subprocess.run([str(c) for c in command], input=stdin, capture_output=True, check=True).stdout
