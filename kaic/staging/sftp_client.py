"""paramiko's SFTP client, with file names carried as bytes (`kaic.staging.names`).

paramiko encodes every str path as strict UTF-8 and decodes the names a listing returns as
strict UTF-8: a file named `b"caf\\xe9.txt"` could be neither sent, nor listed, nor pulled
(UnicodeEncodeError / UnicodeDecodeError). This client encodes paths with surrogateescape on
the way out (every request's path goes through `_adjust_cwd`) and decodes names the same way
on the way in (`listdir_attr`, `normalize`), so a name keeps its bytes end to end, the way
Python's own `os` functions keep it.

A listing is the staging host's word: a name with a `/` or a NUL in it, an empty name, or
`.`/`..` cannot be a directory entry, and joined to a local destination it would write
outside it (`../x`, `a/../../x`). `listdir_attr` leaves such names out and keeps them (as
`refused_names`) for the caller to warn about.

It overrides two internals of paramiko's `SFTPClient` (`_adjust_cwd`, and the READDIR /
REALPATH replies, read with its `_request`); a test against a real sshd
(`tests/staging/test_bytes_names.py`) says when a paramiko release changes them.
"""

from __future__ import annotations

import collections
from collections.abc import Callable
from typing import Any

import paramiko
from paramiko.sftp import (
    CMD_CLOSE,
    CMD_HANDLE,
    CMD_NAME,
    CMD_OPENDIR,
    CMD_READDIR,
    CMD_REALPATH,
    CMD_STATUS,
)

from kaic.staging.names import name_bytes, name_text

#: READDIR requests a listing keeps on their way
READDIR_AHEAD = 8


class _Replies:
    """Collects the answers to a listing's READDIRs (paramiko hands an answer to the object
    its request was sent for), by request id."""

    def __init__(self) -> None:
        self.got: dict[int, tuple[int, paramiko.Message]] = {}

    def _async_response(self, t: int, msg: paramiko.Message, num: int) -> None:
        self.got[num] = (t, msg)


class SftpClient(paramiko.SFTPClient):
    """`paramiko.SFTPClient` whose paths and listed names are bytes on the wire."""

    #: names listings returned that cannot be entries (see the module's docstring), as
    #: `(directory, name)`; a caller that reports them clears the list
    refused_names: list[tuple[str, str]]

    def __init__(self, sock: paramiko.Channel) -> None:
        super().__init__(sock)
        self.refused_names = []

    def _adjust_cwd(self, path: Any) -> Any:
        if isinstance(path, str):
            path = name_bytes(path)
        return super()._adjust_cwd(path)  # type: ignore[misc]

    def listdir_attr(self, path: str = ".") -> list[paramiko.SFTPAttributes]:
        """The entries of a directory (not `.` and `..`), names decoded as `name_text`.

        READDIRs are pipelined: `READDIR_AHEAD` stay on their way (a server answers each
        with the next ~100 names), so a directory of 2,000 files costs ~3 round trips
        instead of 21, and its CLOSE is not waited for (paramiko drops that answer when it
        comes). Replies are matched by request id, in whatever order they come."""
        t, msg = self._request(CMD_OPENDIR, self._adjust_cwd(path))  # type: ignore[attr-defined]
        if t != CMD_HANDLE:
            raise paramiko.SFTPError("Expected handle")
        handle = msg.get_binary()
        replies = _Replies()
        waiting = collections.deque(
            self._async_request(replies, CMD_READDIR, handle)  # type: ignore[attr-defined]
            for _ in range(READDIR_AHEAD)
        )
        entries: list[paramiko.SFTPAttributes] = []
        try:
            while waiting:
                num = waiting.popleft()
                while num not in replies.got:
                    self._read_response()  # type: ignore[attr-defined]
                t, msg = replies.got.pop(num)
                if t == CMD_STATUS:
                    try:
                        self._convert_status(msg)  # type: ignore[attr-defined]
                    except EOFError:  # the end of the listing (the rest answer EOF too)
                        break
                if t != CMD_NAME:
                    raise paramiko.SFTPError("Expected name response")
                waiting.append(self._async_request(replies, CMD_READDIR, handle))  # type: ignore[attr-defined]
                entries += self._names(msg, path)
        finally:
            self._async_request(replies, CMD_CLOSE, handle)  # type: ignore[attr-defined]
        return entries

    def _names(self, msg: paramiko.Message, path: str) -> list[paramiko.SFTPAttributes]:
        """The entries of one NAME reply (see `refused_names`)."""
        entries: list[paramiko.SFTPAttributes] = []
        for _ in range(msg.get_int()):
            filename = name_text(msg.get_string())
            longname = name_text(msg.get_string())
            attr = paramiko.SFTPAttributes._from_msg(msg, filename, longname)  # type: ignore[attr-defined]
            if filename in (".", ".."):
                continue
            if not filename or "/" in filename or "\0" in filename:
                self.refused_names.append((str(path), filename))
                continue
            entries.append(attr)
        return entries

    def normalize(self, path: bytes | str) -> str:
        """The server's absolute form of `path` (decoded as `name_text`)."""
        t, msg = self._request(CMD_REALPATH, self._adjust_cwd(path))  # type: ignore[attr-defined]
        if t != CMD_NAME:
            raise paramiko.SFTPError("Expected name response")
        count = msg.get_int()
        if count != 1:
            raise paramiko.SFTPError(f"Realpath returned {count} results")
        return name_text(msg.get_string())


def warn_refused(sftp: paramiko.SFTPClient, warn: Callable[[str], None]) -> None:
    """Say which names `sftp`'s listings returned that cannot be entries (left out)."""
    refused = getattr(sftp, "refused_names", [])
    for directory, name in refused:
        warn(f"skipping an entry of remote {directory} the host named {name!r}: not a file name")
    refused.clear()
