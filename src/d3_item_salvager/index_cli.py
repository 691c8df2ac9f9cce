"""The command line: `d3-item-salvager` or `python -m d3_item_salvager`: the players' commands
(items, item, guides) and, under `workers`, the workers' (`d3-item-salvager workers run-scheduler`,
the same application as `python -m d3_item_salvager.workers`).

Read-only on the index. Exit codes: 0 an answer, 1 no item matches the name asked for, 2 bad
usage, an unknown class or guide (or a guide prefix several slugs start with), or no readable index.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

from d3_item_salvager.cli_options import ConfigOption, add_root_options, usage_error
from d3_item_salvager.workers.cli import app as workers_app

if TYPE_CHECKING:
    from d3_item_salvager.data.queries import IndexQueries
    from d3_item_salvager.data.query_models import ItemReport

# SQLAlchemy, pydantic and rich are imported by the command that runs, so `--help` is quick.

EXIT_OK, EXIT_NO_MATCH, EXIT_USAGE = 0, 1, 2
DEFAULT_TABLE_LIMIT = 50
T = TypeVar("T")

SCRIPT_NAME = "d3-item-salvager"  # the console script; `__main__` names itself instead

# add_completion: Typer's --install-completion / --show-completion for the console script.
# Plain help, as the workers' (rich_markup_mode=None): one style, and a quick `--help`.
app = typer.Typer(no_args_is_help=True, pretty_exceptions_enable=False, rich_markup_mode=None)

JsonOption = Annotated[bool, typer.Option("--json", help="Print one JSON document on stdout.")]
LimitOption = Annotated[
    int | None,
    typer.Option(
        "--limit",
        min=0,
        metavar="N",
        help=f"Show at most N rows (0: all). Tables default to {DEFAULT_TABLE_LIMIT}, JSON to all.",
    ),
]
ClassOption = Annotated[
    str | None,
    typer.Option(
        "--class",
        help="A build's class (its planner profile's), e.g. wizard or 'demon hunter'.",
        metavar="CLASS",
    ),
]


add_root_options(
    app,
    SCRIPT_NAME,
    "Ask the index which items Maxroll's build guides use: keep them, salvage the rest.",
)


def _fail(message: str) -> typer.Exit:
    return usage_error(message)


def _ask(config_file: Path | None, question: Callable[[IndexQueries], Awaitable[T]]) -> T:
    """Open the index read-only, ask, close; every lookup or database error exits 2."""
    import asyncio  # with its ssl import, a large part of a `--help`: only answers need it

    from d3_item_salvager.config import load_config
    from d3_item_salvager.data.queries import IndexQueries
    from d3_item_salvager.data.query_models import (
        AmbiguousGuideError,
        UnknownClassError,
        UnknownGuideError,
    )
    from d3_item_salvager.errors import ConfigError, IndexDatabaseError

    async def run() -> T:
        async with IndexQueries.open(config) as queries:
            return await question(queries)

    try:
        config = load_config(config_file)
        return asyncio.run(run())
    except (
        ConfigError,
        IndexDatabaseError,
        UnknownClassError,
        UnknownGuideError,
        AmbiguousGuideError,
    ) as exc:
        raise _fail(str(exc)) from None


def _check_class(class_name: str | None) -> None:
    from d3_item_salvager.data.queries import class_key
    from d3_item_salvager.data.query_models import UnknownClassError

    if class_name is not None:
        try:
            class_key(class_name)
        except UnknownClassError as exc:
            raise _fail(str(exc)) from None


def _console() -> Any:
    from rich.console import Console

    return Console()


def _cut(rows: list[T], limit: int | None, as_json: bool) -> list[T]:
    if limit is None:
        limit = 0 if as_json else DEFAULT_TABLE_LIMIT
    return rows[:limit] if limit else rows


@app.command("items")
def items(
    class_name: ClassOption = None,
    guide: Annotated[
        str | None,
        typer.Option(
            "--guide",
            help="A guide by slug (or a prefix of one only), URL or post id.",
            metavar="GUIDE",
        ),
    ] = None,
    unused: Annotated[
        bool,
        typer.Option(
            "--unused",
            help="Salvage candidates: legendary and set items no build (of --class) uses.",
        ),
    ] = False,
    limit: LimitOption = None,
    as_json: JsonOption = False,
    config_file: ConfigOption = None,
) -> None:
    """Items the builds use (most used first), or with --unused the ones none uses."""
    if unused and guide is not None:
        raise _fail("--unused lists items no build uses; combine it with --class, not --guide")
    _check_class(class_name)
    if unused:
        found: list[Any] = _ask(config_file, lambda q: q.salvage_candidates(class_name))
    else:
        found = _ask(config_file, lambda q: q.items_used(class_name=class_name, guide=guide))
    shown = _cut(found, limit, as_json)
    from d3_item_salvager import index_render as render

    if as_json:
        scope = {"class": class_name, "guide": guide, "unused": unused}
        typer.echo(json.dumps(render.items_document(scope, shown, len(found))))
        return
    if not found:
        typer.echo("no items" if unused else "no build uses any item in this scope")
        return
    where = " and ".join(
        filter(
            None,
            (f"{class_name} builds" if class_name else "", f"guide {guide}" if guide else ""),
        )
    )
    console = _console()
    if unused:
        title = "Salvage candidates" + (f" for {where}" if where else " (no build uses them)")
        render.print_catalog(console, shown, title)
    else:
        render.print_used_items(console, shown, "Items used" + (f" by {where}" if where else ""))
    render.print_note(console, render.limit_note(len(shown), len(found)))


@app.command("item")
def item(
    name: Annotated[
        str, typer.Argument(help="An item name (any case, part of it) or an id.", metavar="NAME")
    ],
    show_all: Annotated[
        bool, typer.Option("--all", help="Show every matching item in full, not a list of names.")
    ] = False,
    limit: LimitOption = None,
    as_json: JsonOption = False,
    config_file: ConfigOption = None,
) -> None:
    """Is this item used, by which guides and builds, and how; or is it a salvage candidate.

    Several items match: their names, to ask again for one (or --all). None: the closest names,
    and exit 1.
    """

    async def question(q: IndexQueries) -> tuple[list[ItemReport], list[str]]:
        reports = await q.find_items(name)
        return reports, ([] if reports else await q.suggest_names(name))

    reports, suggestions = _ask(config_file, question)
    from d3_item_salvager import index_render as render
    from d3_item_salvager.data.queries import is_exact_match

    if as_json:
        typer.echo(json.dumps(render.item_document(name, reports, suggestions)))
        if not reports:
            raise typer.Exit(EXIT_NO_MATCH)
        return
    if not reports:
        hint = f"; did you mean: {', '.join(suggestions)}?" if suggestions else ""
        typer.echo(f"no item matches {name!r}{hint}")
        raise typer.Exit(EXIT_NO_MATCH)
    console = _console()
    exact = [report for report in reports if is_exact_match(report, name)]
    if len(reports) > 1 and not show_all and not exact:
        render.print_choices(console, name, _cut(reports, limit, False), len(reports))
        return
    per_item = limit if limit else (None if limit == 0 else DEFAULT_TABLE_LIMIT)
    for report in reports if show_all else exact or reports:
        render.print_item_report(console, report, per_item)
    others = len(reports) - len(exact)
    if exact and others and not show_all:
        render.print_note(console, f"{others} other item(s) match {name!r}; --all shows them")


@app.command("guides")
def guides(
    class_name: ClassOption = None,
    as_json: JsonOption = False,
    config_file: ConfigOption = None,
) -> None:
    """The guides in the index, with their slugs (what --guide takes) and builds (--class: guides
    with a build of that class)."""
    _check_class(class_name)
    found = _ask(config_file, lambda q: q.guides(class_name))
    from d3_item_salvager import index_render as render

    if as_json:
        typer.echo(json.dumps({"guides": [guide.to_dict() for guide in found]}))
        return
    render.print_guides(_console(), found)


app.add_typer(
    workers_app,
    name="workers",
    help="Run the background jobs that keep the index fresh (as d3-item-salvager-workers).",
)


def main(prog_name: str = SCRIPT_NAME) -> None:
    """Console entry point; help and usage lines name the command as `prog_name`."""
    app(prog_name=prog_name)
