"""Redaction of secrets from text that may reach a terminal or a log (`KAIC_DEBUG`).

Pure stdlib so that the auth layer and the CLI can use it without importing httpx.
"""

from __future__ import annotations

import re

MASK = "***"

# Names whose values are secrets wherever they appear: JSON bodies, query strings, forms.
_SECRET_KEYS = r"(?:access_token|refresh_token|password|token|otp|secret|client_secret)"

# "key": "value"  (JSON; also tolerates single quotes from Python reprs)
_JSON_PAIR = re.compile(
    r"""(?P<key>(?P<q>["'])"""
    + _SECRET_KEYS
    + r"""(?P=q)\s*:\s*)(?P<vq>["'])(?:\\.|(?!(?P=vq)).)*(?P=vq)""",
    re.IGNORECASE,
)
# "key": 123456  (an OTP sent as a number)
_JSON_NUMBER = re.compile(
    r"""(?P<key>(?P<q>["'])""" + _SECRET_KEYS + r"""(?P=q)\s*:\s*)-?\d[\d.]*""",
    re.IGNORECASE,
)
# key=value in query strings and form bodies
_FORM_PAIR = re.compile(r"(?P<key>(?<![\w-])" + _SECRET_KEYS + r"=)[^&\s\"']*", re.IGNORECASE)
# Authorization: Bearer xyz / Basic xyz, in headers or anywhere in a line
_AUTH_SCHEME = re.compile(
    # 8+ credential characters, so prose such as "bearer token is invalid" is left alone
    r"(?P<key>\b(?:Bearer|Basic)\s+)[A-Za-z0-9._~+/=-]{8,}",
    re.IGNORECASE,
)
_AUTH_HEADER = re.compile(
    r"(?P<key>\bauthorization\s*[:=]\s*)(?!(?:Bearer|Basic)\s)[^\s\"',;\]]+", re.IGNORECASE
)
# Token-looking strings: kaic_ (API tokens), kaa_ (access), kar_ (refresh), and JWTs.
_TOKEN_LIKE = re.compile(r"(?<![A-Za-z0-9])(?:kaic|kaa|kar)_[A-Za-z0-9_\-.~+/=]{6,}")
_JWT_LIKE = re.compile(r"\beyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")


def redact(text: str) -> str:
    """Return `text` with every secret replaced by ``***``.

    Masks Authorization credentials, the values of ``access_token``, ``refresh_token``,
    ``password``, ``token``, ``otp`` (and ``secret``) in JSON, query strings and forms, and
    token-looking strings (``kaic_…``, ``kaa_…``, ``kar_…``, JWTs) wherever they occur.
    Over-redaction is preferred to leaking a secret: this output is for humans debugging.
    """
    text = _JSON_PAIR.sub(lambda m: f"{m['key']}{m['vq']}{MASK}{m['vq']}", text)
    text = _JSON_NUMBER.sub(lambda m: f'{m["key"]}"{MASK}"', text)
    text = _FORM_PAIR.sub(lambda m: f"{m['key']}{MASK}", text)
    text = _AUTH_SCHEME.sub(lambda m: f"{m['key']}{MASK}", text)
    text = _AUTH_HEADER.sub(lambda m: f"{m['key']}{MASK}", text)
    text = _TOKEN_LIKE.sub(MASK, text)
    return _JWT_LIKE.sub(MASK, text)
