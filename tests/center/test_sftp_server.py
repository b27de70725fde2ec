"""The embedded SFTP endpoint in process, with kaic's own SSH client (paramiko): policy,
limits and shutdown. The OpenSSH client is exercised in tests/e2e/test_embedded_sftp.py."""

from __future__ import annotations

import dataclasses
import logging
import os
import socket
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

import paramiko
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa
from fastapi.testclient import TestClient

from kaic.center.admin import add_user
from kaic.center.app import create_app
from kaic.center.settings import CenterSettings
from kaic.center.sftp import EmbeddedSftp
from kaic.center.ssh_ca import UserCA
from kaic.center.store import Store
from kaic.errors import AuthRequired, Unreachable
from kaic.staging.connect import SftpConnection, SshTarget, open_sftp
from kaic.staging.options import SyncOptions
from kaic.staging.transfer import pull, push
from kaic.staging.workers import OpenWindow
from tests.staging.faults import LatencyProxy, deferred_sends

from .conftest import PASSWORD, FakeClock, bearer


def _wait(predicate: object, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(0.02)
    raise AssertionError("condition not reached in time")


class Endpoint:
    def __init__(self, tmp_path: Path, **kwargs: object) -> None:
        self.settings = CenterSettings(state_dir=tmp_path / "state", sftp_port=0)
        self.store = Store(self.settings.state_dir)
        self.store.create_user("alice", unix_account="alice01")
        self.ca = UserCA(self.settings.state_dir)
        self.sftp = EmbeddedSftp(self.settings, self.store, self.ca, **kwargs)  # type: ignore[arg-type]
        self.sftp.start()
        self.tmp = tmp_path

    def target(
        self, user: str = "alice", principal: str = "alice01", *, rsa_key: bool = False
    ) -> SshTarget:
        private: ed25519.Ed25519PrivateKey | rsa.RSAPrivateKey
        if rsa_key:
            private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        else:
            private = ed25519.Ed25519PrivateKey.generate()
        key_path = self.tmp / f"id-{user}-{principal}{'-rsa' if rsa_key else ''}"
        key_path.write_bytes(
            private.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.OpenSSH,
                serialization.NoEncryption(),
            )
        )
        public = private.public_key().public_bytes(
            serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
        )
        cert = self.ca.sign_user_key(
            public.decode(),
            user=user,
            principal=principal,
            now=datetime.now(timezone.utc),
            validity_seconds=600,
        )
        cert_path = key_path.with_name(key_path.name + "-cert.pub")
        cert_path.write_text(cert.certificate + "\n")
        assert self.sftp.port is not None
        return SshTarget(
            "127.0.0.1",
            self.sftp.port,
            principal,
            key_path,
            cert_path,
            [self.sftp.host_key_line],
            use_user_known_hosts=False,
        )

    def connect(self) -> SftpConnection:
        return open_sftp(self.target())

    def close(self) -> None:
        self.sftp.stop()
        self.store.close()


@pytest.fixture
def endpoint(tmp_path: Path) -> Iterator[Endpoint]:
    running = Endpoint(tmp_path)
    try:
        yield running
    finally:
        running.close()


def test_login_and_confinement_with_kaics_client(endpoint: Endpoint) -> None:
    conn = endpoint.connect()
    try:
        assert conn.transport.local_cipher == "aes128-gcm@openssh.com"
        home = endpoint.settings.state_dir / "storage" / "alice"
        assert conn.sftp.normalize(".") == str(home)
        with conn.sftp.open("hello.txt", "w") as f:
            f.write(b"hi\n")
        assert (home / "hello.txt").read_bytes() == b"hi\n"
        # a single-user center serves in its own process, as its own account: no worker
        assert endpoint.sftp.worker_pids() == []
        assert (home / "hello.txt").stat().st_uid == os.geteuid()
        with pytest.raises(PermissionError):
            conn.sftp.stat("/etc/passwd")
        # exec (kaic tries `sha256sum`) is refused; kaic then falls back to the checksum API
        assert conn.exec("sha256sum -- hello.txt")[0] == -1
    finally:
        conn.close()


