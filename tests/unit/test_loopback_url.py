"""Loopback is decided by address: the local center's token and plain http go only there."""

from __future__ import annotations

import pytest

from kaic.urls import is_loopback_url


@pytest.mark.parametrize(
    "url",
    ["http://127.0.0.1:8750", "http://127.3.4.5/", "http://[::1]:9/", "http://localhost:1"],
)
def test_loopback_urls(url: str) -> None:
    assert is_loopback_url(url)


@pytest.mark.parametrize(
    "url",
    ["http://127.evil.example/", "http://10.0.0.1/", "http://example.com", "http://[::2]/", ""],
)
def test_other_urls_are_not_loopback(url: str) -> None:
    assert not is_loopback_url(url)
