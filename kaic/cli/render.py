"""Rendering helpers shared by commands: tables on a terminal, plain rows when piped."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

from kaic.cli.context import AppContext


def print_table(
    app: AppContext,
    headers: Sequence[str],
    rows: Sequence[Sequence[str]],
    *,
    colours: Mapping[int, Mapping[str, str]] | None = None,
) -> None:
    """A rich table on a terminal; aligned plain rows when piped (easy to `awk`).

    `colours` maps a column index to {cell value: rich style} (e.g. job states).
    """
    if app.is_terminal():
        from rich.console import Console
        from rich.table import Table

        table = Table(box=None, header_style="bold", pad_edge=False)
        for h in headers:
            table.add_column(h)
        for row in rows:
            cells = []
            for i, cell in enumerate(row):
                style = (colours or {}).get(i, {}).get(cell)
                cells.append(f"[{style}]{cell}[/{style}]" if style else cell)
            table.add_row(*cells)
        Console(file=app.stdout, no_color="NO_COLOR" in os.environ).print(table)
        return
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    for row in (headers, *rows):
        app.out("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
