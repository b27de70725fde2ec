"""Strings from outside made safe to show on a terminal: the one place that does it.

Job names, reasons, event messages, file names, a center's error messages: whatever came from
the center or a file system may carry terminal control sequences (ESC/CSI/OSC: clear the
screen, retitle the window, plant a hyperlink), CR or LF (overwrite or fake a line), or Unicode
bidi/format controls (show `exe.txt` for `txt.exe`). `visible` turns every such character into
a readable escape (`\\x1b`, `\\n`, `\\u202e`) so the text shows literally, and file names that
are not UTF-8 (kept by Python as surrogateescape code points) show their bytes (`\\xff`)
instead of crashing the print. Backslashes are left alone: Windows paths and regexes stay
readable, and `visible` is idempotent, so a renderer and the output sink may both apply it.

Rich markup is a separate matter: a renderer passes outside text to rich as `rich.text.Text`,
never as a markup string (`kaic/cli/render.py`). JSON output needs none of this (`json.dumps`
escapes control characters itself); a job's own log bytes (`kaic logs`) are passed through
raw, like `cat`.

Stdlib only: the CLI's output sink imports this on its start path. It sits beside
`kaic.errors` (not under `kaic/cli/`) because renderers below the CLI use it too (bench
tables) and data flows one way.
"""

from __future__ import annotations

import re

# C0 controls (incl. TAB, LF, CR, ESC), DEL, C1 controls (incl. CSI 0x9b, OSC 0x9d), the
# Unicode bidi and zero-width format controls, line/paragraph separators, the BOM, and lone
# surrogates (surrogateescape bytes of a non-UTF-8 name; they cannot even be encoded).
_UNSAFE = re.compile(
    "[\x00-\x1f\x7f-\x9f\u061c\u200b-\u200f\u2028-\u202e\u2066-\u2069\ufeff\ud800-\udfff]"
)
_SHORT = {"\t": "\\t", "\n": "\\n", "\r": "\\r"}


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    short = _SHORT.get(char)
    if short is not None:
        return short
    code = ord(char)
    if 0xDC80 <= code <= 0xDCFF:  # a byte that was not UTF-8 (surrogateescape): show the byte
        return f"\\x{code - 0xDC00:02x}"
    if code <= 0xFF:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}"


def visible(value: object) -> str:
    """`value` as one line of text a terminal shows literally: every control character
    (C0/C1 incl. ESC, CR, LF, TAB, DEL), bidi/format control and undecodable byte made a
    visible escape. Bytes are read as UTF-8 (undecodable bytes escaped)."""
    if isinstance(value, bytes):
        text = value.decode("utf-8", errors="surrogateescape")
    else:
        text = str(value)
    return _UNSAFE.sub(_escape, text)


def visible_lines(text: str) -> str:
    """Like `visible` but keeping line breaks: for kaic's own multi-line messages (a job
    file's list of problems, a log tail in a hint) whose lines may quote outside data."""
    return "\n".join(visible(line) for line in text.split("\n"))
