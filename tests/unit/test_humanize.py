"""Sizes, moments and spans as people read them (human output; `--json` stays exact)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from kaic.humanize import ago, clock, moment, rate, size

NOW = datetime(2026, 12, 1, 12, 0, 0, tzinfo=timezone.utc)


@pytest.mark.parametrize(
    ("nbytes", "shown"),
    [
        (0, "0 B"),
        (999, "999 B"),
        (1000, "1.0 kB"),
        (1234, "1.2 kB"),
        (9960, "10 kB"),
        (15_000_000, "15 MB"),
        (999_600, "1.0 MB"),  # rounds up into the next unit, never "1000 kB"
        (1_234_567_890, "1.2 GB"),
        (2 * 10**18, "2000 PB"),
    ],
)
def test_size(nbytes: int, shown: str) -> None:
    assert size(nbytes) == shown


def test_rate() -> None:
    assert rate(350_000_000, 1.0) == "350 MB/s" and rate(5, 0) == "0 B/s"


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [
        (2, "just now"),
        (42, "42 s ago"),
        (190, "3 min ago"),
        (7200, "2 h ago"),
        (100_000, "27 h ago"),
        (400_000, "4 days ago"),
        (-200, "in 3 min"),
    ],
)
def test_ago(seconds: int, shown: str) -> None:
    assert ago(NOW - timedelta(seconds=seconds), NOW) == shown


def test_moment_is_local_to_the_second_and_relative_within_a_week() -> None:
    when = NOW - timedelta(minutes=3, microseconds=123456)
    local = when.astimezone()
    assert moment(when, NOW) == f"{local:%Y-%m-%d %H:%M:%S} (3 min ago)"
    assert "." not in moment(when, NOW)  # no microseconds
    old = NOW - timedelta(days=30)
    assert moment(old, NOW) == f"{old.astimezone():%Y-%m-%d %H:%M:%S}"
    assert moment(when, NOW, relative=False) == f"{local:%Y-%m-%d %H:%M:%S}"
    naive = datetime(2026, 12, 1, 11, 57, 0)  # a naive time is UTC
    assert moment(naive, NOW).endswith("(3 min ago)")


def test_clock() -> None:
    assert [clock(s) for s in (0, 59, 3723, 90061, -5)] == [
        "0:00:00", "0:00:59", "1:02:03", "25:01:01", "0:00:00"
    ]  # fmt: skip
