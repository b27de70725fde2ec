"""The paging cursor of job listings (`GET /v1/jobs`, an array's tasks): opaque to clients,
a job number inside.

A page ends at some job; the cursor says "continue before (or after) this number". It is
only base64 of `jobs:N`, not a secret: listings are filtered by owner on every page, so a
made-up cursor shows nothing another user's query would not. What it must not do is reach
SQLite as a number it cannot hold, hence the strict `decode_cursor`.
"""

from __future__ import annotations

import base64
import binascii

from kaic.center.errors import ApiError
from kaic.models.limits import MAX_SQLITE_INTEGER


def encode_cursor(seq: int) -> str:
    return base64.urlsafe_b64encode(f"jobs:{seq}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> int:
    """The job number a cursor continues from; 422 for anything `encode_cursor` did not
    make (a forged number past SQLite's integers included)."""
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        prefix, _, number = text.partition(":")
        if prefix != "jobs" or not number.isdigit() or len(number) > 19:
            raise ValueError(cursor)
        seq = int(number)
        if not 0 < seq <= MAX_SQLITE_INTEGER:
            raise ValueError(cursor)
        return seq
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise ApiError(422, "invalid_request", "invalid cursor; start again without one") from None
