from __future__ import annotations

import socket
import threading
import uuid
from pathlib import Path

import paramiko
import pytest
from paramiko.common import AUTH_SUCCESSFUL, OPEN_SUCCEEDED

from kaic.errors import AuthRequired, Unreachable
from kaic.staging.connect import HostKeyError, SshTarget, open_sftp, parse_known_hosts
from kaic.staging.options import SyncOptions
from kaic.staging.striped_push import remote_rename
from kaic.staging.transfer import push
from tests.helpers import free_port
from tests.staging.conftest import SshEnv

OTHER_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHkqqVNRq1uQyuWPJmsA1v8S6RSkD1cXq6ojRhHNF1hD"


def test_connects_with_certificate(ssh_env: SshEnv) -> None:
    conn = open_sftp(ssh_env.target())
    try:
        assert conn.transport.local_cipher == "aes128-gcm@openssh.com"
        assert conn.exec("echo ok")[:2] == (0, b"ok\n")
    finally:
        conn.close()


def test_host_key_mismatch_refused(ssh_env: SshEnv) -> None:
    port = ssh_env.sshd.port
    with pytest.raises(HostKeyError) as err:
        open_sftp(ssh_env.target(known=[f"[127.0.0.1]:{port} {OTHER_KEY}"]))
    assert "MISMATCH" in err.value.message and f"127.0.0.1:{port}" in err.value.message
    assert err.value.message.count("SHA256:") == 2


def test_unknown_host_refused(ssh_env: SshEnv) -> None:
    # a key for another port does not count: no trust on first use
    with pytest.raises(HostKeyError, match="not known"):
        open_sftp(ssh_env.target(known=[f"[127.0.0.1]:1 {ssh_env.sshd.host_key_pub_line}"]))


def test_bare_key_lines_and_wrong_user(ssh_env: SshEnv) -> None:
    target = ssh_env.target(known=[ssh_env.sshd.host_key_pub_line])  # API form, no host field
    target.username = "root"  # certificate principal is the staging user only
    with pytest.raises(AuthRequired):
        open_sftp(target)


def test_unreachable_names_host_and_port(ssh_env: SshEnv) -> None:
    port = free_port()
    with pytest.raises(Unreachable, match=f"127.0.0.1:{port}"):
        open_sftp(ssh_env.target(port=port))


def test_parse_known_hosts_patterns() -> None:
    t = SshTarget("h.example", 22, "u", "k")
    lines = [
        f"*.example {OTHER_KEY}",
        f"other {OTHER_KEY}x",
        f"@revoked h.example {OTHER_KEY}y",
        "# comment",
        f"h.*,!h.example {OTHER_KEY}z",
    ]
    keys = parse_known_hosts(lines, t)
    assert [(k.marker, k.key_b64[-1]) for k in keys] == [(None, "D"), ("revoked", "y")]


def test_a_lost_connection_under_a_prefetch_prints_no_traceback(
    ssh_env: SshEnv, remote_dir: tuple[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """paramiko's prefetch thread raises when the connection goes away under it (a center
    restart, Ctrl-C); the download resumes, so that thread's traceback must not reach the
    terminal. Other threads' exceptions still do."""
    name, view = remote_dir
    view.mkdir()
    (view / "f.bin").write_bytes(b"x" * 100_000)
    ssh_env.own(view)
    seen: list[threading.ExceptHookArgs] = []
    monkeypatch.setattr(threading, "excepthook", seen.append)
    conn = open_sftp(ssh_env.target())
    f = conn.sftp.open(f"{name}/f.bin", "r")
    conn.transport.close()
    # paramiko's own prefetch loop, on a connection that is gone
    prefetch = threading.Thread(target=f._prefetch_thread, args=([(0, 32768)], None))
    prefetch.start()
    prefetch.join()

    def other() -> None:
        raise OSError("not a prefetch")

    unrelated = threading.Thread(target=other)
    unrelated.start()
    unrelated.join()
    assert [type(args.exc_value) for args in seen] == [OSError]
    assert str(seen[0].exc_value) == "not a prefetch"


def test_a_rename_that_fails_keeps_the_file_it_would_replace(ssh_env: SshEnv) -> None:
    # A failed posix-rename (here: the part file is gone) once removed the destination too.
    name = f"kaic-test-rename-{uuid.uuid4().hex[:8]}"
    view = ssh_env.home / name
    view.write_bytes(b"good")
    ssh_env.own(view)
    conn = open_sftp(ssh_env.target())
    try:
        with pytest.raises(FileNotFoundError):
            remote_rename(conn.sftp, f"{name}.missing-part", name)
    finally:
        conn.close()
        assert view.read_bytes() == b"good"
        view.unlink()


class _NoSftpHost(paramiko.ServerInterface):
    """An SSH host that lets anyone in and offers no SFTP subsystem."""

    def get_allowed_auths(self, username: str) -> str:
        return "publickey"

    def check_auth_publickey(self, username: str, key: paramiko.PKey) -> int:
        return AUTH_SUCCESSFUL

    def check_channel_request(self, kind: str, chanid: int) -> int:
        return OPEN_SUCCEEDED


def test_a_host_without_sftp_is_an_error_at_once_not_a_lost_connection(
    ssh_env: SshEnv, tmp_path: Path
) -> None:
    """The main SFTP channel opens in the background (the workers' pipes open meanwhile);
    a host that refuses it is still reported as such, once, and not ridden out as a lost
    connection for the reconnect budget."""
    host_key = paramiko.ECDSAKey.generate()
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    transports: list[paramiko.Transport] = []

    def serve() -> None:
        while True:
            try:
                sock, _addr = listener.accept()
            except OSError:
                return
            transport = paramiko.Transport(sock)
            transport.add_server_key(host_key)
            transport.start_server(server=_NoSftpHost())
            transports.append(transport)

    threading.Thread(target=serve, daemon=True).start()
    target = ssh_env.target(
        port=port, known=[f"[127.0.0.1]:{port} {host_key.get_name()} {host_key.get_base64()}"]
    )
    src = tmp_path / "f.txt"
    src.write_text("x")
    warnings: list[str] = []
    try:
        with pytest.raises(Unreachable, match="SFTP is not available"):
            push(target, [str(src)], "dst/", SyncOptions(reconnect_budget=60), warn=warnings.append)
    finally:
        listener.close()
        for transport in transports:
            transport.close()
    assert not warnings, warnings  # (no "connection lost … reconnecting")
