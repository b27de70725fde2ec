"""kaic.durations: every accepted form, the rejections, and format -> parse round trips."""

from __future__ import annotations

import pytest

from kaic.durations import format_duration, parse_duration


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("90s", 90),
        ("30m", 1800),
        ("4h", 4 * 3600),
        ("2d", 2 * 86400),
        ("1h30m", 5400),
        ("1d12h", 36 * 3600),
        ("2h 15m", 2 * 3600 + 15 * 60),
        ("1H30M", 5400),
        ("1d2h3m4s", 86400 + 7200 + 180 + 4),
        (" 4h ", 4 * 3600),
        # bare number: minutes, as Slurm reads --time=30
        ("30", 1800),
        ("1", 60),
        # Slurm forms
        ("05", 300),  # MM
        ("30:00", 1800),  # MM:SS
        ("90:00", 5400),  # leading field may exceed 59
        ("1:30", 90),
        ("04:00:00", 4 * 3600),  # HH:MM:SS
        ("48:00:00", 48 * 3600),
        ("1-12", 36 * 3600),  # D-HH
        ("1-12:30", 36 * 3600 + 1800),  # D-HH:MM
        ("1-12:00:00", 36 * 3600),  # D-HH:MM:SS
        ("0-00:00:01", 1),
    ],
)
def test_accepted_forms(text: str, seconds: int) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(
    "text",
    ["", "   ", "abc", "4 hours", "1.5h", "h", "4x", "1h1d", "1h1h", "1-", "1:2:3:4", "+5", "٣m"],
)
def test_garbage_is_rejected_with_the_accepted_forms(text: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_duration(text)
    message = str(info.value)
    assert "not a valid duration" in message
    for form in ("90s", "30m", "1h30m", "HH:MM:SS", "D-HH:MM:SS"):
        assert form in message


@pytest.mark.parametrize("text", ["0", "0s", "0h0m", "00:00", "0-00:00:00", "-5", "-1h"])
def test_zero_and_negative_are_rejected(text: str) -> None:
    with pytest.raises(ValueError, match="must be positive") as info:
        parse_duration(text)
    assert "1h30m" in str(info.value)  # still lists the accepted forms


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("10:60", "seconds must be below 60"),
        ("1:60:00", "minutes must be below 60"),
        ("1-24", "hours must be below 24"),
        ("1-12:75", "minutes must be below 60"),
    ],
)
def test_out_of_range_clock_fields(text: str, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        parse_duration(text)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0s"),
        (45, "45s"),
        (90, "1m30s"),
        (1800, "30m"),
        (4 * 3600, "4h"),
        (5400, "1h30m"),
        (36 * 3600, "1d12h"),
        (2 * 86400, "2d"),
        (86400 + 1, "1d1s"),
        (3600.9, "1h"),
        (-90, "-1m30s"),
    ],
)
def test_format_duration(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


@pytest.mark.parametrize("seconds", [1, 59, 60, 61, 3599, 3600, 5400, 86399, 86400, 129600, 10**7])
def test_format_parses_back(seconds: int) -> None:
    assert parse_duration(format_duration(seconds)) == seconds


def test_durations_is_stdlib_only() -> None:
    import ast
    import sys
    from pathlib import Path

    import kaic.durations

    tree = ast.parse(Path(kaic.durations.__file__).read_text(encoding="utf-8"))
    modules = {
        alias.name.split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.Import)
        for alias in node.names
    } | {
        node.module.split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.module
    }
    assert modules <= set(sys.stdlib_module_names) | {"__future__"}
