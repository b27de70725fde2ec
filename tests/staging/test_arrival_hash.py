"""A pull's segments hashed as their pieces arrive (`kaic.staging.arrival_hash`): the same
digests as reading the part file back, whatever order the pieces come in; a segment whose
pieces come out of order, or that a resumed part file began, is read back instead."""

from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path

import pytest

from kaic.staging import arrival_hash, striped_pull
from kaic.staging.arrival_hash import ArrivalHashes
from kaic.staging.plan import FileTask
from kaic.staging.stripes import Striped

MIB = 1 << 20
PIECE = 256 << 10


def _file(tmp_path: Path, size: int) -> tuple[Path, bytes]:
    data = os.urandom(size)
    part = tmp_path / "part"
    part.write_bytes(data)
    return part, data


def _striped(size: int, start: int = 0) -> Striped:
    task = FileTask("src", "dst", size, 0, 0o644)
    striped = Striped(task, threading.Event(), chunk=MIB, segment=4 * MIB)
    striped.state = "sending"
    striped.plan(striped.segments, start)
    return striped


def _hashing(
    tmp_path: Path, size: int, start: int = 0
) -> tuple[bytes, Striped, ArrivalHashes, threading.Thread]:
    """A part file of `size` random bytes, its `Striped` (resumed at `start`), and its
    `ArrivalHashes` running in a thread."""
    part, data = _file(tmp_path, size)
    striped = _striped(size, start)
    hashes = ArrivalHashes(striped)
    worker = threading.Thread(target=hashes.run, args=(str(part),), daemon=True)
    worker.start()
    return data, striped, hashes, worker


def _digests(data: bytes, striped: Striped) -> list[str | None]:
    return [
        None if s.kept else hashlib.sha256(data[s.start : s.end]).hexdigest()
        for s in striped.segments
    ]


def _deliver(striped: Striped, hashes: ArrivalHashes, data: bytes, order: list[int]) -> None:
    """Hand the pieces at `order` to `hashes`, then mark every segment sent."""
    for pos in order:
        hashes.arrived(pos, memoryview(data)[pos : pos + PIECE])
    with striped.cond:
        for seg in striped.segments:
            seg.sent = True
        striped.cond.notify_all()


def test_pieces_in_order_are_hashed_as_they_arrive(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    size = 10 * MIB + 12345
    read_back: list[int] = []
    real = arrival_hash.hash_local

    def spy(striped: Striped, path: str, *, at_once: bool) -> None:
        read_back.extend(s.start for s in striped.segments if s.local is None)
        real(striped, path, at_once=at_once)

    monkeypatch.setattr(arrival_hash, "hash_local", spy)
    data, striped, hashes, worker = _hashing(tmp_path, size)
    _deliver(striped, hashes, data, list(range(0, size, PIECE)))
    worker.join(10)
    assert not worker.is_alive()
    assert [s.local for s in striped.segments] == _digests(data, striped)
    assert read_back == []  # nothing read back from the part file


def test_out_of_order_and_resumed_segments_are_read_back(tmp_path: Path) -> None:
    size = 12 * MIB
    # resumed at 5 MiB: segment 0 kept, segment 1 began before this attempt
    data, striped, hashes, worker = _hashing(tmp_path, size, start=5 * MIB)
    order = list(range(5 * MIB, size, PIECE))
    # two pieces of the last segment swapped (two streams)
    i = order.index(9 * MIB)
    order[i], order[i + 1] = order[i + 1], order[i]
    _deliver(striped, hashes, data, order)
    worker.join(10)
    assert not worker.is_alive()
    assert striped.segments[0].kept
    assert [s.local for s in striped.segments] == _digests(data, striped)


def test_a_stream_is_not_held_once_the_file_failed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Nobody hashes any more (the file failed): a stream handing over pieces with the
    queue full is let go, not held for ever."""
    monkeypatch.setattr(arrival_hash, "QUEUED", 2)
    size = 8 * MIB
    _part, data = _file(tmp_path, size)
    striped = _striped(size)
    hashes = ArrivalHashes(striped)  # (no thread takes from it)
    striped.fail()
    stream = threading.Thread(
        target=_deliver, args=(striped, hashes, data, list(range(0, size, PIECE)))
    )
    stream.start()
    stream.join(10)
    assert not stream.is_alive()


def test_a_piece_never_handed_over_leaves_its_segment_to_the_part_file(tmp_path: Path) -> None:
    """Hashing does not wait for ever for a piece it was not told of: once every segment is
    on disk, what it could not hash in order is read back."""
    size = 8 * MIB
    data, striped, hashes, worker = _hashing(tmp_path, size)
    pieces = list(range(0, size, PIECE))
    pieces.remove(4 * MIB - PIECE)  # the last piece of the first segment
    _deliver(striped, hashes, data, pieces)
    worker.join(10)
    assert not worker.is_alive()
    assert [s.local for s in striped.segments] == _digests(data, striped)


def test_a_short_write_is_continued(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """What a pull hashes as it arrives is what the part file holds: a short `pwrite` is
    continued, and one that writes nothing fails the piece."""
    real = os.pwrite
    calls: list[int] = []

    def halves(fd: int, data: memoryview, pos: int) -> int:
        calls.append(len(data))
        return real(fd, data[: max(1, len(data) // 2)], pos)

    monkeypatch.setattr(os, "pwrite", halves)
    path = tmp_path / "f"
    fd = os.open(path, os.O_RDWR | os.O_CREAT)
    try:
        piece = os.urandom(1000)
        striped_pull.pwrite_all(fd, memoryview(piece), 10)
        assert path.read_bytes()[10:] == piece and len(calls) > 5
        monkeypatch.setattr(os, "pwrite", lambda fd, data, pos: 0)
        with pytest.raises(OSError, match="short write"):
            striped_pull.pwrite_all(fd, memoryview(piece), 0)
    finally:
        os.close(fd)


def test_pieces_after_the_hashing_ended_do_not_hold_a_stream(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A segment sent again after a mismatch (the hashing thread has ended) reaches
    `arrived` once more: it is let go at once, however many pieces, not queued for nobody."""
    monkeypatch.setattr(arrival_hash, "QUEUED", 2)
    size = 8 * MIB
    data, striped, hashes, worker = _hashing(tmp_path, size)
    # none of the first segment's pieces handed over: it is still waiting for its first
    # piece when the hashing ends (every segment on disk)
    _deliver(striped, hashes, data, list(range(4 * MIB, size, PIECE)))
    worker.join(10)
    assert not worker.is_alive()
    resend = threading.Thread(
        target=_deliver,
        args=(striped, hashes, data, list(range(0, 4 * MIB, PIECE)) * 4),
        daemon=True,
    )
    resend.start()
    resend.join(5)
    assert not resend.is_alive()
    assert [s.local for s in striped.segments] == _digests(data, striped)
