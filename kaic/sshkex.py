"""paramiko's transport without its key-exchange stall, for the client and the server side.

paramiko's transport runs a reader thread that also *sends*: the EOF and CLOSE answering a
channel the peer closed, channel-request replies, keepalives. During a key exchange (a
rekey: paramiko asks for one every `REKEY_BYTES` each way — 512 MiB —, and the peer may too)
paramiko makes every such message wait until the new keys are in, the reader's own
included, although only the reader can finish the exchange: after 30 s the connection died
("Key-exchange timed out waiting for key negotiation"). Measured: a 1 GiB pull at 30 ms RTT
took 38 s instead of 5 when the host's hashing exec channel closed during the rekey.
`KexSafeTransport` queues what must wait and sends it, in order, from a thread of its own;
other threads' messages wait for that queue too (an EOF queued there precedes a CLOSE).
tests/staging/test_packets.py and tests/center/test_sftp_server.py reproduce the stall.

A leaf: paramiko and the standard library only (the staging engine and the center use it).
"""

from __future__ import annotations

import collections
import threading
import time
from typing import Any

import paramiko


class KexSafeTransport(paramiko.Transport):
    """`paramiko.Transport` whose reader thread never waits for a key exchange (see the
    module doc); `send_soon` is there for any thread that holds a lock the reader needs."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        #: what the reader thread said during a key exchange (`_send_user_message`)
        self._kaic_later: collections.deque[object] = collections.deque()

    def _send_user_message(self, data: object) -> None:
        # paramiko's reader thread sends user messages itself (see the module doc): queued
        # during a key exchange, since waiting for it here would wait for this very thread.
        # Any other thread waits, as paramiko's own `_send_user_message` does, and also
        # for the queue to be sent first: an EOF queued there goes before this CLOSE.
        if threading.current_thread() is self:
            self.send_soon(data)
            return
        t: Any = self  # (paramiko's untyped internals)
        start = time.time()
        while True:
            self.clear_to_send.wait(0.1)
            if not t.active:
                return  # paramiko drops it too: the connection is dead
            with self.clear_to_send_lock:
                if self.clear_to_send.is_set() and not self._kaic_later:
                    t._send_message(data)
                    return
                queued = bool(self._kaic_later)
            if time.time() > start + t.clear_to_send_timeout:
                raise paramiko.SSHException("Key-exchange timed out waiting for key negotiation")
            if queued:
                time.sleep(0.002)  # the queue's thread is sending it

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
                try:
                    threading.Thread(
                        target=self._send_later, name="kaic-after-kex", daemon=True
                    ).start()
                except BaseException:
                    self._kaic_later.clear()
                    raise

    def _send_later(self) -> None:
        """Send the queued messages of `send_soon`, in order, once the keys are new. If
        that fails (the connection is gone), what was queued goes with it — the queue is
        emptied, so later messages are not left behind a message that never goes."""
        t: Any = self  # (paramiko's untyped internals)
        later = self._kaic_later
        sent = False
        try:
            while t.active:
                self.clear_to_send.wait(0.1)
                with self.clear_to_send_lock:
                    if not self.clear_to_send.is_set():
                        continue
                    while later:
                        t._send_message(later[0])
                        later.popleft()
                    sent = True
                    return
        except Exception:
            pass  # a dead connection: nothing left to say on it
        finally:
            if not sent:
                with self.clear_to_send_lock:
                    later.clear()
