"""paramiko's packet layer with fewer system calls, copies and Python steps per SSH packet.

A transfer is ~32 KiB SSH packets both ways (OpenSSH's sshd takes no larger channel packets
and sends no larger ones from sftp-server), plus the host's WINDOW_ADJUSTs and SFTP
replies: per 256 MiB pushed, ~8,200 data packets out and ~5,600 small ones in. kaic is
bound by its own CPU there, and most of it went to paramiko's per-packet path:

- Reading: `Packetizer.read_all` takes each packet with at least two `recv` calls (its
  length, then the rest), joins the pieces with `bytes +=`, and the AES-GCM packet is
  copied five times on its way to a `Message`. Every call lets go of the GIL, and the
  transport's reader thread — the one that hands out the send window and the SFTP replies
  — then waits to get it back behind the worker threads. `BufferedPacketizer` receives
  whatever the socket holds (a push's dozens of small messages, a pull's several data
  packets; at least `RECV_BYTES` of room) into a buffer of its own (a ring, received into
  in place) and opens each packet from there with `decrypt_into`: one `recv` per many
  packets (a 256 MiB push: 8,646 -> 1,824), one copy per packet.
- A pull's data: 32,768 CHANNEL_DATA packets per GiB, each a `Message`, a turn of the
  transport's loop, `Channel._feed` and two more copies in paramiko. A channel given a
  sink (`sink_channel`: an SFTP pipe's reply buffer) has its data fed to the sink straight
  from the opened packet, and the next packet is read at once. A 1 GiB pull from sshd on
  loopback: 0.82-1.18 s of user CPU before, 0.63-0.90 s after (docs/benchmarks.md).
- Sending: `Channel.sendall` builds a `Message` per packet, which paramiko then copies into
  a packet, pads with `os.urandom` (a system call per packet), slices, encrypts and joins
  again. `channel_sendall` hands the packetizer the caller's buffer (`ChannelData`) and
  `BufferedPacketizer` seals it into one buffer with `encrypt_into` (padding with zeros,
  which AES-GCM encrypts and authenticates like the rest — paramiko pads CTR packets the
  same way). Measured alone (one channel, 256 MiB to `cat > /dev/null` on the host): half
  the client's CPU of `Channel.sendall`.
- It skips the handshake timer's cancel (a lock and an event) that paramiko repeats after
  every packet once the first handshake is done.
- Waiting for the send window: sshd opens it ~96 KiB at a time, and paramiko wakes the
  waiting sender for each step. `WindowCondition` (`patient_sender`, on the pipes' channels)
  wakes it once 256 KiB are open.

Anything else — another cipher, compression, packet dumps, messages other than
CHANNEL_DATA — goes paramiko's own way. Timeouts, keepalives, rekeying (a rekey is asked
for only while no byte of the next packet has been taken from the buffer; the buffer keeps
what it read, so nothing is lost either way), sequence numbers and EOF handling are
paramiko's, on paramiko's own state (its name-mangled `_Packetizer__…` attributes).
"""

from __future__ import annotations

import errno
import struct
import threading
from typing import Any, Protocol

import paramiko
from cryptography.exceptions import InvalidTag
from paramiko.common import (
    MSG_CHANNEL_DATA,
    MSG_IGNORE,
    cMSG_CHANNEL_WINDOW_ADJUST,
    xffffffff,
)
from paramiko.message import Message
from paramiko.packet import NeedRekeyException, Packetizer, first_arg
from paramiko.ssh_exception import SSHException

#: the least room a `recv` is given (it takes whatever the ring has room for after what
#: is buffered: up to `_RING` less that)
RECV_BYTES = 256 * 1024
#: the largest packet length accepted (OpenSSH sends at most 256 KiB): a corrupt length
#: fails the connection instead of asking for a buffer of up to 4 GiB
_MAX_PACKET = 1 << 20
#: the receive buffer: the largest packet, and room for a whole `recv` after it
_RING = _MAX_PACKET + 2 * RECV_BYTES
#: CHANNEL_DATA's header in a packet's plaintext: padding length, type, channel, length
_DATA_IN = struct.Struct(">BBII")


class Sink(Protocol):
    """Where a channel's data goes straight from the packet it came in (`sink_channel`).
    `feed` is handed a view of a buffer the next packet is opened into: it copies what it
    keeps."""

    def feed(self, data: memoryview) -> None: ...


