from __future__ import annotations

import pytest

from kaic.staging.ignore import IgnoreRules


@pytest.mark.parametrize(
    ("patterns", "path", "is_dir", "expected"),
    [
        (["*.log"], "a.log", False, True),
        (["*.log"], "deep/dir/a.log", False, True),
        (["*.log"], "a.log.txt", False, False),
        (["/build"], "build", True, True),
        (["/build"], "src/build", True, False),
        (["build/"], "build", False, False),
        (["build/"], "x/build", True, True),
        (["a/*.txt"], "a/b.txt", False, True),
        (["a/*.txt"], "a/b/c.txt", False, False),
        (["a/**/c.txt"], "a/c.txt", False, True),
        (["a/**/c.txt"], "a/x/y/c.txt", False, True),
        (["**/cache"], "x/y/cache", True, True),
        (["data/**"], "data/x/y", False, True),
        (["data/**"], "data", True, False),
        (["?.bin"], "a.bin", False, True),
        (["?.bin"], "ab.bin", False, False),
        (["[ab].dat"], "b.dat", False, True),
        (["[!ab].dat"], "b.dat", False, False),
        (["*.log", "!keep.log"], "keep.log", False, False),
        (["*.log", "!keep.log"], "other.log", False, True),
        (["# comment", "", "x"], "x", False, True),
        (["\\#hash"], "#hash", False, True),
        (["*"], "a/b", False, True),
        (["ünï*"], "dir/ünïcode.txt", False, True),
    ],
)
def test_patterns(patterns: list[str], path: str, is_dir: bool, expected: bool) -> None:
    assert IgnoreRules(patterns).ignored(path, is_dir) is expected


def test_from_text_and_extra() -> None:
    rules = IgnoreRules.from_text("*.tmp\n", ["*.bak"])
    assert rules.ignored("a.tmp") and rules.ignored("b.bak") and not rules.ignored("c.txt")
