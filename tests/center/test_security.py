"""Password hashing, TOTP against the RFC 6238 vectors, token secrets."""

from __future__ import annotations

import base64
import hashlib
from datetime import datetime, timezone
from urllib.parse import parse_qs, urlparse

import pytest

from kaic.center import security

# RFC 6238 appendix B: (Unix time, SHA1, SHA256, SHA512), 8 digits.
RFC6238_VECTORS = [
    (59, "94287082", "46119246", "90693936"),
    (1111111109, "07081804", "68084774", "25091201"),
    (1111111111, "14050471", "67062674", "99943326"),
    (1234567890, "89005924", "91819424", "93441116"),
    (2000000000, "69279037", "90698825", "38618901"),
    (20000000000, "65353130", "77737706", "47863826"),
]
SEEDS = {
    "sha1": b"12345678901234567890",
    "sha256": b"12345678901234567890123456789012",
    "sha512": b"1234567890123456789012345678901234567890123456789012345678901234",
}


@pytest.mark.parametrize(("at", "sha1", "sha256", "sha512"), RFC6238_VECTORS)
def test_totp_matches_rfc6238_vectors(at: int, sha1: str, sha256: str, sha512: str) -> None:
    for digest, expected in (("sha1", sha1), ("sha256", sha256), ("sha512", sha512)):
        secret = base64.b32encode(SEEDS[digest]).decode()
        assert security.totp_code(secret, at, digits=8, digest=digest) == expected


def test_totp_six_digits_is_the_rfc_value_truncated() -> None:
    secret = base64.b32encode(SEEDS["sha1"]).decode()
    assert security.totp_code(secret, 59) == "287082"


def test_totp_step_accepts_one_step_of_skew_only() -> None:
    secret = security.new_totp_secret()
    now = datetime(2026, 3, 1, 12, 0, 15, tzinfo=timezone.utc)
    t = now.timestamp()
    step = int(t // 30)
    # the step the code belongs to (what the center records so a code is used once)
    assert security.totp_step(secret, security.totp_code(secret, t), now) == step
    assert security.totp_step(secret, security.totp_code(secret, t - 30), now) == step - 1
    assert security.totp_step(secret, security.totp_code(secret, t + 30), now) == step + 1
    assert security.totp_step(secret, security.totp_code(secret, t - 60), now) is None
    assert security.totp_step(secret, security.totp_code(secret, t + 60), now) is None
    assert security.totp_step(secret, "12345", now) is None
    assert security.totp_step(secret, "abcdef", now) is None


def test_otpauth_uri_carries_secret_and_parameters() -> None:
    secret = security.new_totp_secret()
    uri = urlparse(security.otpauth_uri(secret, "alice"))
    assert uri.scheme == "otpauth"
    assert uri.netloc == "totp"
    assert uri.path == "/kaic%3Aalice"
    query = parse_qs(uri.query)
    assert query["secret"] == [secret]
    assert query["issuer"] == ["kaic"]
    assert query["digits"] == ["6"]
    assert query["period"] == ["30"]
    assert len(base64.b32decode(secret + "=" * (-len(secret) % 8))) == 20


def test_password_hash_round_trip_and_encoding(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(security, "SCRYPT_N", 2**14)  # the production cost
    encoded = security.hash_password("s3cret")
    scheme, n, r, p, salt, key = encoded.split("$")
    assert (scheme, n, r, p) == ("scrypt", str(2**14), "8", "1")
    assert (
        len(base64.urlsafe_b64decode(salt + "==")),
        len(base64.urlsafe_b64decode(key + "=")),
    ) == (
        16,
        32,
    )
    assert "s3cret" not in encoded
    assert security.verify_password("s3cret", encoded)
    assert not security.verify_password("s3cret!", encoded)
    # Fresh salt each time.
    assert security.hash_password("s3cret") != encoded


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def test_password_hash_keeps_working_when_parameters_change() -> None:
    # A hash made with other parameters verifies from the parameters written in it.
    salt = b"0123456789abcdef"
    key = hashlib.scrypt(b"pw", salt=salt, n=1024, r=8, p=1, dklen=32)
    assert security.verify_password("pw", f"scrypt$1024$8$1${_b64(salt)}${_b64(key)}")


@pytest.mark.parametrize("bad", ["", "plain", "scrypt$x$8$1$aa$bb", "bcrypt$1$2$3$4$5"])
def test_malformed_hash_never_verifies(bad: str) -> None:
    assert not security.verify_password("anything", bad)


def test_check_password_without_hash_is_false() -> None:
    assert not security.check_password("anything", None)


def test_token_secrets_have_prefixes_and_hash_to_sha256_hex() -> None:
    access, refresh, api = (
        security.new_access_token(),
        security.new_refresh_token(),
        security.new_api_token(),
    )
    assert access.startswith("kaa_")
    assert refresh.startswith("kar_")
    assert api.startswith("kaic_")
    assert len({access, refresh, api}) == 3
    digest = security.hash_token(api)
    assert len(digest) == 64
    assert int(digest, 16) >= 0
