"""The log follower: byte offsets across broken streams, premature ends and bad resumes."""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from datetime import datetime, timezone

import httpx
import pytest

from kaic.auth.credentials import Credentials
from kaic.client.api import CenterClient
from kaic.client.logs import LogCursor, follow_all, read_log
from kaic.errors import KaicError, TlsError
from kaic.models import Job, JobState, Resources

LOG = b"".join(f"line {i}\n".encode() for i in range(1, 2001))


class BreakingStream(httpx.SyncByteStream):
    """Yields `data` in small chunks, then breaks the connection (or ends cleanly)."""

    def __init__(self, data: bytes, *, breaks: bool) -> None:
        self.data, self.breaks = data, breaks

    def __iter__(self) -> Iterator[bytes]:
        for i in range(0, len(self.data), 700):
            yield self.data[i : i + 700]
        if self.breaks:
            raise httpx.ReadError("connection reset by peer")


def job(state: JobState) -> Job:
    now = datetime.now(timezone.utc)
    return Job(
        id="7",
        name="j",
        state=state,
        user="u",
        project="p",
        partition="local",
        resources=Resources(),
        submitted_at=now,
    )


def make_client(handler: httpx.MockTransport) -> CenterClient:
    return CenterClient(
        "https://center.test",
        credentials=Credentials(access_token="kaa_x"),
        transport=handler,
        sleep=lambda s: None,
    )


def test_reconnects_from_exact_offset_after_broken_stream() -> None:
    cuts = [500, 1234, 9000]  # where each connection breaks off
    seen_offsets: list[int] = []

    def handler(request: httpx.Request) -> httpx.Response:
        offset = int(request.url.params["offset"])
        seen_offsets.append(offset)
        end = next((c for c in cuts if c > offset), len(LOG))
        return httpx.Response(
            200,
            headers={"X-Log-Offset": str(offset)},
            stream=BreakingStream(LOG[offset:end], breaks=end < len(LOG)),
        )

    got = bytearray()
    sleeps: list[float] = []
    client = make_client(httpx.MockTransport(handler))
    cursor = read_log(
        client,
        LogCursor("7", "stdout"),
        got.extend,
        follow=True,
        sleep=sleeps.append,
        get_job=lambda _id: job(JobState.FAILED),
    )
    assert bytes(got) == LOG  # nothing lost, nothing repeated
    assert seen_offsets == [0, 500, 1234, 9000]
    assert cursor.reconnects == 3 and cursor.offset == len(LOG)
    assert sleeps == [0.2, 0.2, 0.2]  # a pause between reconnects, never a tight loop


def test_clean_end_before_job_is_terminal_reconnects() -> None:
    calls = {"n": 0}

    def handler(request: httpx.Request) -> httpx.Response:
        calls["n"] += 1
        offset = int(request.url.params["offset"])
        body = LOG[offset:1000] if calls["n"] == 1 else LOG[offset:]
        return httpx.Response(
            200, headers={"X-Log-Offset": str(offset)}, stream=BreakingStream(body, breaks=False)
        )

    states = iter([JobState.RUNNING, JobState.COMPLETED])
    got = bytearray()
    read_log(
        make_client(httpx.MockTransport(handler)),
        LogCursor("7", "stdout"),
        got.extend,
        follow=True,
        sleep=lambda s: None,
        get_job=lambda _id: job(next(states)),
    )
    assert bytes(got) == LOG and calls["n"] == 2


def test_502_before_first_byte_is_retried() -> None:
    answers = iter([502, 503, 200])

    def handler(request: httpx.Request) -> httpx.Response:
        status = next(answers)
        if status != 200:
            return httpx.Response(status, text="<html>bad gateway</html>")
        return httpx.Response(
            200, headers={"X-Log-Offset": "0"}, stream=BreakingStream(LOG, breaks=False)
        )

    got = bytearray()
    read_log(
        make_client(httpx.MockTransport(handler)),
        LogCursor("7", "stdout"),
        got.extend,
        follow=True,
        sleep=lambda s: None,
        get_job=lambda _id: job(JobState.COMPLETED),
    )
    assert bytes(got) == LOG


