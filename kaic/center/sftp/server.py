"""The embedded SFTP endpoint: a paramiko SSH server on 127.0.0.1 serving only `sftp`.

Login is by public key with a certificate from the center's user CA, nothing else (no
passwords, no plain keys, no SHA-1 `ssh-rsa` signatures): the certificate must name the
login name as a principal, and its key id `kaic:<user>:<serial>` must name an existing
center user whose unix account is that login name (`gate`; the transport's hardening is
`transport`). The user then sees their storage root (`settings.storage_root_for`) and
nothing else, through `ConfinedSFTP`. Shell, exec, forwarding and every subsystem but
`sftp` are refused.

Who touches the files: a single-user center (no `run_as_users`) serves SFTP in its own
process, as its own account. A center that runs jobs as users (`settings.acts_as_users`:
`run_as_users`, or root with an executor such as Slurm) serves each connection from a
worker process running as the user's unix account (`relay`, `worker`), so ownership,
permissions and hard-link rules are the kernel's; the center then keeps only the SSH side
and copies bytes.

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

import paramiko

from kaic.center.listen import bind_loopback_socket
from kaic.center.settings import CenterSettings
from kaic.center.sftp.certs import ssh_blob
from kaic.center.sftp.fs import ConfinedSFTP
from kaic.center.sftp.gate import Gate, ServerTransport
from kaic.center.sftp.relay import ConnectionWorker, WorkerFailed, WorkerRelay
from kaic.center.sftp.subsystem import (
    MAX_HANDLES,
    MAX_PACKET_SIZE,
    MAX_TRANSFER,
    SFTP_VERSION,
    SftpSubsystem,
)
from kaic.center.sftp.transport import (
    DISCONNECT_BY_APPLICATION,
    DISCONNECT_TOO_MANY_CONNECTIONS,
    SHA1_PUBKEY_ALGORITHMS,
    disconnect,
    harden,
    quiet_wire_log,
)
from kaic.center.ssh_ca import UserCA, create_ed25519_key_file
from kaic.center.store import Store

logger = logging.getLogger("kaic.center.sftp")
HOST = "127.0.0.1"
HOST_KEY_FILE = "sftp_host_ed25519_key"
MAX_CONNECTIONS = 64
#: files open at once through the whole endpoint (each holds a descriptor of the center)
MAX_OPEN_FILES = 512
#: seconds a connection may take from accept to a successful login
LOGIN_GRACE = 30.0

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
        self.as_users = settings.acts_as_users
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
        quiet_wire_log()

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

    def admit(self, gate: Gate, transport: paramiko.Transport) -> bool:
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
        gate = Gate(self, peer)
        try:
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            transport = ServerTransport(
                conn,
                default_max_packet_size=MAX_PACKET_SIZE,
                disabled_algorithms={"pubkeys": list(SHA1_PUBKEY_ALGORITHMS)},
            )
            harden(transport)
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

    def _start_worker(self, gate: Gate) -> bool:
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

    def _wait_for_login(self, transport: paramiko.Transport, gate: Gate) -> bool:
        """Whether the connection logged in and was admitted within the login grace."""
        deadline = time.monotonic() + self.login_grace
        while time.monotonic() < deadline and not self._stopping.is_set():
            if gate.admitted is not None:
                return gate.admitted and transport.is_active()
            if not transport.is_active():
                return False
            self._stopping.wait(0.05)
        return False
