"""A corpus of hostile strings, for any test that stores outside data or shows it.

Each entry is a value an attacker (another user, a compromised center, a file someone
uploaded) could put in a field kaic shows: terminal control sequences (CSI, OSC 8 hyperlinks,
OSC window titles, C1 CSI), CR/LF/TAB/DEL/NUL, Unicode bidi and zero-width controls, rich
markup, a very long string — and non-UTF-8 file names. With each: how kaic must show it
(`shown`, written out by hand, not computed) and the fragments that, found in output, prove
it went out raw (`raw`).

Use `assert_shown_safely(output, entry)` on what a command printed (a terminal's CR LF line
ends are made LF first; a lone CR stays and counts).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Hostile:
    label: str
    value: str
    shown: str  # how kaic shows it: every control made a visible escape, markup as text
    raw: tuple[str, ...] = ()  # fragments that must never reach the output

    @property
    def has_controls(self) -> bool:
        """C0/C1 control characters: a center may refuse these in job fields (422)."""
        return any(ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F for c in self.value)

    @property
    def file_name(self) -> bool:
        """Usable as a file name (no `/`, no NUL, within NAME_MAX)."""
        return "/" not in self.value and "\x00" not in self.value and len(self.value) < 200


CORPUS: tuple[Hostile, ...] = (
    Hostile("markup-brackets", "train[v2]", "train[v2]"),
    Hostile("markup-close", "[/bold]x", "[/bold]x"),
    Hostile(
        "markup-link", "[link=http://evil]y[/link]", "[link=http://evil]y[/link]", ("\x1b]8;",)
    ),
    Hostile("markup-style", "[bold red]loud[/]", "[bold red]loud[/]"),
    Hostile("markup-file", "[red]x[blink]", "[red]x[blink]"),
    Hostile("csi-clear", "a\x1b[2Jb", "a\\x1b[2Jb", ("\x1b[2J",)),
    Hostile("csi-colour", "\x1b[31mred\x1b[0m", "\\x1b[31mred\\x1b[0m", ("\x1b[31mred",)),
    Hostile(
        "osc8-link",
        "\x1b]8;;http://evil\x1b\\click\x1b]8;;\x1b\\",
        "\\x1b]8;;http://evil\\x1b\\click\\x1b]8;;\\x1b\\",
        ("\x1b]8;",),
    ),
    Hostile("osc-title", "\x1b]0;pwned\x07t", "\\x1b]0;pwned\\x07t", ("\x1b]0;", "\x07")),
    Hostile("c1-csi", "a\x9b2Jb", "a\\x9b2Jb", ("\x9b",)),
    Hostile("cr", "safe\rEVIL", "safe\\rEVIL", ("\rEVIL",)),
    Hostile("lf", "line1\nline2", "line1\\nline2", ("line1\nline2",)),
    Hostile("tab-del-bs", "a\tb\x7fc\x08d", "a\\tb\\x7fc\\x08d", ("a\tb", "\x7f", "\x08")),
    Hostile("nul", "a\x00b", "a\\x00b", ("\x00",)),
    Hostile("bidi-rlo", "invoice\u202efdp.exe", "invoice\\u202efdp.exe", ("\u202e",)),
    Hostile("bidi-isolate", "\u2067x\u2069y", "\\u2067x\\u2069y", ("\u2067", "\u2069")),
    Hostile("zero-width", "ad\u200bmin\ufeff", "ad\\u200bmin\\ufeff", ("\u200b", "\ufeff")),
    Hostile("line-separator", "a\u2028b", "a\\u2028b", ("\u2028",)),
    Hostile("plain-unicode", "naïve 中文 ✓", "naïve 中文 ✓"),
    Hostile("long", "x" * 4096, "x" * 4096),
)

#: Non-UTF-8 file names (bytes, as a file system has them) and how kaic shows them.
RAW_FILE_NAMES: tuple[tuple[bytes, str], ...] = (
    (b"latin1-\xe9t\xe9.txt", "latin1-\\xe9t\\xe9.txt"),
    (b"bad-\xff\xfe-\x1b[2J", "bad-\\xff\\xfe-\\x1b[2J"),
)


def by_label(label: str) -> Hostile:
    return next(h for h in CORPUS if h.label == label)


def assert_shown_safely(output: str, entry: Hostile, *, literal: bool = True) -> None:
    """`output` (what a command printed) shows `entry` as text: none of its raw fragments,
    and (with `literal`) its `shown` form."""
    text = output.replace("\r\n", "\n")
    for fragment in entry.raw:
        assert fragment not in text, f"{entry.label}: {fragment!r} reached the output raw"
    if literal:
        assert entry.shown in text, f"{entry.label}: {entry.shown!r} not shown in {text!r}"
