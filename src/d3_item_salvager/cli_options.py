"""Command-line pieces the workers' and the players' programs share.

Only Typer is imported here, so each program's `--help` stays quick.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

EXIT_OK, EXIT_USAGE = 0, 2

ConfigOption = Annotated[
    Path | None,
    typer.Option("--config", help="TOML config file (default: $D3IS_CONFIG_FILE).", metavar="FILE"),
]


def usage_error(message: str) -> typer.Exit:
    """Print `error: message` on stderr; the caller raises the returned exit (code 2)."""
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(EXIT_USAGE)


def print_version_and_exit(script_name: str, asked: bool) -> None:
    """The `--version` callback's work: `SCRIPT VERSION` on stdout, then exit 0."""
    if asked:
        from importlib.metadata import version

        typer.echo(f"{script_name} {version('d3-item-salvager')}")
        raise typer.Exit(EXIT_OK)


def add_root_options(app: typer.Typer, script_name: str, description: str) -> None:
    """The root of both programs: `--version` (prints `SCRIPT VERSION`), and `description` as
    the program's help."""

    def print_version(asked: bool) -> None:
        print_version_and_exit(script_name, asked)

    def root(
        _version: bool = typer.Option(
            False,
            "--version",
            callback=print_version,
            is_eager=True,
            help="Print the version and exit.",
        ),
    ) -> None:
        pass

    root.__doc__ = description
    app.callback()(root)
