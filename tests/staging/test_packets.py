"""kaic's packet layer (`kaic.staging.packets`): AES-GCM packets sealed and opened in place
must be what paramiko writes and reads, byte for byte, however the socket splits them; a
real transfer must survive rekeying in the middle, both ways; and the pipe's channels wake
their threads in large steps, never leaving one asleep with what it waits for there."""

from __future__ import annotations

import collections
import hashlib
import os
import random
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paramiko
import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from paramiko.buffered_pipe import PipeTimeout
from paramiko.packet import Packetizer

from kaic.staging import connect, packets
from kaic.staging.connect import open_sftp
from kaic.staging.packets import BufferedPacketizer, ChannelData, WindowCondition
from kaic.staging.reply_buffer import ReplyBuffer
from kaic.staging.transfer import SyncOptions, pull, push
from tests.staging.conftest import SshEnv
from tests.staging.faults import LatencyProxy, deferred_sends

KEY, IV = bytes(range(16)), bytes(range(100, 112))


def _aead(packetizer: Any, *, out: bool) -> Any:
    """Switch `packetizer` to aes128-gcm one way, as paramiko's transport does after kex."""
    if out:
        packetizer.set_outbound_cipher(AESGCM(KEY), 16, None, 16, None, aead=True, iv_out=IV)
    else:
        packetizer.set_inbound_cipher(AESGCM(KEY), 16, None, 16, None, aead=True, iv_in=IV)
    return packetizer


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    a, b = socket.socketpair()
    b.settimeout(5)
    yield a, b
    a.close()
    b.close()


def _payloads() -> list[bytes]:
    sizes = [0, 1, 15, 16, 17, 4096, 32 * 1024 - 64, 64 * 1024 + 7]
    return [os.urandom(n) for n in sizes]


def _data_message(channel: int, data: bytes) -> paramiko.Message:
    m = paramiko.Message()
    m.add_byte(bytes([94]))
    m.add_int(channel)
    m.add_string(data)
    return m


def test_sealed_channel_data_reads_as_paramikos(pair: tuple[socket.socket, socket.socket]) -> None:
    """ChannelData sealed by BufferedPacketizer is what paramiko's Packetizer reads, and
    the same bytes paramiko itself would have sent (zero padding aside, which the receiver
    never sees)."""
    a, b = pair
    sender = _aead(BufferedPacketizer(a), out=True)
    receiver = _aead(Packetizer(b), out=False)
    for data in _payloads():
        sender.send_message(ChannelData(7, memoryview(data)))
        kind, msg = receiver.read_message()
        assert kind == 94
        assert msg.get_int() == 7 and msg.get_binary() == data
    # Anything but channel data goes paramiko's way, and still reads back.
    sender.send_message(_data_message(3, b"plain"))
    kind, msg = receiver.read_message()
    assert (kind, msg.get_int(), msg.get_binary()) == (94, 3, b"plain")


