"""Rendering helpers shared by commands: tables on a terminal, plain rows when piped."""

from __future__ import annotations

import os
from collections.abc import Sequence

from kaic.cli.context import AppContext


def print_table(app: AppContext, headers: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    """A rich table on a terminal; tab-free aligned plain rows when piped (easy to `awk`)."""
    if app.is_terminal():
        from rich.console import Console
        from rich.table import Table

        table = Table(box=None, header_style="bold", pad_edge=False)
        for h in headers:
            table.add_column(h)
        for row in rows:
            table.add_row(*row)
        Console(file=app.stdout, no_color="NO_COLOR" in os.environ).print(table)
        return
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    for row in (headers, *rows):
        app.out("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
