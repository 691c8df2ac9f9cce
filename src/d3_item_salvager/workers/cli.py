"""Command line: `python -m d3_item_salvager.workers COMMAND`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from d3_item_salvager.config import AppConfig, load_config
from d3_item_salvager.errors import ConfigError

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2

app = typer.Typer(
    name="d3-item-salvager-workers",
    help="Background jobs that keep the d3-item-salvager index of Maxroll build guides fresh.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

ConfigOption = Annotated[
    Path | None,
    typer.Option("--config", help="TOML config file (default: $D3IS_CONFIG_FILE, if set)."),
]


@app.callback()
def _root() -> None:
    """Background jobs that keep the d3-item-salvager index of Maxroll build guides fresh."""


def _load_or_exit(config_file: Path | None) -> AppConfig:
    try:
        return load_config(config_file)
    except ConfigError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(EXIT_USAGE) from None


@app.command("run-scheduler")
def run_scheduler(config_file: ConfigOption = None) -> None:
    """Run the scheduler until SIGINT or SIGTERM."""
    _load_or_exit(config_file)
    typer.echo("error: the scheduler is not built yet", err=True)
    raise typer.Exit(EXIT_FAILED)


def main() -> None:
    """Console entry point."""
    app()
