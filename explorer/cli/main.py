"""The `explorer` application: one typer app, one sub-module per command group.

Exit codes: 0 success, 1 the job failed, 2 usage error or bad input. Errors a user can
cause are `ExplorerError`s; they are turned into one line on stderr here and nowhere else.
"""

import sys

import typer

from explorer.errors import ExplorerError

app = typer.Typer(
    name="explorer",
    help="Find, by search, an emulated machine in which an unmodified embedded Linux kernel boots.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


def _register() -> None:
    from explorer.cli import bench, boot, corpus, inspect, run, runner, search

    inspect.register(app)
    boot.register(app)
    search.register(app)
    run.register(app)
    bench.register(app)
    app.add_typer(corpus.app, name="corpus")
    app.add_typer(runner.app, name="runner")


def run() -> None:
    """Console entry point: run the app and map user errors to one line and an exit code."""
    _register()
    try:
        app()
    except ExplorerError as err:
        print(f"explorer: error: {err}", file=sys.stderr)
        sys.exit(err.exit_code)
    except KeyboardInterrupt:
        print("explorer: interrupted", file=sys.stderr)
        sys.exit(130)
