"""Errors a user can cause, each with the exit code the CLI gives it.

They are raised deep inside and caught once, at the CLI edge, where they become one line
on stderr. Anything else that escapes is a bug and is allowed to crash loudly.
"""


class ExplorerError(Exception):
    """A job that could not be done (exit code 1). The message says what to do next."""

    exit_code = 1


class BadInput(ExplorerError):
    """The user gave us something we cannot use (exit code 2)."""

    exit_code = 2


class FirmwareError(BadInput):
    """The firmware image is corrupt, truncated, of an unsupported kind or architecture."""


class DeviceTreeError(BadInput):
    """The device tree blob is malformed."""


class CorpusError(ExplorerError):
    """The real-kernel corpus could not be fetched or is not there yet."""


class RunnerError(ExplorerError):
    """A runner (one QEMU process) could not run: missing binary, a config QEMU refused."""


class RunnerNotBuilt(BadInput):
    """No runner build for this explorer in the cache (exit code 2); the message names the command
    that builds it (explorer.runner.build)."""


class RunnerBuildFailed(ExplorerError):
    """`explorer runner build` could not build the runner (exit code 1); the message says why."""


class RunnerProtocolError(RunnerError):
    """The runner's event stream is not a sequence of well-formed frames."""


class StoreError(BadInput):
    """A work directory the store cannot use: not a store, written by another store version,
    corrupt, or in use by a running search (exit code 2). Nothing in it is changed."""
