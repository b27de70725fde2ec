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
import errno
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import paramiko
from paramiko.sftp import (
    CMD_ATTRS,
    CMD_CLOSE,
    CMD_HANDLE,
    CMD_MKDIR,
    CMD_NAME,
    CMD_OPEN,
    CMD_OPENDIR,
    CMD_READDIR,
    CMD_REALPATH,
    CMD_STAT,
    CMD_STATUS,
    SFTP_FLAG_READ,
)

from kaic.staging.names import name_bytes, name_text

#: READDIR requests a listing starts with on their way (the one directory it lists; fewer
#: each when it lists many)...
READDIR_AHEAD = 8
#: ...and up to how many a large directory's grow (two more for each answer with names)
READDIR_MAX = 64


class _Replies:
    """Collects the answers to a listing's READDIRs (paramiko hands an answer to the object
    its request was sent for), by request id."""

    def __init__(self) -> None:
        self.got: dict[int, tuple[int, paramiko.Message]] = {}

    def _async_response(self, t: int, msg: paramiko.Message, num: int) -> None:
        self.got[num] = (t, msg)


def _as_failure(error: OSError | EOFError | None) -> OSError:
    """The error of a reply that must be one (OK or EOF where neither makes sense: EIO)."""
    if isinstance(error, OSError):
        return error
    return OSError(errno.EIO, f"unexpected SFTP status: {error or 'OK'}")


