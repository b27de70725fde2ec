"""What a job writes into its metrics files cannot make the center hold more than it should:
a line with no end is dropped, not kept growing; a job on many nodes is read within one
budget; a non-regular or linked image path is never opened by the center."""

from __future__ import annotations

import os
from pathlib import Path

from kaic.center.containers.resolve import image_format
from kaic.center.metrics import files
from kaic.center.metrics.files import Header
from kaic.center.metrics.latest import NodeTail


def test_a_line_without_an_end_is_not_kept_growing() -> None:
    tail = NodeTail(node="n1", header=Header(node="n1"))
    for _ in range(40):
        tail.feed(b"x" * (files.MAX_LINE_BYTES // 4))
        assert len(tail.partial) <= files.MAX_LINE_BYTES
    # the next real line after the junk's end is read again
    tail.feed(b"junk-end\n")
    assert tail.partial == b"" and not tail.skipping


def test_a_job_on_many_nodes_is_read_within_one_budget(tmp_path: Path) -> None:
    metrics = tmp_path / "metrics"
    metrics.mkdir()
    line = b'{"t": 1, "d": 5, "g": []}\n'
    for i in range(files.MAX_FILES):
        (metrics / f"n{i}.jsonl").write_bytes(b'{"v": 1, "node": "n"}\n' + line * 20_000)
    read = files.read_job_files(tmp_path)
    total = sum(os.path.getsize(metrics / f"n{i}.jsonl") for i in range(files.MAX_FILES))
    assert total > files.MAX_JOB_BYTES
    assert len(read) == files.MAX_FILES
    assert all(any("only the latest were read" in n for n in f.header.notes) for f in read)


def test_the_center_never_opens_a_fifo_or_a_link_as_an_image(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    assert image_format(str(fifo)) is None  # returns at once: never blocks on a FIFO
    target = tmp_path / "real.sqsh"
    target.write_bytes(b"hsqs" + b"\0" * 64)
    assert image_format(str(target)) == "squashfs"
    link = tmp_path / "link.sqsh"
    link.symlink_to(target)
    assert image_format(str(link)) is None
