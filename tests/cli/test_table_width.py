"""Tables on a terminal stay one line per row within its width (long names cut with "…");
piped, every value is whole."""

from __future__ import annotations

import io
import re

import pytest

from kaic.cli.context import AppContext
from kaic.cli.render import print_table


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


HEADERS = ("ID", "NAME", "KIND", "STATE", "GPUS", "PARTITION", "ELAPSED", "REASON")
ROWS = [
    (str(n), "x" * 70 + f"-run{n}", "batch", "PENDING", "8", "h100", "0:00:00", "r" * 60)
    for n in range(5)
]


def test_a_terminal_table_fits_100_columns(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "100")
    monkeypatch.setenv("NO_COLOR", "1")
    out = _Terminal()
    app = AppContext()
    app.stdout = out
    print_table(app, HEADERS, ROWS)
    lines = re.sub(r"\x1b\[[0-9;]*m", "", out.getvalue()).splitlines()  # bold headers
    assert len(lines) == 1 + len(ROWS)  # one line per row: nothing wrapped
    assert max(len(line.rstrip()) for line in lines) <= 100
    assert all("…" in line for line in lines[1:])
    assert [line.split()[0] for line in lines[1:]] == [r[0] for r in ROWS]


def test_piped_rows_keep_every_value_whole() -> None:
    out = io.StringIO()
    app = AppContext()
    app.stdout = out
    print_table(app, HEADERS, ROWS)
    assert ROWS[0][1] in out.getvalue() and ROWS[0][7] in out.getvalue()
