"""Warnings are printed with one "warning:" prefix, whatever the layer below wrote."""

from __future__ import annotations

import io

import pytest

from kaic.cli.context import AppContext
from tests.e2e.test_login import login
from tests.helpers import RunningCenter


def test_warn_adds_its_prefix_once() -> None:
    err = io.StringIO()
    app = AppContext(stderr=err)
    app.warn("warning: keyring unavailable (x); using credentials from a file")
    app.warn("Warning:  also this")
    app.warn("a path mentioning warning: stays")
    assert err.getvalue().splitlines() == [
        "warning: keyring unavailable (x); using credentials from a file",
        "warning: also this",
        "warning: a path mentioning warning: stays",
    ]


def test_keyring_fallback_warning_is_not_doubled(
    alice: tuple[RunningCenter, str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    center, user, password = alice
    monkeypatch.setenv("PYTHON_KEYRING_BACKEND", "tests.fakes.keyrings.BrokenKeyring")
    res = login(center, user, password)
    assert "warning: keyring unavailable" in res.stderr, res.explain()
    assert "warning: warning:" not in res.stderr, res.explain()
