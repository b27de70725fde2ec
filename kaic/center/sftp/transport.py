"""The SSH transport of each endpoint connection, hardened beyond paramiko's defaults.

- SHA-1 signatures are refused for user authentication (as OpenSSH 8.8+ does): the
  `ssh-rsa` algorithms are disabled, and RSA logins are verified with SHA-2 only.
- A client that sends a channel more than the window it was given is disconnected
  (paramiko buffers whatever arrives).
- AES-GCM is preferred (the fastest cipher both sides have).
- paramiko's chatty log channel (`WIRE_LOG`) is kept at warnings, without the error it
  logs for every client that just goes away.
- `disconnect` ends a connection with a reason the client shows.

paramiko's private tables are touched here (`_key_info`, `_channel_handler_table`); they
have been stable for years, and tests/center/test_sftp_server.py drives each of them.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any

import paramiko
from paramiko.common import MSG_CHANNEL_DATA, MSG_CHANNEL_EXTENDED_DATA, cMSG_DISCONNECT

#: paramiko's own log channel for our transports (quiet unless asked: it is chatty)
WIRE_LOG = "kaic.center.sftp.wire"

PREFERRED_CIPHERS = ("aes128-gcm@openssh.com", "aes256-gcm@openssh.com")
#: public key algorithms signing with SHA-1, refused for user authentication (as OpenSSH
#: 8.8+ does); rsa-sha2-256/512, ECDSA and ed25519 stay
SHA1_PUBKEY_ALGORITHMS = ("ssh-rsa", "ssh-rsa-cert-v01@openssh.com")
#: RFC 4253 11.1 reason codes
DISCONNECT_BY_APPLICATION = 11
DISCONNECT_TOO_MANY_CONNECTIONS = 12


def harden(transport: paramiko.Transport) -> None:
    """Apply this module's rules to a new server transport (before it starts)."""
    transport.set_log_channel(WIRE_LOG)
    _enforce_windows(transport)
    _prefer_gcm(transport)
    _refuse_sha1(transport)


def quiet_wire_log() -> None:
    """paramiko's log for our transports: warnings only unless configured, no reset noise."""
    wire = logging.getLogger(WIRE_LOG)
    if wire.level == logging.NOTSET:
        wire.setLevel(logging.WARNING)
    if not any(isinstance(f, _DropDisconnects) for f in wire.filters):
        wire.addFilter(_DropDisconnects())


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
