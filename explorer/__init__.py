"""explorer: find, by search, an emulated machine in which an unmodified embedded Linux kernel boots."""

__version__ = "0.1.0"
