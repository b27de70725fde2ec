"""`kaic.sshkex.KexSafeTransport`'s queue, on a transport that never connects: what its
reader thread queued during a key exchange goes out first and in order, whoever else is
waiting to send; a queue that cannot be sent is dropped, not left to block what follows."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from kaic.sshkex import KexSafeTransport


@pytest.fixture
def transport(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    ours, theirs = socket.socketpair()
    t: Any = KexSafeTransport(ours)
    t.sent = []
    t.active = True  # (never started: nothing reads or writes the socket)
    monkeypatch.setattr(t, "_send_message", t.sent.append)
    try:
        yield t
    finally:
        t.active = False
        ours.close()
        theirs.close()


def test_a_queued_eof_goes_before_a_close_another_thread_waits_to_send(transport: Any) -> None:
    for _ in range(30):
        transport.sent.clear()
        transport.clear_to_send.clear()  # a key exchange
        transport.send_soon("EOF")  # (as `shutdown_write`, holding the channel lock)
        closing = threading.Thread(target=transport._send_user_message, args=("CLOSE",))
        closing.start()
        time.sleep(0.01)
        assert transport.sent == []  # nothing during the key exchange
        transport.clear_to_send.set()  # the new keys are in
        closing.join(5)
        assert transport.sent == ["EOF", "CLOSE"]


def test_a_queue_that_cannot_be_sent_is_dropped(transport: Any) -> None:
    def broken(data: object) -> None:
        raise ValueError("a cipher that fails")

    transport._send_message = broken
    transport.clear_to_send.clear()
    transport.send_soon("EOF")
    transport.send_soon("CLOSE")
    transport.clear_to_send.set()
    deadline = time.monotonic() + 5
    while transport._kaic_later and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not transport._kaic_later
    transport._send_message = transport.sent.append
    transport.send_soon("later")  # not stuck behind what was dropped
    assert transport.sent == ["later"]