def test_shell_subsystems_and_forwarding_refused(endpoint: Endpoint) -> None:
    conn = endpoint.connect()
    try:
        channel = conn.transport.open_session()
        with pytest.raises(paramiko.SSHException):
            channel.invoke_shell()
        channel = conn.transport.open_session()
        with pytest.raises(paramiko.SSHException):
            channel.invoke_subsystem("not-sftp")
        with pytest.raises(paramiko.ChannelException):
            conn.transport.open_channel("direct-tcpip", ("127.0.0.1", 22), ("127.0.0.1", 0))
    finally:
        conn.close()


def test_certificate_of_an_unknown_user_refused(endpoint: Endpoint) -> None:
    # signed by the right CA, for the right unix account, but no such center user
    with pytest.raises(AuthRequired):
        open_sftp(endpoint.target(user="mallory", principal="alice01"))
    # a center user, but the certificate names another unix account than the user's
    with pytest.raises(AuthRequired):
        open_sftp(endpoint.target(user="alice", principal="bob02"))


def test_stop_closes_connections(endpoint: Endpoint) -> None:
    conns = [endpoint.connect() for _ in range(2)]
    _wait(lambda: endpoint.sftp.connections() == 2)
    endpoint.sftp.stop()
    for conn in conns:
        _wait(lambda c=conn: not c.is_active())  # type: ignore[misc]
        conn.close()
    assert endpoint.sftp.connections() == 0
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", endpoint.sftp.port or 0), timeout=2).recv(1)


def test_connection_limit_and_login_grace(tmp_path: Path) -> None:
    running = Endpoint(tmp_path, max_connections=1, login_grace=0.5)
    try:
        port = running.sftp.port or 0
        idle = socket.create_connection(("127.0.0.1", port))  # never logs in
        _wait(lambda: running.sftp.connections() == 1)
        extra = socket.create_connection(("127.0.0.1", port))
        extra.settimeout(5)
        assert extra.recv(64) == b""  # over the limit: closed at once
        extra.close()
        # the idle one is dropped after the grace period, which frees its slot
        _wait(lambda: running.sftp.connections() == 0)
        idle.close()
        conn = running.connect()
        conn.close()
    finally:
        running.close()


def test_staging_info_from_the_app(tmp_path: Path, clock: FakeClock) -> None:
    settings = CenterSettings(state_dir=tmp_path / "state", now=clock, local_user="me")
    assert settings.sftp_port == 0  # the local center serves its storage itself
    add_user(settings.state_dir, "me", password=PASSWORD, enable_otp=False, unix_account=None)
    app = create_app(settings)
    with TestClient(app) as client:
        token = client.post(
            "/v1/auth/token",
            json={"grant_type": "password", "username": "me", "password": PASSWORD},
        ).json()["access_token"]
        info = client.get("/v1/staging", headers=bearer(token)).json()
        endpoint = app.state.sftp_endpoint
        assert info["host"] == "127.0.0.1" and info["port"] == endpoint.port
        assert info["host_keys"] == [endpoint.host_key_line]
        with socket.create_connection(("127.0.0.1", endpoint.port), timeout=5) as sock:
            assert sock.recv(8).startswith(b"SSH-2.0-")
    assert endpoint.connections() == 0


def test_embedded_and_external_are_alternatives(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="alternatives"):
        CenterSettings(state_dir=tmp_path, sftp_port=0, staging_host="127.0.0.1")
    with pytest.raises(ValueError, match="not a TCP port"):
        CenterSettings(state_dir=tmp_path, sftp_port=70000)
    external = CenterSettings(state_dir=tmp_path, local_user="me", staging_host="127.0.0.1")
    assert external.sftp_port is None


def _no_hang(conn: SftpConnection, seconds: float = 5.0) -> None:
    # A server stuck on a request must fail the test, not hang it.
    conn.sftp.get_channel().settimeout(seconds)  # type: ignore[union-attr]