def test_resume_at_wrong_offset_is_an_error_not_silent_loss() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        offset = int(request.url.params["offset"])
        if offset == 0:
            return httpx.Response(
                200, headers={"X-Log-Offset": "0"}, stream=BreakingStream(LOG[:100], breaks=True)
            )
        return httpx.Response(
            200, headers={"X-Log-Offset": "0"}, stream=BreakingStream(LOG, breaks=False)
        )

    with pytest.raises(KaicError, match="resumed"):
        read_log(
            make_client(httpx.MockTransport(handler)),
            LogCursor("7", "stdout"),
            lambda b: None,
            follow=True,
            sleep=lambda s: None,
            get_job=lambda _id: job(JobState.RUNNING),
        )


def test_tail_takes_start_offset_from_center() -> None:
    start = LOG.index(b"line 1999\n")

    def handler(request: httpx.Request) -> httpx.Response:
        assert request.url.params["tail"] == "2"
        return httpx.Response(
            200,
            headers={"X-Log-Offset": str(start)},
            stream=BreakingStream(LOG[start:], breaks=False),
        )

    got = bytearray()
    cursor = read_log(
        make_client(httpx.MockTransport(handler)),
        LogCursor("7", "stdout"),
        got.extend,
        follow=False,
        tail=2,
    )
    assert bytes(got) == b"line 1999\nline 2000\n" and cursor.offset == len(LOG)


class SilentStream(httpx.SyncByteStream):
    """A job that prints nothing for longer than the client's read timeout."""

    def __iter__(self) -> Iterator[bytes]:
        raise httpx.ReadTimeout("timed out")
        yield b""  # pragma: no cover


def test_long_silence_reconnects_without_giving_up(monkeypatch: pytest.MonkeyPatch) -> None:
    import kaic.client.logs as logs

    monkeypatch.setattr(logs, "RECONNECT_BUDGET_S", 0.0)  # any real outage would end it at once
    calls = {"n": 0}

    def handler(request: httpx.Request) -> httpx.Response:
        calls["n"] += 1
        offset = int(request.url.params["offset"])
        if calls["n"] <= 12:  # 12 read timeouts in a row: the job is quiet, not the center down
            return httpx.Response(200, headers={"X-Log-Offset": str(offset)}, stream=SilentStream())
        return httpx.Response(
            200, headers={"X-Log-Offset": str(offset)}, stream=BreakingStream(LOG, breaks=False)
        )

    got = bytearray()
    read_log(
        make_client(httpx.MockTransport(handler)),
        LogCursor("7", "stdout"),
        got.extend,
        follow=True,
        sleep=lambda s: None,
        get_job=lambda _id: job(JobState.COMPLETED),
    )
    assert bytes(got) == LOG and calls["n"] == 13


def test_tail_survives_a_failed_first_attempt() -> None:
    start = LOG.index(b"line 2000\n")
    calls = {"n": 0}

    def handler(request: httpx.Request) -> httpx.Response:
        calls["n"] += 1
        if calls["n"] <= 5:  # more than the client's own retries: read_log must reconnect
            raise httpx.ConnectError("refused")
        assert request.url.params.get("tail") == "1"
        return httpx.Response(
            200,
            headers={"X-Log-Offset": str(start)},
            stream=BreakingStream(LOG[start:], breaks=False),
        )

    got = bytearray()
    read_log(
        make_client(httpx.MockTransport(handler)),
        LogCursor("7", "stdout"),
        got.extend,
        follow=True,
        tail=1,
        sleep=lambda s: None,
        get_job=lambda _id: job(JobState.COMPLETED),
    )
    assert bytes(got) == b"line 2000\n"


