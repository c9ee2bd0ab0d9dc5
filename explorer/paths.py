"""Where explorer keeps what outlives one command: caches keyed by content, never inside a clone."""

import os
from pathlib import Path


def cache_root() -> Path:
    """The cache directory: $EXPLORER_CACHE, else $XDG_CACHE_HOME/explorer, else ~/.cache/explorer."""
    if env := os.environ.get("EXPLORER_CACHE"):
        return Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "explorer"
