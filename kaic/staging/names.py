"""File names are bytes: the one rule for turning them into text and back.

On Linux a file name is any bytes but `/` and NUL: a Latin-1 file system or a careless tool
makes names that are not UTF-8 (`b"caf\\xe9.txt"`). Python's `os` functions keep such a name
as a str whose undecodable bytes are lone surrogates (`os.fsdecode`: surrogateescape), and so
does kaic, everywhere a name crosses a boundary: the SFTP wire (`name_bytes` out,
`name_text` in), the commands run on the staging host, sha256sum's output. Shown on a
terminal, such a byte is `\\xe9` (`kaic.text.visible`); in JSON too (`json_name`), since
JSON holds text only and a lone surrogate is no text.
"""

from __future__ import annotations

import re

_SURROGATE = re.compile("[\ud800-\udfff]")


def name_bytes(name: str) -> bytes:
    """The bytes of a name (a path) as the file system and the SFTP wire have them."""
    return name.encode("utf-8", errors="surrogateescape")


def name_text(raw: bytes) -> str:
    """A name (a path) from the file system or the wire as kaic keeps it (`os.fsdecode`)."""
    return raw.decode("utf-8", errors="surrogateescape")


def is_text(name: str) -> bool:
    """Whether `name` is valid UTF-8 (no undecodable byte): what JSON and HTTP can carry."""
    return _SURROGATE.search(name) is None


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    if 0xDC80 <= code <= 0xDCFF:  # an undecodable byte (surrogateescape)
        return f"\\x{code - 0xDC00:02x}"
    return f"\\u{code:04x}"


def json_name(name: str) -> str:
    """`name` for a JSON document: each undecodable byte as `\\xNN` (as `visible` shows it),
    everything else as it is (JSON escapes control characters itself)."""
    return _SURROGATE.sub(_escape, name)