def test_check_file_past_the_end_does_not_hang_the_server(endpoint: Endpoint) -> None:
    # paramiko's `check-file` loops forever when the range reaches past the end of the file
    # (a read at EOF returns b"" and the loop waits for more); the endpoint refuses it.
    conn = endpoint.connect()
    try:
        _no_hang(conn)
        with conn.sftp.open("small", "w") as f:
            f.write(b"x")
        with conn.sftp.open("small", "r") as f, pytest.raises(IOError) as raised:
            f.check("sha1", 0, 4096, 0)
        assert not isinstance(raised.value, TimeoutError)
        assert conn.sftp.stat("small").st_size == 1  # the channel still answers
    finally:
        conn.close()


def test_attributes_with_a_huge_extension_count_are_refused(endpoint: Endpoint) -> None:
    # paramiko parses `count` extended attribute pairs without looking at the packet's
    # length: 2**32 - 1 of them keep a thread busy for an hour. Refused at once instead.
    from paramiko.sftp import CMD_SETSTAT

    conn = endpoint.connect()
    try:
        _no_hang(conn)
        flag_extended = paramiko.SFTPAttributes.FLAG_EXTENDED
        with pytest.raises(IOError) as raised:
            conn.sftp._request(CMD_SETSTAT, ".", flag_extended, 0xFFFFFFFF)  # type: ignore[attr-defined]
        assert not isinstance(raised.value, TimeoutError)
        assert conn.sftp.normalize(".")  # the channel still answers
    finally:
        conn.close()


def test_open_handles_per_session_are_limited(endpoint: Endpoint) -> None:
    # Every open file holds a descriptor of the center: one client must not take them all.
    from paramiko.sftp import CMD_OPENDIR

    from kaic.center.sftp.server import MAX_HANDLES

    conn = endpoint.connect()
    try:
        _no_hang(conn)
        conn.sftp.mkdir("d")
        held = [conn.sftp.open(f"f{i}", "w") for i in range(MAX_HANDLES - 1)]
        opendir = CMD_OPENDIR
        conn.sftp._request(opendir, "d")  # type: ignore[attr-defined]  # a directory handle
        with pytest.raises(IOError):
            conn.sftp.open("one-too-many", "w")
        with pytest.raises(IOError):
            conn.sftp._request(opendir, "d")  # type: ignore[attr-defined]
        held.pop(0).close()
        conn.sftp.open("now-fine", "w").close()
    finally:
        conn.close()


def test_open_files_of_the_endpoint_are_limited(tmp_path: Path) -> None:
    running = Endpoint(tmp_path, max_open_files=4)
    try:
        conn = running.connect()
        other = conn.new_sftp()
        held = [conn.sftp.open("a", "w"), conn.sftp.open("b", "w"), other.open("c", "w")]
        held.append(other.open("d", "w"))
        with pytest.raises(IOError):
            conn.sftp.open("e", "w")
        held.pop().close()
        conn.sftp.open("e", "w").close()
        other.close()  # closing the channel gives its files back
        _wait(lambda: running.sftp.open_files() == 2, 3)
        conn.close()
        _wait(lambda: running.sftp.open_files() == 0)
    finally:
        running.close()


def test_sessions_per_connection_are_limited(endpoint: Endpoint) -> None:
    from kaic.center.sftp.gate import MAX_SESSIONS

    conn = endpoint.connect()  # holds one session: its SFTP channel
    try:
        channels = [conn.transport.open_session(timeout=5) for _ in range(MAX_SESSIONS - 1)]
        with pytest.raises(paramiko.ChannelException):
            conn.transport.open_session(timeout=5)
        channels.pop().close()  # frees a slot once the server has closed its side too

        def another() -> bool:
            try:
                conn.transport.open_session(timeout=5).close()
            except paramiko.ChannelException:
                return False
            return True

        _wait(another)
    finally:
        conn.close()


