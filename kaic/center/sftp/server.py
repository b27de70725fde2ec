"""The embedded SFTP endpoint: a paramiko SSH server on 127.0.0.1 serving only `sftp`.

Login is by public key with a certificate from the center's user CA, nothing else (no
passwords, no plain keys): the certificate must name the login name as a principal, and
its key id `kaic:<user>:<serial>` must name an existing center user whose unix account is
that login name. The user then sees their storage root (`settings.storage_root_for`) and
nothing else, through `ConfinedSFTP`. Shell, exec, forwarding and every subsystem but
`sftp` are refused.

One paramiko `Transport` (its own thread) per connection, plus a small thread that gives a
connection `LOGIN_GRACE` seconds to log in and then waits for it to end; at most
`max_connections` at once, more are closed at accept.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import selectors
import socket
import threading
import time
from pathlib import Path
from typing import Any

import paramiko
from paramiko.common import (
    AUTH_FAILED,
    AUTH_SUCCESSFUL,
    MSG_CHANNEL_DATA,
    MSG_CHANNEL_EXTENDED_DATA,
    OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED,
    OPEN_FAILED_RESOURCE_SHORTAGE,
    OPEN_SUCCEEDED,
)
from paramiko.sftp import (
    CMD_EXTENDED,
    CMD_EXTENDED_REPLY,
    CMD_FSETSTAT,
    CMD_INIT,
    CMD_MKDIR,
    CMD_OPEN,
    CMD_OPENDIR,
    CMD_SETSTAT,
    CMD_VERSION,
    SFTP_BAD_MESSAGE,
    SFTP_FAILURE,
    SFTP_OP_UNSUPPORTED,
)

from kaic.center.settings import CenterSettings
from kaic.center.sftp.certs import CertificateRejected, ssh_blob, verify_user_certificate
from kaic.center.sftp.fs import ConfinedSFTP
from kaic.center.ssh_ca import UserCA, create_ed25519_key_file
from kaic.center.store import Store

logger = logging.getLogger("kaic.center.sftp")
#: paramiko's own log channel for our transports (quiet unless asked: it is chatty)
WIRE_LOG = "kaic.center.sftp.wire"

HOST = "127.0.0.1"
HOST_KEY_FILE = "sftp_host_ed25519_key"
MAX_CONNECTIONS = 64
#: sessions (channels) open at once on one connection (OpenSSH's MaxSessions)
MAX_SESSIONS = 10
#: file and directory handles open at once on one SFTP session (kaic's pipeline opens 64)
MAX_HANDLES = 256
#: files open at once through the whole endpoint (each holds a descriptor of the center)
MAX_OPEN_FILES = 512
#: seconds a connection may take from accept to a successful login
LOGIN_GRACE = 30.0
MAX_PACKET_SIZE = 256 * 1024
#: read/write length announced to clients: a packet less room for the headers (as OpenSSH)
MAX_TRANSFER = MAX_PACKET_SIZE - 1024
SFTP_VERSION = 3
PREFERRED_CIPHERS = ("aes128-gcm@openssh.com", "aes256-gcm@openssh.com")


def load_or_create_host_key(directory: Path) -> paramiko.Ed25519Key:
    """The endpoint's ed25519 host key in `directory` (0600), generated on first use."""
    path = directory / HOST_KEY_FILE
    create_ed25519_key_file(path)
    return paramiko.Ed25519Key.from_private_key_file(str(path))


