"""The embedded SFTP endpoint: a paramiko SSH server on 127.0.0.1 serving only `sftp`.

Login is by public key with a certificate from the center's user CA, nothing else (no
passwords, no plain keys, no SHA-1 `ssh-rsa` signatures): the certificate must name the
login name as a principal, and its key id `kaic:<user>:<serial>` must name an existing
center user whose unix account is that login name. The user then sees their storage root
(`settings.storage_root_for`) and nothing else, through `ConfinedSFTP`. Shell, exec,
forwarding and every subsystem but `sftp` are refused.

Who touches the files: a single-user center (no `run_as_users`) serves SFTP in its own
process, as its own account. A center that runs jobs as users (root, `run_as_users`)
serves each connection from a worker process running as the user's unix account
(`relay`, `worker`), so ownership, permissions and hard-link rules are the kernel's; the
center then keeps only the SSH side and copies bytes.

One paramiko `Transport` (its own thread) per connection, plus a small thread that gives a
connection `LOGIN_GRACE` seconds to log in and then waits for it to end (and owns its
worker); at most `max_connections` at once, more are closed at accept, and at most
`max_connections_per_user` logged in per user, more are disconnected with a message
saying so (SSH_DISCONNECT_TOO_MANY_CONNECTIONS).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
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
    cMSG_DISCONNECT,
)

from kaic.center.listen import bind_loopback_socket
from kaic.center.runas import UnixAccount
from kaic.center.settings import CenterSettings
from kaic.center.sftp.certs import CertificateRejected, ssh_blob, verify_user_certificate
from kaic.center.sftp.fs import ConfinedSFTP
from kaic.center.sftp.relay import ConnectionWorker, WorkerFailed, WorkerRelay
from kaic.center.sftp.subsystem import (
    MAX_HANDLES,
    MAX_PACKET_SIZE,
    MAX_TRANSFER,
    SFTP_VERSION,
    SftpSubsystem,
)
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
#: files open at once through the whole endpoint (each holds a descriptor of the center)
MAX_OPEN_FILES = 512
#: seconds a connection may take from accept to a successful login
LOGIN_GRACE = 30.0
PREFERRED_CIPHERS = ("aes128-gcm@openssh.com", "aes256-gcm@openssh.com")
#: public key algorithms signing with SHA-1, refused for user authentication (as OpenSSH
#: 8.8+ does); rsa-sha2-256/512, ECDSA and ed25519 stay
SHA1_PUBKEY_ALGORITHMS = ("ssh-rsa", "ssh-rsa-cert-v01@openssh.com")
#: RFC 4253 11.1 reason codes
DISCONNECT_BY_APPLICATION = 11
DISCONNECT_TOO_MANY_CONNECTIONS = 12

__all__ = [
    "MAX_HANDLES",
    "MAX_PACKET_SIZE",
    "MAX_TRANSFER",
    "SFTP_VERSION",
    "EmbeddedSftp",
    "SftpSubsystem",
]


def load_or_create_host_key(directory: Path) -> paramiko.Ed25519Key:
    """The endpoint's ed25519 host key in `directory` (0600), generated on first use."""
    path = directory / HOST_KEY_FILE
    create_ed25519_key_file(path)
    return paramiko.Ed25519Key.from_private_key_file(str(path))


