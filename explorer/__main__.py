"""`python -m explorer` runs the CLI."""

from explorer.cli.main import run

run()