@dataclass
class Glance:
    """What one round trip learned of a path (`SftpClient.glance`)."""

    #: its attributes (links followed), or why there are none
    attrs: paramiko.SFTPAttributes | OSError
    #: the path opened as a directory, for a listing to start from (`listdir_many`)
    dir_handle: bytes | None
    #: whether the file asked about beside it could be opened (None: none was asked about)
    inner_readable: bool | None


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
        """The entries of a directory (not `.` and `..`), names decoded as `name_text`
        (`listdir_many` of one directory; its error raised)."""
        listing = self.listdir_many([path])[0]
        if isinstance(listing, OSError):
            raise listing
        return listing

    def listdir_many(
        self, paths: Sequence[str], opened: Mapping[str, bytes] | None = None
    ) -> list[list[paramiko.SFTPAttributes] | OSError]:
        """The entries of each directory of `paths` (or the error listing it met), all
        listed at once: one round trip opens them all, then READDIRs are pipelined (a
        server answers each with the next ~100 names), `READDIR_AHEAD` per directory at
        first (fewer each when many are listed), doubling each round trip up to
        `READDIR_MAX` while a directory has more (10,000 names: 4 round trips, not 13). A
        tree is scanned level by level at a few round trips per level, not per directory
        (pulling a tree of 66 directories took 283 round trips, now 17:
        tests/staging/test_round_trips.py). Replies are matched by request
        id; the CLOSEs are not waited for (paramiko drops their answers when they come). A
        directory in `opened` is listed from that handle (`glance` opened it), not opened
        again."""
        replies = _Replies()
        opened = opened or {}
        handles = {i: opened[p] for i, p in enumerate(paths) if p in opened}
        sent = {
            i: self._async_request(replies, CMD_OPENDIR, self._adjust_cwd(p))  # type: ignore[attr-defined]
            for i, p in enumerate(paths)
            if i not in handles
        }
        results: list[list[paramiko.SFTPAttributes] | OSError] = [[] for _ in paths]
        for i, num in sent.items():
            t, msg = self._reply(replies, num)
            if t == CMD_HANDLE:
                handles[i] = msg.get_binary()
            else:
                results[i] = _as_failure(self._error(t, msg))
        ahead = max(2, READDIR_AHEAD // max(1, len(handles)))
        waiting = collections.deque(
            (i, self._async_request(replies, CMD_READDIR, handle))  # type: ignore[attr-defined]
            for i, handle in handles.items()
            for _ in range(ahead)
        )
        on_way = dict.fromkeys(handles, ahead)
        done: set[int] = set()
        try:
            while waiting:
                i, num = waiting.popleft()
                on_way[i] -= 1
                if i in done:
                    continue  # (READDIRs sent past its end answer EOF too: not waited for)
                t, msg = self._reply(replies, num)
                if t != CMD_NAME:
                    done.add(i)
                    if not isinstance(self._error(t, msg), EOFError):  # EOF: the end
                        results[i] = _as_failure(self._error(t, msg))
                    continue
                handle = handles[i]
                for _ in range(2 if on_way[i] + 2 <= READDIR_MAX else 1):
                    waiting.append((i, self._async_request(replies, CMD_READDIR, handle)))  # type: ignore[attr-defined]
                    on_way[i] += 1
                listing = results[i]
                assert isinstance(listing, list)
                listing += self._names(msg, paths[i])
        finally:
            for handle in handles.values():
                self._async_request(replies, CMD_CLOSE, handle)  # type: ignore[attr-defined]
        return results

    def glance(self, path: str, inner: str | None = None) -> Glance:
        """STAT `path`, OPENDIR it and OPEN `inner` (a file in it) for reading, all in one
        round trip: planning a sync asks these one after the other (is the source a
        directory? has it a `.kaicignore`? list it), three round trips. The directory
        handle is the caller's to list or close (`close_handle`); `inner` is closed again
        at once (its reader opens it once more; it rarely exists)."""
        replies = _Replies()
        asked = [
            self._async_request(replies, CMD_STAT, self._adjust_cwd(path)),  # type: ignore[attr-defined]
            self._async_request(replies, CMD_OPENDIR, self._adjust_cwd(path)),  # type: ignore[attr-defined]
        ]
        if inner is not None:
            flags, attrs = SFTP_FLAG_READ, paramiko.SFTPAttributes()
            asked.append(
                self._async_request(replies, CMD_OPEN, self._adjust_cwd(inner), flags, attrs)  # type: ignore[attr-defined]
            )
        t, msg = self._reply(replies, asked[0])
        found: paramiko.SFTPAttributes | OSError
        if t == CMD_ATTRS:
            found = paramiko.SFTPAttributes._from_msg(msg)  # type: ignore[attr-defined]
        else:
            found = _as_failure(self._error(t, msg))
        t, msg = self._reply(replies, asked[1])
        handle = msg.get_binary() if t == CMD_HANDLE else None
        readable = None
        if inner is not None:
            t, msg = self._reply(replies, asked[2])
            readable = t == CMD_HANDLE
            if readable:
                self.close_handle(msg.get_binary())
        return Glance(found, handle, readable)

    def close_handle(self, handle: bytes) -> None:
        """CLOSE a handle without waiting for the answer."""
        self._async_request(_Replies(), CMD_CLOSE, handle)  # type: ignore[attr-defined]

    def mkdir_many(self, paths: Sequence[str], mode: int = 0o777) -> list[OSError | None]:
        """MKDIR each path, all in one round trip (a server handles a channel's requests in
        order: list parents before their children); None where it was made, else the
        error."""
        replies = _Replies()
        attr = paramiko.SFTPAttributes()
        attr.st_mode = mode
        sent = [
            self._async_request(replies, CMD_MKDIR, self._adjust_cwd(p), attr)  # type: ignore[attr-defined]
            for p in paths
        ]
        out: list[OSError | None] = []
        for num in sent:
            error = self._error(*self._reply(replies, num))
            out.append(None if error is None else _as_failure(error))
        return out

    def _reply(self, replies: _Replies, num: int) -> tuple[int, paramiko.Message]:
        """The reply to request `num` (reading others' into `replies` meanwhile)."""
        while num not in replies.got:
            self._read_response()  # type: ignore[attr-defined]
        return replies.got.pop(num)

    def _error(self, t: int, msg: paramiko.Message) -> OSError | EOFError | None:
        """The error a STATUS reply says (None for OK, EOFError for EOF); any other reply is
        not what was asked for (raised)."""
        if t != CMD_STATUS:
            raise paramiko.SFTPError(f"unexpected SFTP reply {t}")
        try:
            self._convert_status(msg)  # type: ignore[attr-defined]
        except (OSError, EOFError) as exc:
            return exc
        return None

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