class _DropDisconnects(logging.Filter):
    """paramiko logs a client that just goes away (connection reset) as an ERROR: not ours."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Socket exception")


class _Sha2RsaKey(paramiko.RSAKey):
    """An RSA user key whose login signature must use SHA-2 (rsa-sha2-256/512).

    paramiko's RSAKey verifies whatever hash the signature names, so a client could ask
    for `rsa-sha2-256` and still sign with `ssh-rsa` (SHA-1) — and paramiko before 5.0
    accepts `ssh-rsa` outright. Installed on each transport by `_refuse_sha1`.
    """

    HASHES = {  # type: ignore[misc]  # noqa: RUF012
        name: digest
        for name, digest in paramiko.RSAKey.HASHES.items()
        if not name.startswith("ssh-rsa")
    }


def _refuse_sha1(transport: paramiko.Transport) -> None:
    """Verify RSA logins with `_Sha2RsaKey`, and know no `ssh-rsa` key algorithm at all."""
    table: dict[str, Any] = transport._key_info  # type: ignore[attr-defined]
    transport._key_info = {  # type: ignore[attr-defined]
        name: _Sha2RsaKey if cls is paramiko.RSAKey else cls
        for name, cls in table.items()
        if name not in SHA1_PUBKEY_ALGORITHMS
    }


class _ServerTransport(paramiko.Transport):
    """A server transport that admits a login only within its user's connection cap.

    paramiko calls `_auth_trigger` in the transport's thread right after it sent
    USERAUTH_SUCCESS and before it reads anything else, so no channel can open before the
    admission is decided.
    """

    def _auth_trigger(self) -> None:
        super()._auth_trigger()  # type: ignore[misc]
        gate = self.server_object
        if isinstance(gate, _Gate):
            gate.endpoint.admit(gate, self)


def disconnect(transport: paramiko.Transport, code: int, description: str) -> None:
    """Send SSH_MSG_DISCONNECT with a reason the client shows, and close the connection."""
    message = paramiko.Message()
    message.add_byte(cMSG_DISCONNECT)
    message.add_int(code)
    message.add_string(description)
    message.add_string("en")
    with contextlib.suppress(Exception):
        transport._send_message(message)  # type: ignore[attr-defined]
    transport.close()


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
        #: the unix account the files are served as (worker mode only)
        self.account: UnixAccount | None = None
        #: None until the login is decided, then whether it fits the user's connection cap
        self.admitted: bool | None = None
        #: the connection's worker (worker mode), set once it runs; `worker_ready` is set
        #: when it runs, or when it never will
        self.worker: ConnectionWorker | None = None
        self.worker_ready = threading.Event()

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
        account = None
        if self.endpoint.as_users:
            try:
                account = UnixAccount.lookup(username)
            except LookupError as exc:
                self._refuse(username, str(exc))
                return AUTH_FAILED
        try:
            root = self.endpoint.storage_root(user.name, user.unix_account)
        except OSError as exc:
            self._refuse(username, f"storage root unavailable ({exc.strerror})")
            return AUTH_FAILED
        self.username = username
        self.storage_root = root
        self.account = account
        logger.debug(
            "sftp: certificate %s accepted for %s from %s", verified.key_id, username, self.peer
        )
        return AUTH_SUCCESSFUL

    def _refuse(self, username: str, reason: str) -> None:
        logger.info("sftp: login of %r from %s refused: %s", username[:64], self.peer, reason)

    def check_channel_request(self, kind: str, chanid: int) -> int:
        if kind == "session" and self.admitted:
            channels = self.transport._channels if self.transport is not None else ()  # type: ignore[attr-defined]
            if len(channels) >= MAX_SESSIONS:
                logger.info("sftp: %s: too many sessions on one connection", self.peer)
                return OPEN_FAILED_RESOURCE_SHORTAGE
            return OPEN_SUCCEEDED
        return OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED

    def check_channel_subsystem_request(self, channel: paramiko.Channel, name: str) -> bool:
        if name != "sftp" or self.storage_root is None or not self.admitted:
            return False
        return bool(super().check_channel_subsystem_request(channel, name))

    def wait_for_worker(self, timeout: float) -> ConnectionWorker | None:
        """The connection's running worker, once started (None if it failed or is gone)."""
        self.worker_ready.wait(timeout)
        worker = self.worker
        return worker if worker is not None and worker.running() else None


