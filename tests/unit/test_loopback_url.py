"""The local center's token is only ever sent to a loopback URL."""

from __future__ import annotations

import pytest

from kaic.client.local_center import _is_loopback_url


@pytest.mark.parametrize(
    "url",
    ["http://127.0.0.1:8750", "http://127.3.4.5/", "http://[::1]:9/", "http://localhost:1"],
)
def test_loopback_urls(url: str) -> None:
    assert _is_loopback_url(url)


@pytest.mark.parametrize(
    "url",
    ["http://127.evil.example/", "http://10.0.0.1/", "http://example.com", "http://[::2]/", ""],
)
def test_other_urls_are_not_loopback(url: str) -> None:
    assert not _is_loopback_url(url)