class _DropDisconnects(logging.Filter):
    """paramiko logs a client that just goes away (connection reset) as an ERROR: not ours."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Socket exception")


class _Gate(paramiko.ServerInterface):
    """The SSH policy of one connection: certificate login, then the `sftp` subsystem only."""

    def __init__(self, endpoint: EmbeddedSftp, peer: str) -> None:
        self.endpoint = endpoint
        self.peer = peer
        self.username: str | None = None
        #: the connection's transport (its open channels count against MAX_SESSIONS)
        self.transport: paramiko.Transport | None = None
        #: the logged-in user's storage root; set when a certificate checks out
        self.storage_root: Path | None = None

    def get_allowed_auths(self, username: str) -> str:
        return "publickey"

    def check_auth_none(self, username: str) -> int:
        return AUTH_FAILED

    def check_auth_password(self, username: str, password: str) -> int:
        return AUTH_FAILED

    def check_auth_publickey(self, username: str, key: paramiko.PKey) -> int:
        # paramiko calls this before verifying the login signature (which it then checks
        # with the key inside the certificate); the certificate itself is checked here.
        blob = getattr(key, "public_blob", None)
        if blob is None:
            # Clients routinely offer plain keys first: not worth more than a debug line.
            logger.debug("sftp: plain public key for %r from %s refused", username[:64], self.peer)
            return AUTH_FAILED
        try:
            verified = verify_user_certificate(
                blob.key_blob,
                ca_public_key_blob=self.endpoint.ca_public_key_blob,
                username=username,
                now=self.endpoint.settings.now(),
            )
        except CertificateRejected as exc:
            self._refuse(username, str(exc))
            return AUTH_FAILED
        if verified.public_key_blob != key.asbytes():
            self._refuse(username, "certificate and signing key differ")
            return AUTH_FAILED
        user = self.endpoint.store.get_user(verified.user)
        if user is None or user.unix_account != username:
            self._refuse(username, f"no center user {verified.user!r} with this unix account")
            return AUTH_FAILED
        try:
            root = self.endpoint.storage_root(user.name, user.unix_account)
        except OSError as exc:
            self._refuse(username, f"storage root unavailable ({exc.strerror})")
            return AUTH_FAILED
        self.username = username
        self.storage_root = root
        logger.debug(
            "sftp: certificate %s accepted for %s from %s", verified.key_id, username, self.peer
        )
        return AUTH_SUCCESSFUL

    def _refuse(self, username: str, reason: str) -> None:
        logger.info("sftp: login of %r from %s refused: %s", username[:64], self.peer, reason)

    def check_channel_request(self, kind: str, chanid: int) -> int:
        if kind == "session":
            channels = self.transport._channels if self.transport is not None else ()  # type: ignore[attr-defined]
            if len(channels) >= MAX_SESSIONS:
                logger.info("sftp: %s: too many sessions on one connection", self.peer)
                return OPEN_FAILED_RESOURCE_SHORTAGE
            return OPEN_SUCCEEDED
        return OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED

    def check_channel_subsystem_request(self, channel: paramiko.Channel, name: str) -> bool:
        if name != "sftp" or self.storage_root is None:
            return False
        return bool(super().check_channel_subsystem_request(channel, name))


class SftpSubsystem(paramiko.SFTPServer):
    """paramiko's SFTP server, announcing the OpenSSH extensions this endpoint implements.

    paramiko announces only `check-file` (md5/sha1). Announcing `limits@openssh.com` lets
    OpenSSH's `sftp` use 255 KiB reads and writes instead of its cautious 32 KiB default
    (~2.5x faster here), and `posix-rename@openssh.com` makes its `rename` behave as
    against sshd. Overrides paramiko's (private, but long stable) `_send_server_version`
    and `_process`; tests/e2e/test_embedded_sftp.py drives both with the OpenSSH client.
    """

    def _send_server_version(self) -> int:
        kind, data = self._read_packet()
        if kind != CMD_INIT:
            raise paramiko.SFTPError("Incompatible sftp protocol")
        version = int.from_bytes(data[:4], "big")
        msg = paramiko.Message()
        msg.add_int(SFTP_VERSION)
        msg.add("posix-rename@openssh.com", "1", "limits@openssh.com", "1")
        self._send_packet(CMD_VERSION, msg)  # type: ignore[attr-defined]
        return version

    def finish_subsystem(self) -> None:
        # paramiko closes the open files only after closing the channel, which raises when
        # the client has dropped the connection already: their descriptors would leak.
        for handle in list(self.file_table.values()):
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

    def _process(self, t: int, request_number: int, msg: paramiko.Message) -> None:
        if t in _WITH_ATTRS and not _attrs_fit(t, msg):
            self._send_status(request_number, SFTP_BAD_MESSAGE)  # type: ignore[attr-defined]
            return
        if t in (CMD_OPEN, CMD_OPENDIR):
            tables = (self.file_table, self.folder_table)
            if sum(len(table) for table in tables) >= MAX_HANDLES:
                self._send_status(request_number, SFTP_FAILURE, "too many open handles")  # type: ignore[attr-defined]
                return
        if t == CMD_EXTENDED:
            start = msg.packet.tell()
            tag = msg.get_text()
            if tag == "check-file":
                # paramiko's loops forever on a range past the end of the file; not announced
                self._send_status(request_number, SFTP_OP_UNSUPPORTED)  # type: ignore[attr-defined]
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


class EmbeddedSftp:
    """The endpoint of one center: `start()` listens on 127.0.0.1, `stop()` ends everything."""

    def __init__(
        self,
        settings: CenterSettings,
        store: Store,
        user_ca: UserCA,
        *,
        max_connections: int = MAX_CONNECTIONS,
        login_grace: float = LOGIN_GRACE,
        max_open_files: int = MAX_OPEN_FILES,
    ) -> None:
        self.settings = settings
        self.store = store
        self.user_ca = user_ca
        self.max_connections = max_connections
        self.login_grace = login_grace
        #: descriptors the endpoint's open files may hold, all connections together
        self.file_budget = threading.BoundedSemaphore(max_open_files)
        self._max_open_files = max_open_files
        self.host_key = load_or_create_host_key(settings.state_dir / "ssh")
        self._sock: socket.socket | None = None
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._transports: set[paramiko.Transport] = set()
        self._threads: set[threading.Thread] = set()
        self._acceptor: threading.Thread | None = None
        self.port: int | None = None
        wire = logging.getLogger(WIRE_LOG)
        if wire.level == logging.NOTSET:
            wire.setLevel(logging.WARNING)
        if not any(isinstance(f, _DropDisconnects) for f in wire.filters):
            wire.addFilter(_DropDisconnects())

    @property
    def host(self) -> str:
        return HOST

    @property
    def host_key_line(self) -> str:
        """The host's public key as an OpenSSH line (`ssh-ed25519 AAAA…`)."""
        return f"{self.host_key.get_name()} {self.host_key.get_base64()}"

    @functools.cached_property
    def ca_public_key_blob(self) -> bytes:
        """The user CA's public key in wire form (encoded once, checked at every login)."""
        return ssh_blob(self.user_ca.private_key().public_key())

    def storage_root(self, user: str, unix_account: str) -> Path:
        """The user's root; the center's own storage is created on first login."""
        root = self.settings.ensure_storage_root(user, unix_account)
        if not root.is_dir():
            raise FileNotFoundError(2, "no such directory", str(root))
        return root

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> None:
        """Listen on 127.0.0.1:`settings.sftp_port` (0 = a free port) and accept in a thread."""
        from kaic.center.server import bind_loopback_socket

        port = self.settings.sftp_port or 0
        self._sock = bind_loopback_socket(HOST, port)
        self.port = int(self._sock.getsockname()[1])
        self._acceptor = threading.Thread(
            target=self._accept_loop, name="kaic-sftp-accept", daemon=True
        )
        self._acceptor.start()
        logger.info(
            "embedded SFTP endpoint listening on %s:%d (host key %s)",
            HOST,
            self.port,
            self.host_key.fingerprint,
        )

    def stop(self, timeout: float = 5.0) -> None:
        """Stop accepting, close every connection, wait for their threads (bounded)."""
        self._stopping.set()
        if self._acceptor is not None:
            self._acceptor.join(timeout)
        if self._sock is not None:
            self._sock.close()
        with self._lock:
            transports = list(self._transports)
            threads = list(self._threads)
        for transport in transports:
            with contextlib.suppress(Exception):
                transport.close()
        for thread in threads:
            thread.join(timeout)
        if self.port is not None:
            logger.info("embedded SFTP endpoint on %s:%d stopped", HOST, self.port)

    def open_files(self) -> int:
        """How many files are open through the endpoint now."""
        return self._max_open_files - self.file_budget._value

    def connections(self) -> int:
        """How many connections are open now."""
        with self._lock:
            return len(self._threads)

    def _accept_loop(self) -> None:
        assert self._sock is not None
        with selectors.DefaultSelector() as selector:
            selector.register(self._sock, selectors.EVENT_READ)
            while not self._stopping.is_set():
                if not selector.select(timeout=0.2):
                    continue
                try:
                    conn, address = self._sock.accept()
                except OSError:
                    continue
                peer = f"{address[0]}:{address[1]}"
                with self._lock:
                    busy = len(self._threads) >= self.max_connections
                    if not busy:
                        thread = threading.Thread(
                            target=self._serve,
                            args=(conn, peer),
                            name="kaic-sftp-conn",
                            daemon=True,
                        )
                        self._threads.add(thread)
                if busy:
                    logger.warning("sftp: too many connections; closing %s", peer)
                    conn.close()
                    continue
                thread.start()

    def _serve(self, conn: socket.socket, peer: str) -> None:
        transport: paramiko.Transport | None = None
        try:
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            transport = paramiko.Transport(conn, default_max_packet_size=MAX_PACKET_SIZE)
            transport.set_log_channel(WIRE_LOG)
            _enforce_windows(transport)
            _prefer_gcm(transport)
            transport.add_server_key(self.host_key)
            transport.set_subsystem_handler("sftp", SftpSubsystem, ConfinedSFTP)
            with self._lock:
                if self._stopping.is_set():
                    return
                self._transports.add(transport)
            gate = _Gate(self, peer)
            gate.transport = transport
            # Asynchronous: the login grace below covers the handshake too, so a client
            # that connects and says nothing holds its slot only that long.
            transport.start_server(event=threading.Event(), server=gate)
            if not self._wait_for_login(transport):
                if transport.is_active():
                    logger.info("sftp: %s did not log in within %.0f s", peer, self.login_grace)
                else:
                    failure = transport.get_exception()
                    logger.debug("sftp: %s left without logging in (%s)", peer, failure)
                return
            logger.info("sftp: %s logged in from %s", gate.username, peer)
            while transport.is_active() and not self._stopping.is_set():
                transport.join(0.5)
        except Exception:
            logger.exception("sftp: connection from %s failed", peer)
        finally:
            if transport is not None:
                with contextlib.suppress(Exception):
                    transport.close()
            with contextlib.suppress(OSError):
                conn.close()
            with self._lock:
                if transport is not None:
                    self._transports.discard(transport)
                self._threads.discard(threading.current_thread())

    def _wait_for_login(self, transport: paramiko.Transport) -> bool:
        deadline = time.monotonic() + self.login_grace
        while time.monotonic() < deadline and not self._stopping.is_set():
            if not transport.is_active():
                return False
            if transport.is_authenticated():
                return True
            self._stopping.wait(0.05)
        return False