class BufferedPacketizer(Packetizer):
    """`Packetizer` reading the socket in large pieces and sealing / opening AES-GCM
    packets in place (see the module doc)."""

    def __init__(self, sock: Any):
        super().__init__(sock)
        self._kaic_sock = sock
        # What was received and not yet taken: `_ring[_head:_tail]` (the socket's bytes
        # are received into the ring itself, not copied there).
        self._ring = bytearray(_RING)
        self._ring_view = memoryview(self._ring)
        self._head = 0
        self._tail = 0
        #: a packet's plaintext is opened here (the largest packet's room, reused)
        self._plain = memoryview(bytearray(_MAX_PACKET))
        #: channels (by our id) whose CHANNEL_DATA is fed to a `Sink` as it is opened,
        #: without a `Message` or a trip through the transport's loop (`sink_channel`)
        self.sinks: dict[int, Sink] = {}

    def _fill(self, n: int, check_rekey: bool = False) -> int:
        """Where the buffer's first `n` bytes start, once it holds them (paramiko's
        `read_all` loop)."""
        p: Any = self  # paramiko's private state (name-mangled: `_Packetizer__…`)
        remainder = p._Packetizer__remainder  # what reading the banner took too much
        if remainder:
            self._compact(bytes(remainder))
            p._Packetizer__remainder = b""
        view = self._ring_view
        if self._head == self._tail:
            self._head = self._tail = 0
        while self._tail - self._head < n:
            if _RING - self._tail < RECV_BYTES or _RING - self._head < n:
                self._compact()
            if self.handshake_timed_out():
                raise EOFError()
            try:
                got = self._kaic_sock.recv_into(view[self._tail :], _RING - self._tail)
            except TimeoutError:
                got = -1
            except OSError as exc:
                if first_arg(exc) != errno.EAGAIN:
                    if p._Packetizer__closed:
                        raise EOFError() from exc
                    raise
                got = -1
            if got == 0:
                raise EOFError()
            if got > 0:
                self._tail += got
                continue
            # a timeout: what paramiko does between packets
            if p._Packetizer__closed:
                raise EOFError()
            if check_rekey and self._head == self._tail and p._Packetizer__need_rekey:
                raise NeedRekeyException()
            p._check_keepalive()
        return self._head

    def _compact(self, before: bytes = b"") -> None:
        """Move what is left to the front of the ring (after `before`)."""
        left = before + bytes(self._ring_view[self._head : self._tail])
        if len(left) > _RING - RECV_BYTES:
            raise SSHException("receive buffer overrun")
        self._ring[: len(left)] = left
        self._head, self._tail = 0, len(left)

    def read_all(self, n: int, check_rekey: bool = False) -> bytes:
        head = self._fill(n, check_rekey)
        self._head = head + n
        return bytes(self._ring_view[head : head + n])

    def read_message(self) -> tuple[int, Message]:
        p: Any = self  # paramiko's private state (name-mangled: `_Packetizer__…`)
        if (
            not p._Packetizer__aead_in
            or p._Packetizer__compress_engine_in is not None
            or p._Packetizer__dump_packets
        ):
            return super().read_message()
        return self._read_sealed()

    def _read_sealed(self) -> tuple[int, Message]:
        """The next packet under AES-GCM, opened straight from the receive buffer. Channel
        data for a sink goes to it there and then, and the next packet is read (back to
        the transport's loop only when a rekey is due: as an IGNORE message)."""
        p: Any = self  # paramiko's private state (name-mangled: `_Packetizer__…`)
        view = self._ring_view
        while True:
            head = self._fill(p._Packetizer__block_size_in, check_rekey=True)
            size = int.from_bytes(view[head : head + 4], "big")
            if not 5 <= size <= _MAX_PACKET:
                raise SSHException(f"invalid packet length {size}")
            total = 4 + size + p._Packetizer__mac_size_in
            head = self._fill(total)
            plain = self._plain[:size]
            iv = p._Packetizer__iv_in
            try:
                p._Packetizer__block_engine_in.decrypt_into(
                    iv, view[head + 4 : head + total], bytes(view[head : head + 4]), plain
                )
            except InvalidTag:
                raise SSHException("Mismatched MAC") from None
            self._head = head + total
            p._Packetizer__iv_in = iv[:4] + (int.from_bytes(iv[4:], "big") + 1).to_bytes(8, "big")
            seqno = p._Packetizer__sequence_number_in
            p._Packetizer__sequence_number_in = (seqno + 1) & xffffffff
            self._count_received(total)
            padding, cmd = plain[0], plain[1]
            end = size - padding
            if end < 2:
                raise SSHException("invalid packet padding")
            if cmd == MSG_CHANNEL_DATA and end >= _DATA_IN.size and self.sinks:
                _, _, chanid, n = _DATA_IN.unpack_from(plain)
                sink = self.sinks.get(chanid)
                if sink is not None:
                    if _DATA_IN.size + n > end:
                        raise SSHException("invalid channel data length")
                    sink.feed(plain[_DATA_IN.size : _DATA_IN.size + n])
                    if p._Packetizer__need_rekey:
                        return MSG_IGNORE, Message()
                    continue
            msg = Message(bytes(plain[2:end]))
            msg.seqno = seqno
            return cmd, msg

    def _count_received(self, raw: int) -> None:
        """paramiko's rekey accounting of a received packet (`Packetizer.read_message`)."""
        p: Any = self  # paramiko's private state (name-mangled: `_Packetizer__…`)
        p._Packetizer__received_bytes += raw
        p._Packetizer__received_packets += 1
        if p._Packetizer__need_rekey:
            p._Packetizer__received_bytes_overflow += raw
            p._Packetizer__received_packets_overflow += 1
            if (
                p._Packetizer__received_packets_overflow >= p.REKEY_PACKETS_OVERFLOW_MAX
                or p._Packetizer__received_bytes_overflow >= p.REKEY_BYTES_OVERFLOW_MAX
            ):
                raise SSHException("Remote transport is ignoring rekey requests")
        elif (
            p._Packetizer__received_packets >= p.REKEY_PACKETS
            or p._Packetizer__received_bytes >= p.REKEY_BYTES
        ):
            p._Packetizer__received_bytes_overflow = 0
            p._Packetizer__received_packets_overflow = 0
            p._trigger_rekey()

    def send_message(self, data: Any) -> None:
        p: Any = self  # paramiko's private state (name-mangled: `_Packetizer__…`)
        if (
            type(data) is not ChannelData
            or not p._Packetizer__aead_out
            or p._Packetizer__compress_engine_out is not None
            or p._Packetizer__dump_packets
        ):
            super().send_message(data)
            return
        with p._Packetizer__write_lock:
            self._send_sealed(data)

    def _send_sealed(self, data: ChannelData) -> None:
        """One CHANNEL_DATA packet under AES-GCM, built and sealed in one buffer:
        length (the associated data), padding length, the message, zero padding (it is
        encrypted and authenticated like the rest, as paramiko pads CTR packets), tag."""
        p: Any = self  # paramiko's private state (name-mangled: `_Packetizer__…`)
        body = data.view
        size = len(body) + _DATA_HEAD
        block = p._Packetizer__block_size_out
        padding = 3 + block - ((size + 4) % block)
        sealed = 1 + size + padding
        plain = bytearray(sealed)
        plain[0] = padding
        _DATA.pack_into(plain, 1, 94, data.channel, len(body))  # MSG_CHANNEL_DATA
        plain[1 + _DATA_HEAD : 1 + size] = body
        out = bytearray(4 + sealed + 16)
        struct.pack_into(">I", out, 0, sealed)
        iv = p._Packetizer__iv_out
        p._Packetizer__block_engine_out.encrypt_into(iv, plain, out[:4], memoryview(out)[4:])
        p._Packetizer__iv_out = iv[:4] + (int.from_bytes(iv[4:], "big") + 1).to_bytes(8, "big")
        p._Packetizer__sequence_number_out = (p._Packetizer__sequence_number_out + 1) & (xffffffff)
        self.write_all(memoryview(out))
        p._Packetizer__sent_bytes += len(out)
        p._Packetizer__sent_packets += 1
        if (
            p._Packetizer__sent_packets >= p.REKEY_PACKETS
            or p._Packetizer__sent_bytes >= p.REKEY_BYTES
        ) and not p._Packetizer__need_rekey:
            p._Packetizer__received_bytes_overflow = 0
            p._Packetizer__received_packets_overflow = 0
            p._trigger_rekey()

    def complete_handshake(self) -> None:
        p: Any = self  # paramiko's private state (name-mangled: `_Packetizer__…`)
        # paramiko calls this after every packet; only the first call has work to do (its
        # timer is never started again: `start_handshake` keeps the first one)
        if not p._Packetizer__handshake_complete:
            super().complete_handshake()


