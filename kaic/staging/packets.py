"""paramiko's packet layer with fewer system calls, copies and Python steps per SSH packet.

A transfer is ~32 KiB SSH packets both ways (OpenSSH's sshd takes no larger channel packets
and sends no larger ones from sftp-server), plus the host's WINDOW_ADJUSTs and SFTP
replies: per 256 MiB pushed, ~8,200 data packets out and ~5,600 small ones in. kaic is
bound by its own CPU there, and most of it went to paramiko's per-packet path:

- Reading: `Packetizer.read_all` takes each packet with at least two `recv` calls (its
  length, then the rest), joins the pieces with `bytes +=`, and the AES-GCM packet is
  copied five times on its way to a `Message`. Every call lets go of the GIL, and the
  transport's reader thread — the one that hands out the send window and the SFTP replies
  — then waits to get it back behind the worker threads. `BufferedPacketizer` reads
  whatever the socket holds (up to `RECV_BYTES`: a push's dozens of small messages, a
  pull's several data packets) into one buffer and opens each packet from there with
  `decrypt_into`: one `recv` per many packets (a 256 MiB push: 8,646 -> 1,824), one copy
  per packet.
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
from typing import Any

import paramiko
from cryptography.exceptions import InvalidTag
from paramiko.common import xffffffff
from paramiko.message import Message
from paramiko.packet import NeedRekeyException, Packetizer, first_arg
from paramiko.ssh_exception import SSHException

#: the most one `recv` takes from the socket
RECV_BYTES = 256 * 1024
#: the largest packet length accepted (OpenSSH sends at most 256 KiB): a corrupt length
#: fails the connection instead of asking for a buffer of up to 4 GiB
_MAX_PACKET = 1 << 20


class BufferedPacketizer(Packetizer):
    """`Packetizer` reading the socket in large pieces and sealing / opening AES-GCM
    packets in place (see the module doc)."""

    def __init__(self, sock: Any):
        super().__init__(sock)
        self._kaic_sock = sock
        self._kaic_in = bytearray()
        self._kaic_chunk = bytearray(RECV_BYTES)
        self._kaic_view = memoryview(self._kaic_chunk)

    def _fill(self, n: int, check_rekey: bool = False) -> bytearray:
        """The buffer, once it holds at least `n` bytes (paramiko's `read_all` loop)."""
        p: Any = self  # paramiko's private state (name-mangled: `_Packetizer__…`)
        buf = self._kaic_in
        remainder = p._Packetizer__remainder  # what reading the banner took too much
        if remainder:
            buf[:0] = remainder
            p._Packetizer__remainder = b""
        while len(buf) < n:
            if self.handshake_timed_out():
                raise EOFError()
            try:
                got = self._kaic_sock.recv_into(self._kaic_view, RECV_BYTES)
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
                buf += self._kaic_view[:got]
                continue
            # a timeout: what paramiko does between packets
            if p._Packetizer__closed:
                raise EOFError()
            if check_rekey and not buf and p._Packetizer__need_rekey:
                raise NeedRekeyException()
            p._check_keepalive()
        return buf

    def read_all(self, n: int, check_rekey: bool = False) -> bytes:
        buf = self._fill(n, check_rekey)
        with memoryview(buf) as view:
            out = bytes(view[:n])
        del buf[:n]
        return out

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
        """One packet under AES-GCM, opened straight from the receive buffer into one new
        buffer (paramiko copies each packet five times on its way)."""
        p: Any = self  # paramiko's private state (name-mangled: `_Packetizer__…`)
        buf = self._fill(p._Packetizer__block_size_in, check_rekey=True)
        size = int.from_bytes(buf[:4], "big")
        if not 5 <= size <= _MAX_PACKET:
            raise SSHException(f"invalid packet length {size}")
        total = 4 + size + p._Packetizer__mac_size_in
        buf = self._fill(total)
        plain = bytearray(size)
        iv = p._Packetizer__iv_in
        with memoryview(buf) as view:
            try:
                p._Packetizer__block_engine_in.decrypt_into(
                    iv, view[4:total], bytes(view[:4]), plain
                )
            except InvalidTag:
                raise SSHException("Mismatched MAC") from None
        del buf[:total]
        p._Packetizer__iv_in = iv[:4] + (int.from_bytes(iv[4:], "big") + 1).to_bytes(8, "big")
        padding = plain[0]
        if size - padding < 2:
            raise SSHException("invalid packet padding")
        cmd = plain[1]
        with memoryview(plain) as view:
            msg = Message(bytes(view[2 : size - padding]))
        msg.seqno = p._Packetizer__sequence_number_in
        p._Packetizer__sequence_number_in = (msg.seqno + 1) & xffffffff
        self._count_received(size + p._Packetizer__mac_size_in + 4)
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
