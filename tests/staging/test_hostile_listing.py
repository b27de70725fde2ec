"""A staging host that lists names no directory entry can have (`../x`, `a/b`, NUL).

A real sshd cannot be made to send them, so this is a paramiko SFTP server on a socket pair:
the listing is the host's word, and a pull must not turn it into a path outside its
destination.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import paramiko
import pytest
from paramiko.common import AUTH_SUCCESSFUL, OPEN_SUCCEEDED

from kaic.staging.ignore import IgnoreRules
from kaic.staging.remote_fs import RemoteSide
from kaic.staging.sftp_client import SftpClient

HOSTILE = ["../escape", "a/../../b", "x\0y", "/etc/passwd"]


class _Server(paramiko.ServerInterface):
    def get_allowed_auths(self, username: str) -> str:
        return "none"

    def check_auth_none(self, username: str) -> int:
        return AUTH_SUCCESSFUL

    def check_channel_request(self, kind: str, chanid: int) -> int:
        return OPEN_SUCCEEDED


class _HostileListing(paramiko.SFTPServerInterface):
    def list_folder(self, path: str) -> list[paramiko.SFTPAttributes]:
        entries = []
        for name in ["ok.txt", *HOSTILE]:
            attr = paramiko.SFTPAttributes()
            attr.filename = name
            attr.st_mode = 0o100644
            attr.st_size = 1
            attr.st_mtime = 0
            entries.append(attr)
        return entries


@pytest.fixture
def sftp() -> Iterator[SftpClient]:
    server_sock, client_sock = socket.socketpair()
    server = paramiko.Transport(server_sock)
    server.add_server_key(paramiko.RSAKey.generate(1024))
    server.set_subsystem_handler("sftp", paramiko.SFTPServer, _HostileListing)
    server.start_server(event=threading.Event(), server=_Server())  # negotiates in its thread
    client = paramiko.Transport(client_sock)
    client.start_client()
    client.auth_none("someone")
    sftp = SftpClient.from_transport(client)
    assert sftp is not None
    try:
        yield sftp
    finally:
        sftp.close()
        client.close()
        server.close()
        for transport in (client, server):
            transport.join(timeout=5)


def test_a_listing_leaves_out_names_that_cannot_be_entries(sftp: SftpClient) -> None:
    names = [item.filename for item in sftp.listdir_attr("/data")]
    assert names == ["ok.txt"]
    assert [name for _dir, name in sftp.refused_names] == HOSTILE


def test_a_scan_warns_of_them_and_plans_only_the_real_file(sftp: SftpClient) -> None:
    warnings: list[str] = []
    side = RemoteSide(conn=None, sftp=sftp)  # type: ignore[arg-type]
    tree = side.scan("/data", IgnoreRules([]), warnings.append)
    assert list(tree.files) == ["ok.txt"]
    assert len(warnings) == len(HOSTILE)
    assert all("not a file name" in w for w in warnings)
    assert "'x\\x00y'" in " ".join(warnings)  # shown with its NUL made visible
    assert not sftp.refused_names
