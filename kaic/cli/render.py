"""Rendering helpers shared by commands: tables on a terminal, plain rows when piped; raw
bytes for job logs."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from typing import IO

from kaic.cli.context import AppContext
from kaic.text import visible

#: a column whose cells are all this short is never cut on a terminal
_KEEP_WHOLE = 12


def fit_widths(headers: Sequence[str], rows: Sequence[Sequence[str]], total: int) -> list[int]:
    """Column widths for a table in `total` columns, one line per row: short columns (ids,
    states, counts: at most `_KEEP_WHOLE` wide) keep their width; the long ones (names,
    reasons) share what is left in proportion to their longest cell, none below
    `_KEEP_WHOLE` (so a very narrow terminal still overflows rather than showing nothing)."""
    natural = [max([len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(headers)]
    gaps = 2 * (len(headers) - 1)  # one space either side between columns
    short = sum(w for w in natural if w <= _KEEP_WHOLE)
    long_total = sum(w for w in natural if w > _KEEP_WHOLE)
    room = total - gaps - short
    if long_total <= room:
        return natural
    return [w if w <= _KEEP_WHOLE else max(_KEEP_WHOLE, w * room // long_total) for w in natural]


def print_table(
    app: AppContext,
    headers: Sequence[str],
    rows: Sequence[Sequence[str]],
    *,
    colours: Mapping[int, Mapping[str, str]] | None = None,
) -> None:
    """A rich table on a terminal; aligned plain rows when piped (easy to `awk`).

    Cells are outside data (job names, reasons, token names): each is shown through
    `visible` and handed to rich as a `Text`, never as markup, so `train[v2]` shows as
    `train[v2]` and `[/bold]` is just text. `colours` maps a column index to
    {cell value: rich style} (e.g. job states).
    """
    shown = [[visible(cell) for cell in row] for row in rows]
    if app.is_terminal():
        from rich.console import Console
        from rich.table import Table
        from rich.text import Text

        # One line per row: a cell too long for the terminal is cut with "…" (the whole
        # value is in the piped rows and in --json), never wrapped over several lines.
        console = Console(file=app.stdout, no_color="NO_COLOR" in os.environ)
        table = Table(box=None, header_style="bold", pad_edge=False)
        for h, width in zip(headers, fit_widths(headers, shown, console.width), strict=True):
            table.add_column(Text(h), no_wrap=True, overflow="ellipsis", width=width)
        for raw, cells in zip(rows, shown, strict=True):
            styles = [(colours or {}).get(i, {}).get(cell, "") for i, cell in enumerate(raw)]
            table.add_row(*(Text(c, style=s) for c, s in zip(cells, styles, strict=True)))
        console.print(table)
        return
    widths = [max(len(h), *(len(r[i]) for r in shown)) for i, h in enumerate(headers)]
    for row in (headers, *shown):
        app.out("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


def table(
    app: AppContext,
    headers: Sequence[str],
    rows: Sequence[Sequence[str]],
    *,
    empty: str | None = None,
    colours: Mapping[int, Mapping[str, str]] | None = None,
) -> Callable[[], None]:
    """The human rendering of a list for `AppContext.emit`: the table, or — with no rows and
    an `empty` notice — that notice on stderr (stdout stays empty)."""

    def show() -> None:
        if not rows and empty is not None:
            app.info(empty)
        else:
            print_table(app, headers, rows, colours=colours)

    return show


def binary_writer(stream: IO[str]) -> Callable[[bytes], None]:
    """Raw bytes to `stream` (a job's log is passed through as is, like `cat`)."""
    buf = getattr(stream, "buffer", None)

    def write(data: bytes) -> None:
        if buf is not None:
            buf.write(data)
            buf.flush()
        else:
            stream.write(data.decode(errors="replace"))
            stream.flush()

    return write
