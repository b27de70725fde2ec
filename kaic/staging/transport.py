"""paramiko's client transport for staging, and a channel's EOF sent in order.

`ClientTransport` keeps the reason a host gives when it disconnects, measures one round
trip to the host (`probe_round_trip`: is it near?), and never stalls in a key exchange
(`kaic.sshkex`); `shutdown_write` sends EOF without paramiko's race with a fast command,
and without waiting for a key exchange while it holds the channel lock the reader thread
needs (that was a 30 s stall too: tests/staging/test_packets.py).
"""

from __future__ import annotations

import contextlib
import threading
import time

import paramiko
from paramiko.common import cMSG_GLOBAL_REQUEST

from kaic.sshkex import KexSafeTransport

#: a host whose round trip (`ClientTransport.probe_round_trip`) is shorter is near: this
#: machine or its LAN, where a transfer waits for the CPU, not for the network (30 ms RTT,
#: a far host, is 6x this; loopback measured 0.3–0.6 ms here)
NEAR_RTT_S = 0.005
#: ... and one whose round trip is this long or longer is plainly far (`near` waits no more)
FAR_RTT_S = 0.02
#: seconds `ClientTransport.near` waits for the probes' answers at most
PROBE_WAIT_S = 0.2


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
    #: seconds one round trip to the host took (`probe_round_trip`), once an answer came
    round_trip: float | None = None
    #: when the probe on its way went (None: none is)
    _probe_sent: float | None = None
    _probes_left = 0
    #: notified at each answer (None: no probe was sent)
    _probing: threading.Condition | None = None

    def probe_round_trip(self, times: int = 2) -> None:
        """Time a request the host answers at once, up to `times` times one after the
        other, and keep the shortest as `round_trip` (nothing waits for the answers): a
        `keepalive@openssh.com` global request, which OpenSSH answers with a failure and
        any server with some reply. A busy moment on either side makes one round trip
        long, hence the second. A host answers global requests in the order they were
        asked (RFC 4254, 4), and kaic asks no other that wants an answer, so the next
        answer is the probe's. (Sent once the host has let the login in, i.e. opened a
        channel: right after the login OpenSSH's first answer waits for its own setup
        (45 ms here, where a round trip is 0.5 ms), and a server that refuses the login
        then closes the connection: a message kaic sent after that makes its kernel
        answer with a reset, which throws away the reason the server had sent.)"""
        self._probes_left = times
        self._probing = threading.Condition()
        self._send_probe()

    def _send_probe(self) -> None:
        m = paramiko.Message()
        m.add_byte(cMSG_GLOBAL_REQUEST)
        m.add_string("keepalive@openssh.com")
        m.add_boolean(True)
        self._probe_sent = time.monotonic()
        # (counted down only now that it is on its way: `_probe_settled` must never see
        # none on its way and none left while this one goes)
        self._probes_left -= 1
        self._send_user_message(m)  # (from the reader thread: queued in a key exchange)

    def near(self, wait_s: float = PROBE_WAIT_S) -> bool:
        """Whether a probe's answer came within `NEAR_RTT_S`, waiting up to `wait_s` while
        that is open: until an answer says near or plainly far (`FAR_RTT_S`), or the last
        one is in. A sync asks once it has planned: by then the answers are in."""
        probing = self._probing
        if probing is None:
            return False
        with probing:
            probing.wait_for(self._probe_settled, timeout=wait_s)
        return self.round_trip is not None and self.round_trip < NEAR_RTT_S

    def _probe_settled(self) -> bool:
        took = self.round_trip
        if took is not None and (took < NEAR_RTT_S or took >= FAR_RTT_S):
            return True
        return self._probe_sent is None and self._probes_left <= 0

    def _probe_answered(self) -> bool:
        """Whether the global-request answer just in is a probe's (then timed, and the
        next probe sent)."""
        sent, self._probe_sent = self._probe_sent, None
        if sent is None:
            return False
        took = time.monotonic() - sent
        self.round_trip = took if self.round_trip is None else min(self.round_trip, took)
        if self._probes_left > 0:
            self._send_probe()
        if self._probing is not None:
            with self._probing:
                self._probing.notify_all()
        return True

    def _parse_request_success(self, m: paramiko.Message) -> None:
        if not self._probe_answered():
            super()._parse_request_success(m)  # type: ignore[misc]

    def _parse_request_failure(self, m: paramiko.Message) -> None:
        if not self._probe_answered():
            super()._parse_request_failure(m)  # type: ignore[misc]

    def _parse_disconnect(self, m: paramiko.Message) -> None:
        start = m.packet.tell()
        with contextlib.suppress(Exception):
            m.get_int()  # the reason code
            text = m.get_text()[:500]
            self.disconnect_reason = "".join(c if c.isprintable() else "?" for c in text)
        m.packet.seek(start)
        super()._parse_disconnect(m)  # type: ignore[misc]