def test_channel_data_without_aes_gcm_goes_paramikos_way(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    """Before the key exchange (or with another cipher) ChannelData is sent as paramiko
    sends any message, and read back the same."""
    a, b = pair
    sender, receiver = BufferedPacketizer(a), BufferedPacketizer(b)
    for data in _payloads():
        sender.send_message(ChannelData(9, memoryview(data)))
        kind, msg = receiver.read_message()
        assert (kind, msg.get_int(), msg.get_binary()) == (94, 9, data)


def test_opens_paramikos_packets_however_they_arrive(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    """Packets paramiko sealed are opened by BufferedPacketizer whether they come many in
    one read or one byte at a time."""
    a, b = pair
    sent: list[bytes] = []
    wire = _CapturingSocket()
    sender = _aead(Packetizer(wire), out=True)  # type: ignore[arg-type]
    for data in _payloads():
        sender.send_message(_data_message(5, data))
        sent.append(data)
    stream = bytes(wire.data)
    receiver = _aead(BufferedPacketizer(b), out=False)

    def feed() -> None:
        half = len(stream) // 2
        a.sendall(stream[:half])  # many packets at once
        for i in range(half, len(stream)):  # then a byte at a time
            a.send(stream[i : i + 1])

    writer = threading.Thread(target=feed)
    writer.start()
    try:
        for data in sent:
            kind, msg = receiver.read_message()
            assert kind == 94 and msg.get_int() == 5 and msg.get_binary() == data
    finally:
        writer.join()


def test_tampered_packet_fails_the_connection(pair: tuple[socket.socket, socket.socket]) -> None:
    a, b = pair
    wire = _CapturingSocket()
    _aead(Packetizer(wire), out=True).send_message(_data_message(1, b"secret data"))  # type: ignore[arg-type]
    stream = bytearray(wire.data)
    stream[12] ^= 1
    a.sendall(stream)
    with pytest.raises(paramiko.SSHException, match="MAC"):
        _aead(BufferedPacketizer(b), out=False).read_message()


class _ListSink:
    def __init__(self) -> None:
        self.data = bytearray()

    def feed(self, data: memoryview) -> None:
        self.data += data


def test_a_sunk_channels_data_goes_to_its_sink_and_the_rest_paramikos_way(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    """Data for a channel with a sink goes to the sink, in order, and is never returned;
    other channels' data and other messages come back from `read_message` as paramiko's
    would, in order — however the socket splits the packets, and past the receive
    buffer's end many times over."""
    a, b = pair
    rng = random.Random(7)
    wire = _CapturingSocket()
    sender = _aead(Packetizer(wire), out=True)  # type: ignore[arg-type]
    sunk, others = bytearray(), []
    for i in range(400):
        data = os.urandom(rng.choice([0, 1, 100, 16 << 10, 32 << 10, 200 << 10]))
        if i % 7 == 3:
            sender.send_message(_data_message(6, data))  # another channel's
            others.append((94, 6, data))
        elif i % 11 == 5:
            m = paramiko.Message()
            m.add_byte(bytes([96]))  # CHANNEL_EOF
            m.add_int(5)
            sender.send_message(m)
            others.append((96, 5, b""))
        else:
            sender.send_message(_data_message(5, data))
            sunk += data
    stream = bytes(wire.data)
    assert len(stream) > 4 * packets._RING  # (the ring is wrapped many times)
    receiver = _aead(BufferedPacketizer(b), out=False)
    sink = _ListSink()
    receiver.sinks[5] = sink

    def feed() -> None:
        pos = 0
        while pos < len(stream):
            n = rng.choice([1, 7, 4096, 100_000, 1 << 20])
            a.sendall(stream[pos : pos + n])
            pos += n
        a.shutdown(socket.SHUT_WR)

    writer = threading.Thread(target=feed, daemon=True)
    writer.start()
    for kind, channel, data in others:
        got_kind, msg = receiver.read_message()
        assert got_kind == kind and msg.get_int() == channel
        if kind == 94:
            assert msg.get_binary() == data
    # (what is sunk after the last other message is read on the way to the end: nothing
    # to return)
    with pytest.raises(EOFError):
        receiver.read_message()
    writer.join(10)
    assert sink.data == sunk


def test_a_due_rekey_takes_the_reader_back_to_the_transport(
    pair: tuple[socket.socket, socket.socket], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Reading sunk data does not hold the transport's loop away from a rekey that fell
    due: the packet that made it due returns as an IGNORE (the loop then starts the key
    exchange), its data already sunk."""
    monkeypatch.setattr(BufferedPacketizer, "REKEY_BYTES", 100 << 10)
    a, b = pair
    wire = _CapturingSocket()
    sender = _aead(Packetizer(wire), out=True)  # type: ignore[arg-type]
    pieces = [os.urandom(30 << 10) for _ in range(5)]
    for data in pieces:
        sender.send_message(_data_message(5, data))
    a.sendall(wire.data)
    receiver = _aead(BufferedPacketizer(b), out=False)
    sink = _ListSink()
    receiver.sinks[5] = sink
    kind, _msg = receiver.read_message()
    assert kind == 2  # MSG_IGNORE, after the 4th packet passed 100 KiB
    assert receiver.need_rekey()
    assert sink.data == b"".join(pieces[:4])


class _CapturingSocket:
    """Enough of a socket for Packetizer.write_all: keeps what was sent."""

    def __init__(self) -> None:
        self.data = bytearray()

    def send(self, data: bytes) -> int:
        self.data += data
        return len(data)

    def settimeout(self, _t: float) -> None:
        pass


def test_transfer_rekeys_midway_both_ways(
    ssh_env: SshEnv,
    remote_dir: tuple[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With a rekey every 1 MiB, a striped push and pull (sealed sends, buffered reads)
    rekey several times mid-stream and still arrive byte-identical and verified. (How many
    times depends on the load: bytes that arrive during a key exchange count for none.)"""
    rekeys: list[int] = []
    trigger = vars(Packetizer)["_trigger_rekey"]
    monkeypatch.setattr(BufferedPacketizer, "REKEY_BYTES", 1 << 20)

    def counted(self: Packetizer) -> None:
        rekeys.append(1)
        trigger(self)

    monkeypatch.setattr(BufferedPacketizer, "_trigger_rekey", counted)
    name, view = remote_dir
    src = tmp_path / "big.bin"
    src.write_bytes(os.urandom(24 << 20))
    options = SyncOptions(chunk=256 << 10, segment=4 << 20)
    result = push(ssh_env.target(), [str(src)], f"{name}/", options)
    assert not result.failures and result.verified and result.files_transferred == 1
    pushed = len(rekeys)
    assert pushed >= 3, pushed
    back = tmp_path / "back"
    result = pull(ssh_env.target(), [f"{name}/big.bin"], f"{back}/", options)
    assert not result.failures and result.verified and result.files_transferred == 1
    assert len(rekeys) - pushed >= 3, (pushed, len(rekeys))
    digest = hashlib.sha256(src.read_bytes()).hexdigest()
    assert hashlib.sha256((view / "big.bin").read_bytes()).hexdigest() == digest
    assert hashlib.sha256((back / "big.bin").read_bytes()).hexdigest() == digest


class _Chan:
    """What WindowCondition reads of a paramiko Channel."""

    def __init__(self, window: int) -> None:
        self.lock = threading.Lock()
        self.out_window_size = window
        self.closed = False


def _counting(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls: list[int] = []
    real = threading.Condition.notify_all

    def notify_all(self: threading.Condition) -> None:
        calls.append(1)
        real(self)

    monkeypatch.setattr(threading.Condition, "notify_all", notify_all)
    return calls


def test_window_wakes_the_sender_in_large_steps(monkeypatch: pytest.MonkeyPatch) -> None:
    """sshd's ~96 KiB adjusts wake a sender only once 256 KiB are open; a closed channel
    always wakes it; a host whose window is small still wakes it (a quarter of its most)."""
    calls = _counting(monkeypatch)
    chan = _Chan(2 << 20)
    cv = WindowCondition(chan)
    chan.out_window_size = 0  # the sender used it all
    woken = []
    for _ in range(6):
        chan.out_window_size += 96 << 10
        with cv:
            cv.notify_all()
        woken.append(len(calls))
    assert woken == [0, 0, 1, 2, 3, 4]  # from 288 KiB on
    chan.out_window_size = 0
    chan.closed = True
    with cv:
        cv.notify_all()
    assert len(calls) == 5

    calls.clear()
    small = _Chan(64 << 10)
    cv = WindowCondition(small)
    small.out_window_size = 8 << 10
    with cv:
        cv.notify_all()
    assert not calls
    small.out_window_size = 16 << 10  # a quarter of the 64 KiB it granted
    with cv:
        cv.notify_all()
    assert len(calls) == 1


def test_reply_buffer_wakes_the_reader_once_a_reply_is_whole(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls = _counting(monkeypatch)
    pipe = ReplyBuffer()
    pipe.wanted = 100 << 10
    for _ in range(3):
        pipe.feed(b"x" * (32 << 10))
    assert not calls  # 96 KiB: not yet
    pipe.feed(b"x" * (32 << 10))
    assert len(calls) == 1
    assert pipe.read(1 << 30) == b"x" * (128 << 10)
    pipe.close()
    assert len(calls) == 2  # closing always wakes it


def _sftp_message(kind: int, body: bytes) -> bytes:
    return (len(body) + 1).to_bytes(4, "big") + bytes([kind]) + body


def test_reply_buffer_gives_whole_messages_only() -> None:
    pipe = ReplyBuffer()
    pipe.feed(_sftp_message(102, b"h1") + _sftp_message(102, b"h2") + b"\0\0")
    assert pipe.take(0.01) == ([(102, b"h1"), (102, b"h2")], 14)  # all the whole ones
    pipe.feed(b"\0\x02\x65\0")
    assert pipe.take(0.01) == ([(101, b"\0")], 6)
    first, second = _sftp_message(103, os.urandom(200 << 10)), _sftp_message(101, b"ok")
    stream = first + second
    for i in range(0, len(stream) - 3, 32 << 10):
        pipe.feed(memoryview(stream)[i : min(i + (32 << 10), len(stream) - 3)])
    assert pipe.take(0.01) == ([(103, first[5:])], len(first))
    with pytest.raises(PipeTimeout):  # the second is 3 bytes short
        pipe.take(0.05)
    assert pipe.wanted == len(second)  # (it waits for the whole message)
    pipe.feed(stream[-3:])
    assert pipe.take(0.01) == ([(101, b"ok")], len(second))
    pipe.feed(second + second[:6])  # one and a half: the whole one
    assert pipe.take(0.01) == ([(101, b"ok")], len(second))
    pipe.close()
    assert pipe.take(1) is None  # closed with half a message: none will come
    empty = ReplyBuffer()
    empty.feed(b"\0\0\0\0")
    with pytest.raises(ValueError, match="without a type"):
        empty.take(0.01)


def test_reply_buffer_wakes_a_waiting_taker(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = _counting(monkeypatch)
    pipe = ReplyBuffer()
    message = _sftp_message(103, os.urandom(100 << 10))
    got: list[object] = []
    taker = threading.Thread(target=lambda: got.append(pipe.take(10)))
    taker.start()
    while pipe.wanted != 4:  # (waiting for a length)
        threading.Event().wait(0.01)
    pipe.feed(message[:20])
    while pipe.wanted != len(message):
        threading.Event().wait(0.01)
    before = len(calls)
    pipe.feed(message[20:1000])
    assert len(calls) == before  # not whole yet: not woken
    pipe.feed(message[1000:])
    taker.join(10)
    assert got == [([(103, message[5:])], len(message))]


def test_a_channel_the_host_closes_during_a_rekey_does_not_stall_the_connection(
    ssh_env: SshEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The host closes an exec channel just before our KEXINIT reaches it: paramiko's reader
    thread reads that EOF and CLOSE inside the key exchange and must answer them. Answered in
    place they waited for the key exchange only that thread could finish (30 s, then the
    connection died: "Key-exchange timed out"); now both answers go out once the keys are
    new, in order (a CLOSE before the EOF makes sshd drop the connection)."""
    deferred = deferred_sends(monkeypatch)
    with LatencyProxy(ssh_env.sshd.port, rtt_ms=0) as proxy:
        conn = open_sftp(ssh_env.target(port=proxy.port))
        try:
            transport: Any = conn.transport
            transport.clear_to_send_timeout = 8.0  # a stall fails in 8 s, not 30
            channel = transport.open_session()
            # 0.8 s each way: the exec's reply comes back when the host starts `sleep`, so
            # the host closes the channel ~0.8 s later — just as our KEXINIT, sent now,
            # reaches it; its CLOSE and our KEXINIT cross (either may be 0.8 s late)
            proxy.set_rtt(1600)
            channel.exec_command("sleep 0.8")
            transport.renegotiate_keys()
            assert channel.recv_exit_status() == 0
            assert transport.is_active()
            proxy.set_rtt(0)
            assert conn.sftp.listdir(".") is not None  # the connection still works
        finally:
            conn.close()
    assert "client" in deferred, "the host's CLOSE did not arrive during the key exchange"
    assert transport._kaic_later == collections.deque()


def test_a_transfer_under_another_cipher_goes_paramikos_way(
    ssh_env: SshEnv,
    remote_dir: tuple[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A host that agrees on a cipher other than AES-GCM (aes128-ctr here) gets paramiko's
    own packets: the pipes' replies come through `Channel._feed`, not a sink, and small
    files and a striped file still go both ways intact and verified."""
    monkeypatch.setattr(connect, "PREFERRED_CIPHERS", ("aes128-ctr",))
    probe = open_sftp(ssh_env.target())
    try:
        assert probe.transport.remote_cipher == "aes128-ctr"
        packetizer: Any = probe.transport.packetizer
        assert isinstance(packetizer, BufferedPacketizer)
    finally:
        probe.close()
    name, view = remote_dir
    src = tmp_path / "src"
    (src / "small").mkdir(parents=True)
    for i in range(40):
        (src / "small" / f"f{i}").write_bytes(os.urandom(5000 + i))
    (src / "big.bin").write_bytes(os.urandom(9 << 20))
    options = SyncOptions(chunk=1 << 20, segment=4 << 20)
    result = push(ssh_env.target(), [f"{src}/"], f"{name}/", options)
    assert not result.failures and result.verified and result.files_transferred == 41
    back = tmp_path / "back"
    result = pull(ssh_env.target(), [f"{name}/"], f"{back}/", options)
    assert not result.failures and result.verified and result.files_transferred == 41
    for path in src.rglob("*"):
        if path.is_file():
            rel = path.relative_to(src)
            assert (back / rel).read_bytes() == path.read_bytes() == (view / rel).read_bytes()