_DATA = struct.Struct(">BII")
_DATA_HEAD = _DATA.size


class ChannelData:
    """A CHANNEL_DATA message not yet serialised: `BufferedPacketizer` seals it straight
    from `view`; any other packetizer gets its bytes (`asbytes`)."""

    __slots__ = ("channel", "view")

    def __init__(self, channel: int, view: memoryview):
        self.channel = channel
        self.view = view

    def asbytes(self) -> bytes:
        return _DATA.pack(94, self.channel, len(self.view)) + bytes(self.view)


def channel_sendall(channel: paramiko.Channel, data: bytes | bytearray | memoryview) -> None:
    """`channel.sendall(data)` without paramiko's `Message` per packet: each piece the send
    window allows goes to the packetizer as `ChannelData` (sealed from the caller's buffer
    by `BufferedPacketizer`). Raises like paramiko: OSError once the channel is closed,
    TimeoutError when the window stays shut for the channel's timeout."""
    view = memoryview(data).cast("B")
    chan: Any = channel  # (paramiko's own `Channel._send`, less the `Message`)
    transport = chan.transport
    while view:
        with chan.lock:
            if chan.closed:
                raise OSError("Socket is closed")
            size = chan._wait_for_send_window(len(view))
        if size == 0:
            raise OSError("Socket is closed")
        transport._send_user_message(ChannelData(chan.remote_chanid, view[:size]))
        view = view[size:]


