"""The SFTP protocol side of the endpoint: paramiko's SFTP server, hardened and extended.

It runs in two places: in the center's process (a single-user center, over the SSH
channel) and in a per-connection worker process that has dropped to the user's unix
account (`kaic.center.sftp.worker`, over a socket the center relays). It therefore imports
only paramiko and `fs`, nothing of the center (no settings, no database).

File names are bytes, in SFTP v3 as on Linux (OpenSSH's sftp-server passes them through),
and need not be UTF-8 (a Latin-1 file system, a careless tool). paramiko decodes every path
of a request as strict UTF-8 and encodes every name it answers the same way, so one such
name failed a whole listing and could not be pushed at all. Here the names of a request
are decoded as the file system decodes them (`os.fsdecode`: surrogateescape, so a byte
that is not UTF-8 survives) and every `str` answered is encoded back the same way
(`os.fsencode`): the bytes the client sent are the bytes on disk, and the other way round.
"""

from __future__ import annotations

import contextlib
import os
from typing import Any

import paramiko
from paramiko.sftp import (
    CMD_CLOSE,
    CMD_EXTENDED,
    CMD_EXTENDED_REPLY,
    CMD_FSETSTAT,
    CMD_INIT,
    CMD_MKDIR,
    CMD_NAME,
    CMD_OPEN,
    CMD_OPENDIR,
    CMD_READDIR,
    CMD_SETSTAT,
    CMD_VERSION,
    SFTP_BAD_MESSAGE,
    SFTP_EOF,
    SFTP_FAILURE,
    SFTP_OK,
    SFTP_OP_UNSUPPORTED,
)

from kaic.center.sftp.fs import ConfinedDirHandle

MAX_PACKET_SIZE = 256 * 1024
#: read/write length announced to clients: a packet less room for the headers (as OpenSSH)
MAX_TRANSFER = MAX_PACKET_SIZE - 1024
#: file and directory handles open at once on one SFTP session (kaic's pipeline opens 64)
MAX_HANDLES = 256
#: directory entries per READDIR reply (OpenSSH's sftp-server sends 100). A name is at most
#: 255 bytes, its `ls -l` line and attributes a few hundred more: 100 fit a packet easily.
READDIR_BATCH = 100
SFTP_VERSION = 3


class FsNames(paramiko.Message):
    """A request whose strings decode as file names do (`os.fsdecode`), not as UTF-8."""

    def __init__(self, request: paramiko.Message) -> None:
        super().__init__()
        self.packet = request.packet  # the same buffer, read from where it was

    def get_text(self) -> str:
        return os.fsdecode(self.get_string())


