"""kaic.redact: secrets never reach the debug log."""

from __future__ import annotations

import json

import pytest

from kaic.redact import redact


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        ("Authorization: Bearer kaa_abcdef123456", "kaa_abcdef123456"),
        ("authorization: Bearer s3cr3t-opaque", "s3cr3t-opaque"),
        ("[authorization: Basic dXNlcjpwYXNz]", "dXNlcjpwYXNz"),
        ('{"password": "hunter2", "username": "alice"}', "hunter2"),
        ('{"refresh_token":"opaque-refresh"}', "opaque-refresh"),
        ('{"access_token": "opaque-access", "expires_in": 900}', "opaque-access"),
        ('{"token": "plain"}', "plain"),
        ('{"otp": "123456"}', "123456"),
        ('{"otp": 654321}', "654321"),
        ('{"password": "with \\"escaped\\" quote"}', "escaped"),
        ("GET /x?token=abc123&limit=5", "abc123"),
        ("grant_type=password&password=hunter2", "hunter2"),
        ("the token kaic_0123456789abcdef leaked", "kaic_0123456789abcdef"),
        ("refresh kar_ZZZZZZZZZZZZ done", "kar_ZZZZZZZZZZZZ"),
        ("jwt eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhIn0.c2lnbmF0dXJl end", "eyJhbGciOiJIUzI1NiJ9"),
    ],
)
def test_secrets_are_masked(text: str, secret: str) -> None:
    out = redact(text)
    assert secret not in out
    assert "***" in out


def test_non_secrets_are_kept() -> None:
    text = '{"username": "alice", "grant_type": "password", "expires_in": 900}'
    assert redact(text) == text
    line = "GET http://127.0.0.1:8750/v1/me -> 200 in 3 ms (request id: req-1)"
    assert redact(line) == line
    prose = "API Token expired; the bearer token is invalid"
    assert redact(prose) == prose


def test_redacted_json_stays_json() -> None:
    body = json.dumps({"grant_type": "refresh_token", "refresh_token": "kar_secretsecret"})
    assert json.loads(redact(body)) == {"grant_type": "refresh_token", "refresh_token": "***"}