def _enforce_windows(transport: paramiko.Transport) -> None:
    """Close the connection when a client sends a channel more than its window.

    paramiko buffers whatever arrives on a channel and never checks the window it gave:
    a client ignoring it could fill the center's memory through a channel nobody reads.
    A client that keeps to the window never has more than the window buffered.
    """
    table: dict[int, Any] = dict(transport._channel_handler_table)  # type: ignore[attr-defined]
    feed, feed_extended = table[MSG_CHANNEL_DATA], table[MSG_CHANNEL_EXTENDED_DATA]

    def checked(handler: Any) -> Any:
        def handle(channel: paramiko.Channel, m: paramiko.Message) -> None:
            handler(channel, m)
            buffered = len(channel.in_buffer) + len(channel.in_stderr_buffer)
            if buffered > channel.in_window_size:
                raise paramiko.SSHException("client sent more than the channel window")

        return handle

    table[MSG_CHANNEL_DATA] = checked(feed)
    table[MSG_CHANNEL_EXTENDED_DATA] = checked(feed_extended)
    transport._channel_handler_table = table  # type: ignore[attr-defined]


def _prefer_gcm(transport: paramiko.Transport) -> None:
    options: Any = transport.get_security_options()
    offered = tuple(options.ciphers)
    options.ciphers = tuple(c for c in PREFERRED_CIPHERS if c in offered) + tuple(
        c for c in offered if c not in PREFERRED_CIPHERS
    )
