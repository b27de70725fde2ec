"""Job logs: offsets, tail, follow until the job is terminal and the file drained."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from kaic.center.jobs.logs import tail_offset

from .conftest import assert_error
from .jobs_support import JobsCenter, jobs_center, wait_for


@pytest.fixture
def center(tmp_path: Path) -> Iterator[JobsCenter]:
    with jobs_center(tmp_path) as c:
        yield c


def test_tail_offset(tmp_path: Path) -> None:
    path = tmp_path / "log"
    assert tail_offset(path, 3) == 0
    path.write_bytes(b"a\nbb\nccc\n")
    assert tail_offset(path, 1) == 5
    assert tail_offset(path, 2) == 2
    assert tail_offset(path, 3) == 0
    assert tail_offset(path, 10) == 0
    assert tail_offset(path, 0) == 9
    path.write_bytes(b"a\nbb\npartial")
    assert tail_offset(path, 1) == 5
    path.write_bytes(b"x" * 200_000 + b"\n" + b"y" * 100_000 + b"\n")
    assert tail_offset(path, 1) == 200_001


def test_offset_and_tail(center: JobsCenter) -> None:
    job = center.submit("printf 'one\\ntwo\\nthree\\n'; echo err >&2")
    center.wait_done(job["id"])
    whole = center.logs(job["id"])
    assert whole.status_code == 200
    assert whole.headers["content-type"] == "application/octet-stream"
    assert (whole.content, whole.headers["X-Log-Offset"]) == (b"one\ntwo\nthree\n", "0")
    part = center.logs(job["id"], offset=4)
    assert (part.content, part.headers["X-Log-Offset"]) == (b"two\nthree\n", "4")
    tail = center.logs(job["id"], tail=2)
    assert (tail.content, tail.headers["X-Log-Offset"]) == (b"two\nthree\n", "4")
    beyond = center.logs(job["id"], offset=1000)
    assert (beyond.content, beyond.headers["X-Log-Offset"]) == (b"", "1000")
    assert center.logs(job["id"], stream="stderr").content == b"err\n"
    # A finished job followed from its end: ends at once, with nothing.
    followed = center.logs(job["id"], follow="true", offset=14)
    assert followed.content == b""
    assert_error(center.logs(job["id"], stream="both"), 422, "invalid_request")
    assert_error(center.logs(job["id"], offset=-1), 422, "invalid_request")


def test_pending_job_has_empty_logs(center: JobsCenter) -> None:
    blocker = center.submit("sleep 30", resources={"gpus": 0})
    waiting = center.submit("echo later", depends_on=[blocker["id"]])
    response = center.logs(waiting["id"])
    assert (response.status_code, response.content) == (200, b"")
    center.post(f"/v1/jobs/{blocker['id']}/cancel")
    # Its dependency was cancelled: the dependant ends too, and following it ends.
    assert center.logs(waiting["id"], follow="true").content == b""
    assert center.job(waiting["id"])["state"] == "CANCELLED"


def test_follow_gets_every_byte_in_order(center: JobsCenter) -> None:
    script = 'for i in $(seq 1 10000); do echo "line $i"; [ $((i % 2500)) = 0 ] && sleep 0.1; done'
    job = center.submit(script)
    response = center.logs(job["id"], follow="true")
    assert response.status_code == 200 and response.headers["X-Log-Offset"] == "0"
    assert center.job(job["id"])["state"] == "COMPLETED"
    expected = "".join(f"line {i}\n" for i in range(1, 10001))
    assert response.text == expected


def test_follow_from_offset_and_tail_while_running(center: JobsCenter) -> None:
    job = center.submit(
        'echo a; echo b; while [ ! -e "$HOME/go" ]; do sleep 0.02; done; echo c; exit 3'
    )
    wait_for(lambda: center.logs(job["id"]).content == b"a\nb\n", what="two lines")
    tail = center.logs(job["id"], tail=1)
    assert (tail.content, tail.headers["X-Log-Offset"]) == (b"b\n", "2")
    (center.home() / "go").touch()
    resumed = center.logs(job["id"], offset=2, follow="true")
    assert (resumed.content, resumed.headers["X-Log-Offset"]) == (b"b\nc\n", "2")
    assert center.job(job["id"])["exit_code"] == 3


def test_a_log_replaced_by_a_link_is_not_followed(center: JobsCenter, tmp_path: Path) -> None:
    """A job that runs as its user's account owns its directory (Slurm writes the logs there
    as that account): a link put in the place of a log must not make the center read the
    file it points to. It reads as no log at all."""
    secret = tmp_path / "center-secret"
    secret.write_bytes(b"the center's own secret\n")
    job = center.submit("echo hi")
    center.wait_done(job["id"])
    log = center.settings.state_dir / "jobs" / job["id"] / "stdout"
    log.unlink()
    log.symlink_to(secret)
    for params in ({}, {"tail": 1}, {"offset": 0, "follow": "true"}):
        response = center.logs(job["id"], **params)
        assert (response.status_code, response.content) == (200, b""), params
