"""paramiko's client transport, made safe around key exchanges, and EOF sent in order.

paramiko's transport runs a reader thread that also *sends*: the EOF and CLOSE answering a
channel the host closed, keepalives. During a key exchange (a rekey: paramiko asks for one
every `REKEY_BYTES` each way; sshd may too) paramiko makes every such message wait until the
new keys are in — including the reader's own, although only the reader can finish the
exchange. `ClientTransport` queues what must wait and sends it, in order, from a thread of
its own; `shutdown_write` sends a channel's EOF without waiting while it holds the lock the
reader needs. Both were 30 s stalls that ended the connection ("Key-exchange timed out"):
tests/staging/test_packets.py reproduces each.
"""

from __future__ import annotations

import collections
import contextlib
import threading
from typing import Any

import paramiko


def shutdown_write(channel: paramiko.Channel) -> None:
    """Send EOF on `channel` without paramiko's race with a fast command.

    `Channel.shutdown_write()` marks EOF as sent under the channel lock but sends it after
    releasing it; if the command has already finished, the transport thread may answer the
    server's CLOSE in between, our EOF then arrives for a channel sshd has freed, and sshd
    drops the whole connection ("ieof packet referred to nonexistent channel"). Holding the
    lock while sending — or, during a key exchange, while queueing it ahead of the reader
    thread's answers (`ClientTransport.send_soon`) — keeps EOF before CLOSE.
    """
    lock = getattr(channel, "lock", None)
    send_eof = getattr(channel, "_send_eof", None)
    transport = channel.get_transport()
    if lock is None or send_eof is None or not isinstance(transport, ClientTransport):
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


class ClientTransport(paramiko.Transport):
    """paramiko's transport, keeping the reason a server gives when it disconnects, and
    never deadlocking its own thread in a key exchange.

    paramiko only logs the reason, and its callers then see "Authentication failed." or an
    EOF; a server that says why ("too many connections for alice: …") deserves to be quoted.
    """

    disconnect_reason: str | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        #: what the reader thread said during a key exchange (`_send_user_message`)
        self._kaic_later: collections.deque[object] = collections.deque()

    def _send_user_message(self, data: object) -> None:
        # paramiko's reader thread sends user messages itself: the EOF and CLOSE answering a
        # channel the host closed, a keepalive. Once KEXINIT is out (a rekey: every
        # REKEY_BYTES, or asked for) such a message waits for the key exchange to end —
        # which only this same thread can finish by reading on — and after 30 s the
        # connection dies ("Key-exchange timed out"; seen when an exec channel of the host's
        # hashing closed during a rekey).
        if threading.current_thread() is self:
            self.send_soon(data)
        else:
            super()._send_user_message(data)  # type: ignore[misc]

    def send_soon(self, data: object) -> None:
        """Send `data` now, or — during a key exchange — as soon as the keys are new, in
        order with whatever else waits so (by a thread of its own): the caller never
        waits for a key exchange, so it may hold a lock the reader thread needs."""
        t: Any = self  # (paramiko's untyped internals)
        with self.clear_to_send_lock:
            if self.clear_to_send.is_set() and not self._kaic_later:
                t._send_message(data)
                return
            self._kaic_later.append(data)
            if len(self._kaic_later) == 1:
                threading.Thread(
                    target=self._send_later, name="kaic-after-kex", daemon=True
                ).start()

    def _send_later(self) -> None:
        """Send the queued messages of `send_soon`, in order, once the keys are new."""
        t: Any = self  # (paramiko's untyped internals)
        later = self._kaic_later
        while t.active:
            self.clear_to_send.wait(0.1)
            with self.clear_to_send_lock:
                if not self.clear_to_send.is_set():
                    continue
                try:
                    while later:
                        t._send_message(later[0])
                        later.popleft()
                except (OSError, EOFError, paramiko.SSHException):
                    later.clear()  # the connection is gone: so is what it was to say
                return
        with self.clear_to_send_lock:
            later.clear()

    def _parse_disconnect(self, m: paramiko.Message) -> None:
        start = m.packet.tell()
        with contextlib.suppress(Exception):
            m.get_int()  # the reason code
            text = m.get_text()[:500]
            self.disconnect_reason = "".join(c if c.isprintable() else "?" for c in text)
        m.packet.seek(start)
        super()._parse_disconnect(m)  # type: ignore[misc]