class SftpSubsystem(paramiko.SFTPServer):
    """paramiko's SFTP server, announcing the OpenSSH extensions this endpoint implements.

    paramiko announces only `check-file` (md5/sha1). Announcing `limits@openssh.com` lets
    OpenSSH's `sftp` use 255 KiB reads and writes instead of its cautious 32 KiB default
    (~2.5x faster here), `posix-rename@openssh.com` makes its `rename` behave as against
    sshd, and `hardlink@openssh.com` is its `ln` (the kernel's hard-link rules apply:
    served as the user, a file the user may not read cannot be linked).

    Directory listings are streamed: paramiko's OPENDIR asks the interface for the whole
    listing (`list_folder`) and keeps it per open handle (GBs for a user with millions of
    files, and quadratic to hand out); here a handle holds an open directory and each
    READDIR reads the next `READDIR_BATCH` entries from it. Overrides paramiko's (private,
    but long stable) `_send_server_version`, `_read_packet` and `_process`;
    tests/e2e/test_embedded_sftp.py drives them with the OpenSSH client.
    """

    def _send_server_version(self) -> int:
        kind, data = self._read_packet()
        if kind != CMD_INIT:
            raise paramiko.SFTPError("Incompatible sftp protocol")
        version = int.from_bytes(data[:4], "big")
        msg = paramiko.Message()
        msg.add_int(SFTP_VERSION)
        msg.add(
            "posix-rename@openssh.com", "1", "limits@openssh.com", "1", "hardlink@openssh.com", "1"
        )
        self._send_packet(CMD_VERSION, msg)  # type: ignore[attr-defined]
        return version

    def finish_subsystem(self) -> None:
        # paramiko closes the open files only after closing the channel, which raises when
        # the client has dropped the connection already: their descriptors would leak.
        for handle in [*self.file_table.values(), *self.folder_table.values()]:
            with contextlib.suppress(OSError):
                handle.close()
        super().finish_subsystem()

    def _read_packet(self) -> tuple[int, bytes]:
        # paramiko takes messages of up to 16 MiB, collected in memory before it looks at
        # them; the longest this endpoint announces is MAX_PACKET_SIZE (OpenSSH's limit).
        size = int.from_bytes(self._read_all(4), "big")  # type: ignore[attr-defined]
        if size > MAX_PACKET_SIZE:
            raise paramiko.SFTPError(f"SFTP message of {size} bytes is too long")
        data: bytes = self._read_all(size)  # type: ignore[attr-defined]
        if not data:
            return 0, b""
        return data[0], data[1:]

    def _response(self, request_number: int, t: int, *args: Any) -> None:
        # paramiko encodes a `str` as strict UTF-8: names go back as the bytes they are.
        items = (os.fsencode(a) if isinstance(a, str) else a for a in args)
        super()._response(request_number, t, *items)  # type: ignore[misc]

    def _process(self, t: int, request_number: int, raw: paramiko.Message) -> None:
        msg = FsNames(raw)
        if t in _WITH_ATTRS and not _attrs_fit(t, msg):
            self._send_status(request_number, SFTP_BAD_MESSAGE)  # type: ignore[attr-defined]
            return
        if t in (CMD_OPEN, CMD_OPENDIR):
            tables = (self.file_table, self.folder_table)
            if sum(len(table) for table in tables) >= MAX_HANDLES:
                self._send_status(request_number, SFTP_FAILURE, "too many open handles")  # type: ignore[attr-defined]
                return
        if t == CMD_OPENDIR and hasattr(self.server, "open_folder"):
            self._open_directory(request_number, msg.get_text())
            return
        if t == CMD_READDIR:
            start = msg.packet.tell()
            folder = self.folder_table.get(msg.get_binary())
            if isinstance(folder, ConfinedDirHandle):
                self._read_directory(request_number, folder)
                return
            msg.packet.seek(start)
        if t == CMD_CLOSE:
            start = msg.packet.tell()
            folder = self.folder_table.pop(msg.get_binary(), None)
            if folder is not None:
                folder.close()  # paramiko forgets a directory handle without closing it
                self._send_status(request_number, SFTP_OK)  # type: ignore[attr-defined]
                return
            msg.packet.seek(start)
        if t == CMD_EXTENDED:
            start = msg.packet.tell()
            tag = msg.get_text()
            if tag == "check-file":
                # paramiko's loops forever on a range past the end of the file; not announced
                self._send_status(request_number, SFTP_OP_UNSUPPORTED)  # type: ignore[attr-defined]
                return
            if tag == "hardlink@openssh.com" and hasattr(self.server, "hardlink"):
                old, new = msg.get_text(), msg.get_text()
                self._send_status(request_number, self.server.hardlink(old, new))  # type: ignore[attr-defined]
                return
            if tag == "limits@openssh.com":
                reply = paramiko.Message()
                reply.add_int(request_number)
                reply.add_int64(MAX_PACKET_SIZE)  # the longest SFTP message we take
                reply.add_int64(MAX_TRANSFER)  # the longest read we answer in full
                reply.add_int64(MAX_TRANSFER)  # the longest write we accept
                reply.add_int64(MAX_HANDLES)  # open handles
                self._send_packet(CMD_EXTENDED_REPLY, reply)  # type: ignore[attr-defined]
                return
            msg.packet.seek(start)
        super()._process(t, request_number, msg)  # type: ignore[misc]

    def _open_directory(self, request_number: int, path: str) -> None:
        opened = self.server.open_folder(path)  # type: ignore[attr-defined]
        if isinstance(opened, ConfinedDirHandle):
            self._send_handle_response(request_number, opened, True)  # type: ignore[attr-defined]
        else:
            self._send_status(request_number, opened)  # type: ignore[attr-defined]

    def _read_directory(self, request_number: int, folder: ConfinedDirHandle) -> None:
        batch = folder.read_batch(READDIR_BATCH)
        if isinstance(batch, int):
            self._send_status(request_number, batch)  # type: ignore[attr-defined]
            return
        if not batch:
            self._send_status(request_number, SFTP_EOF)  # type: ignore[attr-defined]
            return
        reply = paramiko.Message()
        reply.add_int(request_number)
        reply.add_int(len(batch))
        for attr in batch:
            reply.add_string(os.fsencode(attr.filename))
            reply.add_string(os.fsencode(str(attr)))  # the `ls -l` line
            attr._pack(reply)  # type: ignore[attr-defined]
        self._send_packet(CMD_NAME, reply)  # type: ignore[attr-defined]


#: requests carrying file attributes, and the fields before them (s = string, i = uint32)
_WITH_ATTRS = {CMD_OPEN: "si", CMD_MKDIR: "s", CMD_SETSTAT: "s", CMD_FSETSTAT: "s"}


def _attrs_fit(t: int, msg: paramiko.Message) -> bool:
    """Whether the extended-attribute count of request `t` fits in the packet.

    paramiko reads that many (name, value) pairs whatever the packet holds (past its end
    it reads empty strings), so a count of 2**32-1 keeps a thread busy for an hour. A pair
    takes at least 8 bytes: a count the rest of the packet cannot hold is a bad message.
    """
    start = msg.packet.tell()
    try:
        for field in _WITH_ATTRS[t]:
            msg.get_binary() if field == "s" else msg.get_int()
        flags = msg.get_int()
        attrs = paramiko.SFTPAttributes
        skip = 8 if flags & attrs.FLAG_SIZE else 0
        skip += 8 if flags & attrs.FLAG_UIDGID else 0
        skip += 4 if flags & attrs.FLAG_PERMISSIONS else 0
        skip += 8 if flags & attrs.FLAG_AMTIME else 0
        msg.get_bytes(skip)
        if not flags & attrs.FLAG_EXTENDED:
            return True
        count = msg.get_int()
        left = len(msg.asbytes()) - msg.packet.tell()
        return count * 8 <= left
    finally:
        msg.packet.seek(start)