def test_certificate_failure_is_not_reconnected() -> None:
    """A TLS failure recurs on every attempt: `logs -f` reports it at once instead of
    reconnecting for minutes."""
    calls = {"n": 0}

    def handler(request: httpx.Request) -> httpx.Response:
        calls["n"] += 1
        assert calls["n"] <= 3, "reconnecting after a certificate failure"
        cause = ssl.SSLCertVerificationError(1, "certificate verify failed")
        cause.verify_code, cause.verify_message = 20, "unable to get local issuer certificate"
        raise httpx.ConnectError("certificate verify failed", request=request) from cause

    with pytest.raises(TlsError) as info:
        read_log(
            make_client(httpx.MockTransport(handler)),
            LogCursor("7", "stdout"),
            bytearray().extend,
            follow=True,
            sleep=lambda s: None,
            get_job=lambda _id: job(JobState.RUNNING),
        )
    assert calls["n"] == 1
    assert "--ca-bundle" in (info.value.hint or "")


def test_reachability_is_reported_for_connections_not_for_quiet_streams() -> None:
    """A refused connection is an outage (False), connecting again ends it (True); a quiet
    job's read timeout or a stream that broke off after connecting is none."""
    calls = {"n": 0}

    def handler(request: httpx.Request) -> httpx.Response:
        calls["n"] += 1
        offset = int(request.url.params["offset"])
        if calls["n"] == 1:  # connected, then silence
            return httpx.Response(200, headers={"X-Log-Offset": "0"}, stream=SilentStream())
        if calls["n"] == 2:  # connected, then broken off
            body = BreakingStream(LOG[:700], breaks=True)
            return httpx.Response(200, headers={"X-Log-Offset": "0"}, stream=body)
        if calls["n"] <= 5:  # refused: one failed attempt of read_log (the client retries)
            raise httpx.ConnectError("refused", request=request)
        body = BreakingStream(LOG[offset:], breaks=False)
        return httpx.Response(200, headers={"X-Log-Offset": str(offset)}, stream=body)

    heard: list[bool] = []
    got = bytearray()
    client, cursor = make_client(httpx.MockTransport(handler)), LogCursor("7", "stdout")
    ended = job(JobState.COMPLETED)
    read_log(client, cursor, got.extend, follow=True, get_job=lambda _id: ended,
             sleep=lambda s: None, on_reachability=heard.append)  # fmt: skip
    assert bytes(got) == LOG
    assert heard == [True, True, False, True]


def test_each_rank_resumes_from_its_own_offset() -> None:
    """A multi-node job's ranks are separate logs: each broken stream resumes its own rank
    at its own offset, and every byte of every rank arrives once."""
    logs = {str(rank): f"rank {rank}\n".encode() * (300 + 100 * rank) for rank in (0, 1)}
    asked: list[tuple[str, int]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        rank, offset = request.url.params["node"], int(request.url.params["offset"])
        asked.append((rank, offset))
        data = logs[rank]
        end = min(len(data), offset + 1000 + 500 * int(rank))  # breaks every so often
        return httpx.Response(
            200,
            headers={"X-Log-Offset": str(offset)},
            stream=BreakingStream(data[offset:end], breaks=end < len(data)),
        )

    got: dict[int, bytearray] = {0: bytearray(), 1: bytearray()}
    client = make_client(httpx.MockTransport(handler))
    cursors = [LogCursor("7", "stdout", node=rank) for rank in (0, 1)]
    follow_all(
        client,
        [(cursor, got[cursor.node or 0].extend) for cursor in cursors],
        follow=True,
        get_job=lambda _id: job(JobState.COMPLETED),
    )
    assert bytes(got[0]) == logs["0"] and bytes(got[1]) == logs["1"]
    for rank, step in (("0", 1000), ("1", 1500)):
        offsets = [offset for r, offset in asked if r == rank]
        assert offsets == list(range(0, len(logs[rank]), step))
    assert [c.reconnects for c in cursors] == [2, 1]
