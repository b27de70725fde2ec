"""A small gitignore-syntax matcher for `.kaicignore` files and `--exclude` patterns.

Supported: `#` comments, blank lines, `!` negation (the last matching pattern wins), `*`
and `?` (never crossing `/`), `[abc]` classes, `**` (`**/x`, `a/**`, `a/**/b`), a trailing
`/` (directories only) and a leading or inner `/` (anchored at the tree's root; otherwise a
pattern matches at any depth). As in git, a file inside an ignored directory cannot be
re-included: the walk never enters ignored directories.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

IGNORE_FILE = ".kaicignore"


@dataclass(frozen=True)
class Rule:
    regex: re.Pattern[str]
    negate: bool
    dir_only: bool
    source: str


def _translate(body: str) -> str:
    """Regex source for a pattern body (no `!`, no trailing `/`)."""
    anchored = "/" in body
    body = body.lstrip("/")
    out: list[str] = []
    i, n = 0, len(body)
    while i < n:
        c = body[i]
        if body.startswith("**/", i) and (i == 0 or body[i - 1] == "/"):
            out.append("(?:.*/)?")
            i += 3
        elif body.startswith("**", i) and i + 2 == n and (i == 0 or body[i - 1] == "/"):
            out.append(".*")
            i += 2
        elif c == "*":
            out.append("[^/]*")
            i += 1
        elif c == "?":
            out.append("[^/]")
            i += 1
        elif c == "[":
            end = body.find("]", i + 2 if body[i + 1 : i + 2] in ("!", "^") else i + 1)
            if end == -1:
                out.append(re.escape(c))
                i += 1
                continue
            inner = body[i + 1 : end]
            if inner[:1] in ("!", "^"):
                inner = "^" + inner[1:]
            out.append("[" + inner.replace("\\", "\\\\") + "]")
            i = end + 1
        elif c == "\\" and i + 1 < n:
            out.append(re.escape(body[i + 1]))
            i += 2
        else:
            out.append(re.escape(c))
            i += 1
    prefix = "" if anchored else "(?:.*/)?"
    return prefix + "".join(out)


def parse_rule(line: str) -> Rule | None:
    """One pattern line -> Rule (None for blanks and comments)."""
    text = line.rstrip("\n").rstrip("\r")
    if not text.endswith("\\ "):
        text = text.rstrip(" ")
    if not text or text.startswith("#"):
        return None
    negate = text.startswith("!")
    if negate or text.startswith("\\!") or text.startswith("\\#"):
        text = text[1:]
    dir_only = text.endswith("/")
    text = text.rstrip("/")
    if not text:
        return None
    return Rule(re.compile(_translate(text)), negate, dir_only, line.strip())


class IgnoreRules:
    """An ordered list of gitignore-style rules; `ignored(path, is_dir)` answers for one path."""

    def __init__(self, patterns: Iterable[str] = ()):
        self.rules: list[Rule] = []
        self.extend(patterns)

    def extend(self, patterns: Iterable[str]) -> None:
        for line in patterns:
            rule = parse_rule(line)
            if rule is not None:
                self.rules.append(rule)

    @classmethod
    def from_text(cls, text: str | None, extra: Iterable[str] = ()) -> IgnoreRules:
        rules = cls(text.splitlines() if text else ())
        rules.extend(extra)
        return rules

    def ignored(self, path: str, is_dir: bool = False) -> bool:
        """Whether `path` (relative, `/`-separated) is ignored by the rules themselves.

        Callers walking a tree skip ignored directories, which ignores everything inside.
        """
        result = False
        for rule in self.rules:
            if rule.dir_only and not is_dir:
                continue
            if rule.regex.fullmatch(path):
                result = not rule.negate
        return result
