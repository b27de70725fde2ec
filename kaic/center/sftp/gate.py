"""The SSH policy of one endpoint connection: certificate login, admission, `sftp` only.

Login is by public key with a certificate from the center's user CA, nothing else: the
certificate must name the login name as a principal, and its key id `kaic:<user>:<serial>`
must name an existing center user whose unix account is that login name (`Gate`). The
endpoint then admits the login within its user's connection cap (`ServerTransport`, before
any channel can open), and the connection may open at most `MAX_SESSIONS` sessions, each
only for the `sftp` subsystem.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import TYPE_CHECKING

import paramiko
from paramiko.common import (
    AUTH_FAILED,
    AUTH_SUCCESSFUL,
    OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED,
    OPEN_FAILED_RESOURCE_SHORTAGE,
    OPEN_SUCCEEDED,
)

from kaic.center.runas import UnixAccount
from kaic.center.sftp.certs import CertificateRejected, verify_user_certificate
from kaic.sshkex import KexSafeTransport

if TYPE_CHECKING:
    from kaic.center.sftp.relay import ConnectionWorker
    from kaic.center.sftp.server import EmbeddedSftp

logger = logging.getLogger("kaic.center.sftp")

#: sessions (channels) open at once on one connection (OpenSSH's MaxSessions)
MAX_SESSIONS = 10


class ServerTransport(KexSafeTransport):
    """A server transport that admits a login only within its user's connection cap (and,
    as `kaic.sshkex` makes it, never stalls in a key exchange).

    paramiko calls `_auth_trigger` in the transport's thread right after it sent
    USERAUTH_SUCCESS and before it reads anything else, so no channel can open before the
    admission is decided.
    """

    def _auth_trigger(self) -> None:
        super()._auth_trigger()  # type: ignore[misc]
        gate = self.server_object
        if isinstance(gate, Gate):
            gate.endpoint.admit(gate, self)


class Gate(paramiko.ServerInterface):
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
