"""Password hashing, TOTP (RFC 6238) and token secrets, with the standard library only."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import struct
from datetime import datetime
from functools import lru_cache
from urllib.parse import quote, urlencode

# scrypt parameters for new hashes; they are written into each hash so they can change later
# without invalidating stored passwords. n=2**14, r=8 uses 16 MiB and ~50 ms per check.
SCRYPT_N = 2**14
SCRYPT_R = 8
SCRYPT_P = 1
SCRYPT_SALT_BYTES = 16
SCRYPT_KEY_BYTES = 32
_SCRYPT_MAXMEM = 256 * 1024 * 1024

ACCESS_TOKEN_PREFIX = "kaa_"
REFRESH_TOKEN_PREFIX = "kar_"
API_TOKEN_PREFIX = "kaic_"

TOTP_STEP_S = 30
TOTP_DIGITS = 6


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def hash_password(password: str) -> str:
    """An encoded scrypt hash: `scrypt$n$r$p$salt$key` (salt and key base64url)."""
    salt = secrets.token_bytes(SCRYPT_SALT_BYTES)
    key = hashlib.scrypt(
        password.encode("utf-8"),
        salt=salt,
        n=SCRYPT_N,
        r=SCRYPT_R,
        p=SCRYPT_P,
        dklen=SCRYPT_KEY_BYTES,
        maxmem=_SCRYPT_MAXMEM,
    )
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${_b64(salt)}${_b64(key)}"


def verify_password(password: str, encoded: str) -> bool:
    """Whether `password` matches an encoded hash; a malformed hash never matches."""
    try:
        scheme, n, r, p, salt, key = encoded.split("$")
        if scheme != "scrypt":
            return False
        expected = _unb64(key)
        actual = hashlib.scrypt(
            password.encode("utf-8"),
            salt=_unb64(salt),
            n=int(n),
            r=int(r),
            p=int(p),
            dklen=len(expected),
            maxmem=_SCRYPT_MAXMEM,
        )
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(actual, expected)


@lru_cache(maxsize=1)
def _dummy_hash() -> str:
    return hash_password(secrets.token_urlsafe(16))


def check_password(password: str, encoded: str | None) -> bool:
    """Verify a password against a user's hash, or against a dummy hash when there is none.

    Unknown users and users without a password cost the same scrypt run as real ones,
    so response time does not reveal whether an account exists.
    """
    if encoded is None:
        verify_password(password, _dummy_hash())
        return False
    return verify_password(password, encoded)


# -- TOTP (RFC 6238 over RFC 4226 HOTP) -----------------------------------------------------


def new_totp_secret() -> str:
    """A random 160-bit TOTP secret, base32 without padding (what authenticator apps take)."""
    return base64.b32encode(secrets.token_bytes(20)).decode("ascii").rstrip("=")


def _decode_base32(secret: str) -> bytes:
    cleaned = secret.replace(" ", "").upper()
    return base64.b32decode(cleaned + "=" * (-len(cleaned) % 8))


def hotp(key: bytes, counter: int, *, digits: int = TOTP_DIGITS, digest: str = "sha1") -> str:
    """RFC 4226 HOTP value of `counter` under a raw key."""
    mac = hmac.new(key, struct.pack(">Q", counter), digest).digest()
    offset = mac[-1] & 0x0F
    code = struct.unpack(">I", mac[offset : offset + 4])[0] & 0x7FFFFFFF
    return str(code % 10**digits).zfill(digits)


def totp_code(
    secret: str,
    at: datetime | float,
    *,
    digits: int = TOTP_DIGITS,
    step: int = TOTP_STEP_S,
    digest: str = "sha1",
) -> str:
    """The TOTP code of a base32 secret at a time (datetime or Unix seconds)."""
    seconds = at.timestamp() if isinstance(at, datetime) else at
    return hotp(_decode_base32(secret), int(seconds // step), digits=digits, digest=digest)


def totp_step(secret: str, code: str, at: datetime, *, window: int = 1) -> int | None:
    """The time step whose code `code` is at `at` (allowing `window` steps of clock skew
    either way), or None when it is not valid. Callers accept each step once (no replay)."""
    code = code.strip()
    if len(code) != TOTP_DIGITS or not code.isdigit():
        return None
    key = _decode_base32(secret)
    counter = int(at.timestamp() // TOTP_STEP_S)
    # Compare every candidate (no early exit) so timing does not reveal which step matched.
    matched: int | None = None
    for delta in range(-window, window + 1):
        if hmac.compare_digest(hotp(key, counter + delta), code):
            matched = counter + delta
    return matched


def otpauth_uri(secret: str, account: str, *, issuer: str = "kaic") -> str:
    """The `otpauth://totp/...` URI an authenticator app imports (usually as a QR code)."""
    label = quote(f"{issuer}:{account}")
    query = urlencode(
        {
            "secret": secret,
            "issuer": issuer,
            "algorithm": "SHA1",
            "digits": TOTP_DIGITS,
            "period": TOTP_STEP_S,
        }
    )
    return f"otpauth://totp/{label}?{query}"


# -- token secrets ---------------------------------------------------------------------------


def new_access_token() -> str:
    """A session access-token secret (`kaa_…`)."""
    return ACCESS_TOKEN_PREFIX + secrets.token_urlsafe(32)


def new_refresh_token() -> str:
    """A refresh-token secret (`kar_…`)."""
    return REFRESH_TOKEN_PREFIX + secrets.token_urlsafe(32)


def new_api_token() -> str:
    """An API-token secret (`kaic_…`); local tokens use the same form."""
    return API_TOKEN_PREFIX + secrets.token_urlsafe(32)


def new_family_id() -> str:
    """The id that ties a login's access and refresh tokens together."""
    return "fam_" + secrets.token_hex(8)


def hash_token(token: str) -> str:
    """The sha256 hex digest under which a token is stored and looked up."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()