#: a sender waiting for the send window is woken once this much is open (or a quarter of
#: the most the host ever opened, for a host with a small window), not for each adjust
WINDOW_WAKE = 256 * 1024


class WindowCondition(threading.Condition):
    """A channel's `out_buffer_cv` that wakes a sender waiting for window only once the
    window holds `WINDOW_WAKE` bytes (or the channel closed). sshd opens the window in
    ~96 KiB steps (a WINDOW_ADJUST per ~3 packets consumed): waking the sender for each is
    a thread switch and a trip for the GIL per 3 packets, paid by the transport's reader
    thread. The bar is a quarter of the largest window the host ever granted, so a host
    with a small window still wakes its sender (hosts do not shrink their windows)."""

    def __init__(self, channel: Any):
        super().__init__(channel.lock)
        self._channel = channel
        self._most = channel.out_window_size

    def notify_all(self) -> None:
        chan = self._channel
        window = chan.out_window_size
        self._most = max(self._most, window)
        if chan.closed or window >= min(WINDOW_WAKE, self._most // 4) or window == self._most:
            super().notify_all()


def patient_sender(channel: paramiko.Channel) -> None:
    """Give `channel` a `WindowCondition` (before anything waits on the old one)."""
    chan: Any = channel
    chan.out_buffer_cv = WindowCondition(chan)


def sink_channel(channel: paramiko.Channel, sink: Sink) -> None:
    """Feed `channel`'s data to `sink` from the packet it arrives in, where the connection
    has a `BufferedPacketizer` (under AES-GCM), instead of paramiko's way: a `Message`, the
    transport's loop, `Channel._feed` and a copy. Whoever reads the sink acknowledges what
    it took (`consumed`), as `Channel.recv` does. Undone by `unsink_channel`."""
    packetizer = channel.get_transport().packetizer
    if isinstance(packetizer, BufferedPacketizer):
        packetizer.sinks[channel.get_id()] = sink


def unsink_channel(channel: paramiko.Channel) -> None:
    packetizer = channel.get_transport().packetizer
    if isinstance(packetizer, BufferedPacketizer):
        packetizer.sinks.pop(channel.get_id(), None)


def consumed(channel: paramiko.Channel, n: int) -> None:
    """`n` bytes of `channel`'s data were taken from its buffer: open the host's send window
    again once enough were (paramiko's `Channel.recv`, less the read)."""
    chan: Any = channel
    ack = chan._check_add_window(n)
    if ack > 0:
        m = Message()
        m.add_byte(cMSG_CHANNEL_WINDOW_ADJUST)
        m.add_int(chan.remote_chanid)
        m.add_int(ack)
        chan.transport._send_user_message(m)
