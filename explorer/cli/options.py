"""Options several commands share, declared once so that each says the same thing."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

QemuOption = Annotated[
    Path | None,
    typer.Option(
        envvar="EXPLORER_QEMU",
        help="Runner build directory to use [default: this explorer's, `explorer runner path`].",
    ),
]
