"""paramiko's client transport for staging, and a channel's EOF sent in order.

`ClientTransport` keeps the reason a host gives when it disconnects, and never stalls in a
key exchange (`kaic.sshkex`); `shutdown_write` sends EOF without paramiko's race with a
fast command, and without waiting for a key exchange while it holds the channel lock the
reader thread needs (that was a 30 s stall too: tests/staging/test_packets.py).
"""

from __future__ import annotations

import contextlib

import paramiko

from kaic.sshkex import KexSafeTransport


def shutdown_write(channel: paramiko.Channel) -> None:
    """Send EOF on `channel` without paramiko's race with a fast command.

    `Channel.shutdown_write()` marks EOF as sent under the channel lock but sends it after
    releasing it; if the command has already finished, the transport thread may answer the
    server's CLOSE in between, our EOF then arrives for a channel sshd has freed, and sshd
    drops the whole connection ("ieof packet referred to nonexistent channel"). Holding the
    lock while sending — or, during a key exchange, while queueing it ahead of the reader
    thread's answers (`KexSafeTransport.send_soon`) — keeps EOF before CLOSE.
    """
    lock = getattr(channel, "lock", None)
    send_eof = getattr(channel, "_send_eof", None)
    transport = channel.get_transport()
    if lock is None or send_eof is None or not isinstance(transport, KexSafeTransport):
        channel.shutdown_write()  # pragma: no cover
        return
    with lock:
        if channel.closed:
            return
        message = send_eof()
        if message is not None:
            # not `_send_user_message`: during a key exchange it waits for the reader
            # thread, which waits for this lock to take the host's EOF (a deadlock)
            transport.send_soon(message)


class ClientTransport(KexSafeTransport):
    """paramiko's transport (safe in a key exchange: `kaic.sshkex`), keeping the reason a
    server gives when it disconnects.

    paramiko only logs the reason, and its callers then see "Authentication failed." or an
    EOF; a server that says why ("too many connections for alice: …") deserves to be quoted.
    """

    disconnect_reason: str | None = None

    def _parse_disconnect(self, m: paramiko.Message) -> None:
        start = m.packet.tell()
        with contextlib.suppress(Exception):
            m.get_int()  # the reason code
            text = m.get_text()[:500]
            self.disconnect_reason = "".join(c if c.isprintable() else "?" for c in text)
        m.packet.seek(start)
        super()._parse_disconnect(m)  # type: ignore[misc]