class EmbeddedSftp:
    """The endpoint of one center: `start()` listens on 127.0.0.1, `stop()` ends everything."""

    def __init__(
        self,
        settings: CenterSettings,
        store: Store,
        user_ca: UserCA,
        *,
        max_connections: int | None = None,
        max_connections_per_user: int | None = None,
        login_grace: float = LOGIN_GRACE,
        max_open_files: int = MAX_OPEN_FILES,
    ) -> None:
        self.settings = settings
        self.store = store
        self.user_ca = user_ca
        self.max_connections = max_connections or settings.sftp_max_connections
        self.max_connections_per_user = (
            max_connections_per_user or settings.sftp_connections_per_user
        )
        #: serve each connection from a worker running as the user's unix account
        self.as_users = settings.run_as_users
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
        #: admitted (logged-in) connections per unix account
        self._per_user: dict[str, int] = {}
        self._workers: set[ConnectionWorker] = set()
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
        if self.as_users and os.geteuid() != 0:
            raise ValueError("serving SFTP as each user's unix account needs a center run as root")
        port = self.settings.sftp_port or 0
        self._sock = bind_loopback_socket(HOST, port)
        self.port = int(self._sock.getsockname()[1])
        self._acceptor = threading.Thread(
            target=self._accept_loop, name="kaic-sftp-accept", daemon=True
        )
        self._acceptor.start()
        logger.info(
            "embedded SFTP endpoint listening on %s:%d (host key %s; %s)",
            HOST,
            self.port,
            self.host_key.fingerprint,
            "files served as each user's unix account" if self.as_users else "in process",
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
        with self._lock:
            workers = list(self._workers)
        for worker in workers:  # only if a connection's thread did not get to it
            worker.stop(0)
        if self.port is not None:
            logger.info("embedded SFTP endpoint on %s:%d stopped", HOST, self.port)

    def open_files(self) -> int:
        """How many files are open through the endpoint now (in-process serving)."""
        return self._max_open_files - self.file_budget._value

    def connections(self) -> int:
        """How many connections are open now."""
        with self._lock:
            return len(self._threads)

    def worker_pids(self) -> list[int]:
        """The process ids of the running workers (one per logged-in connection)."""
        with self._lock:
            return [w.pid for w in self._workers if w.pid is not None and w.running()]

    def admit(self, gate: _Gate, transport: paramiko.Transport) -> bool:
        """Admit a login within its user's connection cap; disconnect it with a reason if not.

        Called once per connection, right after a successful login.
        """
        user = gate.username or "?"
        cap = self.max_connections_per_user
        with self._lock:
            if gate.admitted is not None:
                return gate.admitted
            held = self._per_user.get(user, 0)
            gate.admitted = held < cap and not self._stopping.is_set()
            if gate.admitted:
                self._per_user[user] = held + 1
        if not gate.admitted:
            logger.warning(
                "sftp: login of %s from %s refused: %d connections already (at most %d per user)",
                user,
                gate.peer,
                held,
                cap,
            )
            disconnect(
                transport,
                DISCONNECT_TOO_MANY_CONNECTIONS,
                f"too many connections for {user}: at most {cap} at once; wait for your other "
                "transfers to finish, or use fewer parallel connections",
            )
        return gate.admitted

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
        gate = _Gate(self, peer)
        try:
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            transport = _ServerTransport(
                conn,
                default_max_packet_size=MAX_PACKET_SIZE,
                disabled_algorithms={"pubkeys": list(SHA1_PUBKEY_ALGORITHMS)},
            )
            transport.set_log_channel(WIRE_LOG)
            _enforce_windows(transport)
            _prefer_gcm(transport)
            _refuse_sha1(transport)
            transport.add_server_key(self.host_key)
            if self.as_users:
                transport.set_subsystem_handler("sftp", WorkerRelay)
            else:
                transport.set_subsystem_handler("sftp", SftpSubsystem, ConfinedSFTP)
            with self._lock:
                if self._stopping.is_set():
                    return
                self._transports.add(transport)
            gate.transport = transport
            # Asynchronous: the login grace below covers the handshake too, so a client
            # that connects and says nothing holds its slot only that long.
            transport.start_server(event=threading.Event(), server=gate)
            if not self._wait_for_login(transport, gate):
                if transport.is_active():
                    logger.info("sftp: %s did not log in within %.0f s", peer, self.login_grace)
                elif gate.admitted is None:
                    failure = transport.get_exception()
                    logger.debug("sftp: %s left without logging in (%s)", peer, failure)
                return
            logger.info("sftp: %s logged in from %s", gate.username, peer)
            if self.as_users and not self._start_worker(gate):
                return
            while transport.is_active() and not self._stopping.is_set():
                if gate.worker is not None and not gate.worker.running():
                    logger.warning(
                        "sftp: the worker of %s (pid %s) exited; closing the connection",
                        gate.username,
                        gate.worker.pid,
                    )
                    break
                transport.join(0.5)
        except Exception:
            logger.exception("sftp: connection from %s failed", peer)
        finally:
            gate.worker_ready.set()  # nobody waits for a worker any more
            if transport is not None:
                with contextlib.suppress(Exception):
                    transport.close()
            with contextlib.suppress(OSError):
                conn.close()
            if gate.worker is not None:
                gate.worker.stop()
            with self._lock:
                if transport is not None:
                    self._transports.discard(transport)
                if gate.worker is not None:
                    self._workers.discard(gate.worker)
                if gate.admitted and gate.username is not None:
                    left = self._per_user.get(gate.username, 1) - 1
                    if left > 0:
                        self._per_user[gate.username] = left
                    else:
                        self._per_user.pop(gate.username, None)
                self._threads.discard(threading.current_thread())

    def _start_worker(self, gate: _Gate) -> bool:
        """Start the connection's worker (in the connection's own thread: see relay)."""
        assert gate.account is not None and gate.storage_root is not None
        worker = ConnectionWorker(gate.account, gate.storage_root)
        with self._lock:
            if self._stopping.is_set():
                return False
            self._workers.add(worker)
        try:
            worker.start()
        except WorkerFailed as exc:
            logger.error("sftp: cannot serve %s from %s: %s", gate.username, gate.peer, exc)
            with self._lock:
                self._workers.discard(worker)
            if gate.transport is not None:  # the reason concerns the user's own files
                disconnect(
                    gate.transport,
                    DISCONNECT_BY_APPLICATION,
                    f"the center cannot serve your files: {exc}; tell its operators",
                )
            return False
        gate.worker = worker
        gate.worker_ready.set()
        logger.info(
            "sftp: serving %s as uid %d (worker pid %s)",
            gate.username,
            gate.account.uid,
            worker.pid,
        )
        return True

    def _wait_for_login(self, transport: paramiko.Transport, gate: _Gate) -> bool:
        """Whether the connection logged in and was admitted within the login grace."""
        deadline = time.monotonic() + self.login_grace
        while time.monotonic() < deadline and not self._stopping.is_set():
            if gate.admitted is not None:
                return gate.admitted and transport.is_active()
            if not transport.is_active():
                return False
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
