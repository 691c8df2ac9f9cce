"""Tables that fit the screen without cutting what players type back (slugs, names, ids).

In a terminal: a rich table whose identifier columns keep their full width; the other columns
wrap, and when even that does not fit, the right-most of them are left out (a note says which).
Piped: plain aligned text, never cut nor wrapped, no box drawing (for grep, less and scripts).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from rich.console import Console
from rich.table import Table
from rich.text import Text

# Words longer than this may be folded across lines rather than widen their column.
LONG_WORD = 16
GAP = "  "  # between plain columns


@dataclass(frozen=True, slots=True)
class Column:
    header: str
    identifier: bool = False  # a value players type back: never cut, never left out
    right: bool = False  # numbers


def print_table(
    console: Console, title: str, columns: Sequence[Column], rows: Sequence[Sequence[str]]
) -> None:
    """Print `rows` under `title`: a fitted rich table in a terminal, plain text otherwise."""
    if not console.is_terminal:
        print_plain(console, title, columns, rows)
        return
    shown = list(range(len(columns)))
    while (widths := _fit(console, [columns[i] for i in shown], rows, shown)) is None:
        optional = [i for i in shown if not columns[i].identifier]
        if not optional:  # the identifiers alone are wider than the terminal
            print_plain(console, title, columns, rows)
            return
        shown.remove(optional[-1])
    table = Table(title=title, title_justify="left")
    for index, width in zip(shown, widths, strict=True):
        column = columns[index]
        table.add_column(
            column.header,
            width=width,
            no_wrap=column.identifier,
            overflow="fold",
            justify="right" if column.right else "left",
        )
    for row in rows:
        table.add_row(*(Text(row[i]) for i in shown))
    console.print(table)
    left_out = [column.header for i, column in enumerate(columns) if i not in shown]
    if left_out:
        console.print(
            f"({', '.join(left_out)} left out to fit {console.width} columns; "
            "piped output or --json has them)",
            highlight=False,
            markup=False,
        )


def print_plain(
    console: Console, title: str, columns: Sequence[Column], rows: Sequence[Sequence[str]]
) -> None:
    """Aligned columns separated by two spaces; every value whole, one row per line."""
    table = [[column.header for column in columns], *(list(row) for row in rows)]
    widths = [max(len(line[i]) for line in table) for i in range(len(columns))]
    if title:
        print_line(console, title)
    for line in table:
        cells = [
            value.rjust(width) if column.right else value.ljust(width)
            for value, width, column in zip(line, widths, columns, strict=True)
        ]
        print_line(console, GAP.join(cells).rstrip())


def print_line(console: Console, line: str) -> None:
    """One line as it is: no markup, no highlighting, no wrapping at the console's width."""
    console.print(line, markup=False, highlight=False, soft_wrap=True)


def _fit(
    console: Console, columns: Sequence[Column], rows: Sequence[Sequence[str]], shown: list[int]
) -> list[int] | None:
    """Content widths that fit the console: identifiers whole, the widest others narrowed."""
    values = [
        [column.header, *(row[i] for row in rows)] for column, i in zip(columns, shown, strict=True)
    ]
    longest = [max(len(value) for value in column) for column in values]
    # A wrapped column keeps its header and its words whole (a very long word may fold).
    words = [
        max((len(w) for value in column for w in value.split()), default=1) for column in values
    ]
    narrowest = [
        width if column.identifier else min(width, max(len(column.header), min(word, LONG_WORD)))
        for width, word, column in zip(longest, words, columns, strict=True)
    ]
    room = console.width - _frame_width(console, len(columns))
    if sum(narrowest) > room:
        return None
    widths = list(longest)
    while sum(widths) > room:
        # Narrow the widest column that may still shrink, one character at a time.
        index = max(
            (i for i in range(len(widths)) if widths[i] > narrowest[i]), key=widths.__getitem__
        )
        widths[index] -= 1
    return widths


def _frame_width(console: Console, count: int) -> int:
    """What borders and padding add to a table of `count` columns (measured, not assumed)."""
    probe = Table()
    for _ in range(count):
        probe.add_column(width=1)
    return console.measure(probe).maximum - count