def test_data_beyond_the_channel_window_ends_the_connection(endpoint: Endpoint) -> None:
    # paramiko buffers whatever a client sends on a channel, window or not: a session
    # nobody reads (no subsystem) would take the center's memory. Over the window is a
    # protocol violation, so the connection is closed.
    from paramiko.common import cMSG_CHANNEL_DATA

    conn = endpoint.connect()
    try:
        channel = conn.transport.open_session(timeout=5)
        chunk = b"x" * 32768
        for _ in range(4 * 1024 * 1024 // len(chunk)):  # twice paramiko's 2 MiB window
            if not conn.transport.is_active():
                break
            m = paramiko.Message()
            m.add_byte(cMSG_CHANNEL_DATA)
            m.add_int(channel.remote_chanid)
            m.add_string(chunk)
            try:
                conn.transport._send_user_message(m)  # type: ignore[attr-defined]
            except (EOFError, OSError):
                break  # closed by the server meanwhile
        _wait(lambda: not conn.transport.is_active())
    finally:
        conn.close()


def test_an_sftp_message_longer_than_announced_closes_the_channel(endpoint: Endpoint) -> None:
    # paramiko would collect a message of up to 16 MiB per channel before looking at it;
    # the endpoint announces (limits@openssh.com) and takes 256 KiB, as OpenSSH's server.
    import struct

    from kaic.center.sftp.server import MAX_PACKET_SIZE

    conn = endpoint.connect()
    try:
        channel = conn.transport.open_session(timeout=5)
        channel.settimeout(5)
        channel.invoke_subsystem("sftp")
        channel.sendall(struct.pack(">IBI", 5, 1, 3))  # INIT, version 3
        assert channel.recv(4096)[4] == 2  # VERSION
        channel.sendall(struct.pack(">IBI", MAX_PACKET_SIZE + 1, 5, 1) + b"\0" * 1024)
        assert channel.recv(1) == b""  # closed, not waiting for the rest
    finally:
        conn.close()


def test_handles_are_closed_when_the_connection_is_already_gone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # paramiko closes a session's files only after closing its channel, and that raises
    # (EOFError) when the client has already dropped the connection: the descriptors
    # leaked, one per file left open, for good.
    def channel_close_fails(self: object) -> None:
        raise EOFError

    monkeypatch.setattr(paramiko.SubsystemHandler, "finish_subsystem", channel_close_fails)
    running = Endpoint(tmp_path)
    try:
        conn = running.connect()
        held = [conn.sftp.open("a", "w"), conn.sftp.open("b", "w")]
        assert running.sftp.open_files() == len(held)
        conn.close()
        _wait(lambda: running.sftp.open_files() == 0)
    finally:
        running.close()


class _Sha1RsaKey(paramiko.RSAKey):
    """A client key that signs its login with SHA-1 (`ssh-rsa`) whatever algorithm it names."""

    def sign_ssh_data(self, data: bytes, algorithm: str | None = None) -> paramiko.Message:
        signature = self.key.sign(data, padding.PKCS1v15(), hashes.SHA1())  # type: ignore[union-attr]
        message = paramiko.Message()
        message.add_string("ssh-rsa")
        message.add_string(signature)
        return message


def _login_transport(target: SshTarget, key: paramiko.PKey) -> paramiko.Transport:
    transport = paramiko.Transport(socket.create_connection((target.host, target.port), 10))
    transport.start_client(timeout=10)
    try:
        transport.auth_publickey(target.username, key)
    except BaseException:
        transport.close()
        raise
    return transport


def test_sha1_rsa_signatures_are_refused(endpoint: Endpoint) -> None:
    # RSA user keys log in with rsa-sha2-256/512 signatures (what paramiko and OpenSSH
    # negotiate); a login signed with SHA-1 (`ssh-rsa`) is refused, even when the request
    # names a SHA-2 algorithm (paramiko only checks the hash the signature itself names,
    # and before 5.0 accepts SHA-1).
    target = endpoint.target(rsa_key=True)
    conn = open_sftp(target)
    try:
        assert conn.sftp.normalize(".")
    finally:
        conn.close()
    sha1 = _Sha1RsaKey.from_private_key_file(str(target.key_path))
    assert target.cert_path is not None
    sha1.load_certificate(str(target.cert_path))
    with pytest.raises(paramiko.AuthenticationException):
        _login_transport(target, sha1).close()
    # the same key signing with SHA-2 gets in: the refusal is about the hash
    sha2 = paramiko.RSAKey.from_private_key_file(str(target.key_path))
    sha2.load_certificate(str(target.cert_path))
    _login_transport(target, sha2).close()


def test_connections_per_user_are_capped(tmp_path: Path) -> None:
    # One user cannot take every connection slot of the endpoint: past their own cap a
    # login is disconnected with a reason kaic shows; other users still get in.
    running = Endpoint(tmp_path, max_connections_per_user=2)
    try:
        running.store.create_user("bob", unix_account="bob02")
        held = [running.connect(), running.connect()]
        with pytest.raises(Unreachable) as refused:
            running.connect()
        assert "too many connections for alice01: at most 2 at once" in refused.value.message
        assert refused.value.exit_code == 5
        open_sftp(running.target("bob", "bob02")).close()
        held.pop().close()  # a slot frees when one of alice's connections ends

        def alice_gets_in() -> bool:
            try:
                held.append(running.connect())
            except Unreachable:
                return False
            return True

        _wait(alice_gets_in)
        for conn in held:
            conn.close()
    finally:
        running.close()


def test_a_sync_goes_on_with_the_connections_the_cap_leaves(tmp_path: Path) -> None:
    # The extra connection of a sync logs in beside the first and is turned away right
    # after its login (the cap): the sync warns and uses the one it has — it does not take
    # the refused one for a lost connection and ride it out.
    running = Endpoint(tmp_path, max_connections_per_user=1)
    src = tmp_path / "src"
    src.mkdir()
    for i in range(10):
        (src / f"f{i}.txt").write_text(f"file {i}\n")
    warnings: list[str] = []
    try:
        result = push(
            running.target(), [str(src)], "capped", SyncOptions(parallel=2), warn=warnings.append
        )
    finally:
        running.close()
    assert result.files_transferred == 10 and not result.failures and result.reconnects == 0
    assert len(warnings) == 1, warnings
    assert "using 1 of 2 connections" in warnings[0]
    assert "too many connections for alice01" in warnings[0]


def test_a_sync_of_more_files_than_the_endpoint_lets_it_open_shrinks_its_window(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Two workers with a window of 80 open files each, against an endpoint that lets a
    # user hold 100: OPENs past that are refused, the window halves, and the refused
    # files go again in the next round — every file arrives, both ways.
    running = Endpoint(tmp_path, max_open_files=100)
    src = tmp_path / "src"
    src.mkdir()
    files = {f"f{i:03d}": os.urandom(50 + i) for i in range(300)}
    for name, data in files.items():
        (src / name).write_bytes(data)
    options = SyncOptions(parallel=1, channels=2)
    back = tmp_path / "back"
    shrunk: list[int] = []
    real_shrink = OpenWindow.shrink

    def shrink(self: OpenWindow, generation: int) -> None:
        shrunk.append(generation)
        real_shrink(self, generation)

    monkeypatch.setattr(OpenWindow, "shrink", shrink)
    try:
        with caplog.at_level(logging.WARNING):
            pushed = push(running.target(), [str(src)], "many", options, sleep=lambda _s: None)
            refused_pushing = sum("too many open files" in r.getMessage() for r in caplog.records)
            shrunk_pushing = len(shrunk)
            pulled = pull(running.target(), ["many"], str(back), options, sleep=lambda _s: None)
    finally:
        running.close()
    refused = sum("too many open files" in r.getMessage() for r in caplog.records)
    assert refused_pushing > 0 and refused > refused_pushing, refused  # the cap was hit both ways
    assert shrunk_pushing > 0 and len(shrunk) > shrunk_pushing, shrunk  # and the window shrank
    for result in (pushed, pulled):
        assert result.files_transferred == 300 and not result.failures, result
        assert result.reconnects == 0, result  # (refusals are no lost connection)
    assert {p.name: p.read_bytes() for p in back.iterdir()} == files


def test_default_cap_per_user_is_a_quarter_of_the_connections(tmp_path: Path) -> None:
    assert CenterSettings(state_dir=tmp_path).sftp_connections_per_user == 16
    assert CenterSettings(state_dir=tmp_path, sftp_max_connections=8).sftp_connections_per_user == 4
    one = CenterSettings(state_dir=tmp_path, sftp_max_connections_per_user=1)
    assert one.sftp_connections_per_user == 1
    with pytest.raises(ValueError, match="connections per user"):
        CenterSettings(state_dir=tmp_path, sftp_max_connections=8, sftp_max_connections_per_user=9)


def _held_entries(root: object) -> int:
    """How many directory entries (SFTPAttributes) an object holds, through its attributes
    and the containers it refers to."""
    import gc

    seen: set[int] = set()
    stack = [root]
    count = 0
    while stack:
        obj = stack.pop()
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        if isinstance(obj, paramiko.SFTPAttributes):
            count += 1
            continue
        if obj is root or isinstance(obj, (list, tuple, dict, set, frozenset)):
            stack.extend(gc.get_referents(obj))
        elif hasattr(obj, "__dict__") and not isinstance(obj, type):
            stack.append(vars(obj))
    return count


def test_directory_listings_are_streamed(endpoint: Endpoint) -> None:
    # paramiko keeps a directory's whole listing per open handle (a user with millions of
    # files costs GBs); the endpoint reads the directory a batch per READDIR instead.
    from paramiko.sftp import CMD_HANDLE, CMD_NAME, CMD_OPENDIR, CMD_READDIR

    big = endpoint.settings.state_dir / "storage" / "alice" / "big"
    big.mkdir(parents=True)
    names = {f"file-{i:05d}.dat" for i in range(20_000)}
    for name in names:
        os.close(os.open(big / name, os.O_CREAT | os.O_WRONLY, 0o644))
    conn = endpoint.connect()
    try:
        _no_hang(conn, 60)
        assert set(conn.sftp.listdir("big")) == names  # complete
        kind, reply = conn.sftp._request(CMD_OPENDIR, "big")  # type: ignore[attr-defined]
        assert kind == CMD_HANDLE
        handle = reply.get_binary()
        [server] = [t for t in threading.enumerate() if isinstance(t, paramiko.SFTPServer)]
        folder = server.folder_table[handle]
        held = [_held_entries(folder)]
        listed = 0
        for _ in range(5):
            kind, reply = conn.sftp._request(CMD_READDIR, handle)  # type: ignore[attr-defined]
            assert kind == CMD_NAME
            listed += reply.get_int()
            held.append(_held_entries(folder))
        assert 0 < listed < len(names)
        assert max(held) <= 100, held  # at most a batch, never the listing
    finally:
        conn.close()


def test_a_request_answered_during_the_servers_rekey_does_not_stall_it(
    endpoint: Endpoint, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A channel request reaches the endpoint just after it started a key exchange: its
    reader thread must answer it (here CHANNEL_FAILURE). Answered in place, the answer
    waited for the exchange only that thread could finish (30 s, then the connection died);
    now it goes out once the keys are new (`kaic.sshkex`)."""
    deferred = deferred_sends(monkeypatch)
    assert endpoint.sftp.port is not None
    with LatencyProxy(endpoint.sftp.port, rtt_ms=0) as proxy:
        conn = open_sftp(dataclasses.replace(endpoint.target(), port=proxy.port))
        try:
            (server,) = list(endpoint.sftp._transports)
            server.clear_to_send_timeout = 8.0  # a stall fails in 8 s, not 30
            channel = conn.new_sftp().get_channel()
            assert channel is not None
            request = paramiko.Message()
            request.add_byte(paramiko.common.cMSG_CHANNEL_REQUEST)
            request.add_int(channel.remote_chanid)
            request.add_string("keepalive@openssh.com")
            request.add_boolean(True)  # want a reply (the endpoint refuses it)
            # 0.8 s each way: the request reaches the endpoint 0.8 s after it sent KEXINIT,
            # while it waits for our answer to that KEXINIT (due 1.6 s after)
            proxy.set_rtt(1600)
            conn.transport._send_user_message(request)  # type: ignore[attr-defined]
            server.renegotiate_keys()
            assert server.is_active()
            proxy.set_rtt(0)
            assert conn.sftp.listdir(".") is not None  # the connection still works
        finally:
            conn.close()
    assert "server" in deferred, "the request did not arrive during the endpoint's key exchange"
