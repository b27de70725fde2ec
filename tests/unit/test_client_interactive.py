"""The interactive client and the exec/forward flows against a tiny server of the protocol
(`interactive_fake.FakeSessions`): framing, stdin/EOF, exit codes, resize, refusals through
the one status table, the one refresh after a 401, a dropped connection, forwards."""

from __future__ import annotations

import hashlib
import io
import json
import os
import socket
import threading
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone

import httpx
import pytest

from kaic.auth.credentials import Credentials
from kaic.client.api import CenterClient
from kaic.client.interactive import ForwardRefused, SessionLost, ws_url
from kaic.errors import AuthRequired, NotFound, Rejected, Unreachable
from kaic.flows.interactive import Command, Streams, run_command
from kaic.flows.session import Session
from kaic.flows.ui import Ui
from kaic.models import ExecStart
from tests.unit.interactive_fake import TOKEN, FakeSessions


@pytest.fixture
def fake() -> Iterator[FakeSessions]:
    with FakeSessions().running() as server:
        yield server


def session_of(url: str, credentials: Credentials | None = None, **options: object) -> Session:
    creds = credentials or Credentials(access_token=TOKEN, kind="api")
    client = CenterClient(url, credentials=creds, sleep=lambda _s: None, **options)  # type: ignore[arg-type]
    return Session(client, url, None, "env", local=False)


class Collected:
    def __init__(self) -> None:
        self.stdout = bytearray()
        self.stderr = bytearray()
        self.said: list[str] = []

    def streams(self, stdin: bytes = b"") -> Streams:
        return Streams(io.BytesIO(stdin), self.stdout.extend, self.stderr.extend)

    def ui(self) -> Ui:
        return Ui(info=self.said.append, warn=self.said.append)


def run(
    fake: FakeSessions, argv: list[str], stdin: bytes = b"", **kw: object
) -> tuple[int, Collected]:
    out = Collected()
    code = run_command(
        session_of(fake.url), "42", Command(argv, **kw), out.streams(stdin), out.ui()
    )  # type: ignore[arg-type]
    return code, out


def test_ws_url_follows_the_scheme() -> None:
    assert (
        ws_url("https://c.example:8443", "/v1/jobs/1/exec") == "wss://c.example:8443/v1/jobs/1/exec"
    )
    assert (
        ws_url("http://127.0.0.1:9", "/v1/x", {"port": 8888}) == "ws://127.0.0.1:9/v1/x?port=8888"
    )


def test_exit_code_streams_and_stdin(fake: FakeSessions) -> None:
    script = "cat; echo to-err >&2; exit 7"
    code, out = run(fake, ["sh", "-c", script], stdin=b"line one\nline two\n")
    assert code == 7
    assert bytes(out.stdout) == b"line one\nline two\n"
    assert bytes(out.stderr) == b"to-err\n"
    # The token went in the header, never in the URL; the first message was the start.
    path, auth = fake.seen[0]
    assert auth == f"Bearer {TOKEN}" and TOKEN not in path
    assert fake.starts[0].argv == ["sh", "-c", script] and fake.starts[0].tty is False


def test_empty_stdin_is_eof_at_once(fake: FakeSessions) -> None:
    code, out = run(fake, ["wc", "-c"])
    assert code == 0 and bytes(out.stdout).strip() == b"0"


def test_large_stdin_round_trip(fake: FakeSessions) -> None:
    data = os.urandom(3 * 1024 * 1024 + 17)
    code, out = run(fake, ["sha256sum"], stdin=data)
    assert code == 0
    assert bytes(out.stdout).split()[0].decode() == hashlib.sha256(data).hexdigest()


def test_signal_exit_is_128_plus_n(fake: FakeSessions) -> None:
    code, _out = run(fake, ["sh", "-c", "kill -TERM $$"])
    assert code == 128 + 15


def test_tty_merges_streams_and_reports_size(fake: FakeSessions) -> None:
    code, out = run(fake, ["sh", "-c", "stty size; echo err >&2; exit 3"], tty=True)
    assert code == 3
    text = bytes(out.stdout).decode()
    assert "24 80" in text and "err" in text and not out.stderr
    assert fake.starts[0].tty and (fake.starts[0].rows, fake.starts[0].cols) == (24, 80)


@pytest.mark.parametrize(
    ("state", "job", "error", "words"),
    [
        ("RUNNING", "7", NotFound, "no job 7"),
        ("PENDING", "42", Rejected, "is PENDING"),
    ],
)
def test_refusals_map_through_the_status_table(
    fake: FakeSessions, state: str, job: str, error: type[Exception], words: str
) -> None:
    fake.jobs["42"] = state
    with pytest.raises(error) as info:
        run_command(session_of(fake.url), job, Command(["true"]), Collected().streams(), Ui())
    assert words in str(info.value) and "req-9" in str(info.value)


def test_bad_token_without_refresh_is_auth_required(fake: FakeSessions) -> None:
    creds = Credentials(access_token="kaic_" + "x" * 40, kind="api")
    with pytest.raises(AuthRequired) as info:
        session_of(fake.url, creds).interactive.exec("42", ExecStart(argv=["true"]))
    assert info.value.exit_code == 3 and "kaic token create" in (info.value.hint or "")


def test_401_refreshes_once_then_opens(fake: FakeSessions) -> None:
    expires = (datetime.now(timezone.utc) + timedelta(minutes=15)).isoformat()
    grants: list[dict[str, object]] = []

    def token_endpoint(request: httpx.Request) -> httpx.Response:
        grants.append(json.loads(request.content))
        doc = {
            "access_token": TOKEN,
            "refresh_token": "kar_2",
            "token_type": "bearer",
            "expires_in": 900,
            "expires_at": expires,
        }
        return httpx.Response(200, json=doc)

    refreshed: list[Credentials] = []
    creds = Credentials(access_token="kaa_old", refresh_token="kar_1", kind="session")
    session = session_of(
        fake.url, creds, transport=httpx.MockTransport(token_endpoint), on_refresh=refreshed.append
    )
    out = Collected()
    code = run_command(session, "42", Command(["echo", "hi"]), out.streams(), out.ui())
    assert code == 0 and bytes(out.stdout) == b"hi\n"
    assert [g["grant_type"] for g in grants] == ["refresh_token"]
    assert refreshed[0].access_token == TOKEN
    assert [auth for _p, auth in fake.seen] == ["Bearer kaa_old", f"Bearer {TOKEN}"]


def test_center_not_listening_is_unreachable() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{probe.getsockname()[1]}"
    with pytest.raises(Unreachable) as info:
        run_command(session_of(url), "42", Command(["true"]), Collected().streams(), Ui())
    assert info.value.exit_code == 5 and "connection refused" in info.value.message


def test_connection_dropped_mid_session_is_exit_5(fake: FakeSessions) -> None:
    fake.drop_after_start = True
    with pytest.raises(SessionLost) as info:
        run_command(
            session_of(fake.url), "42", Command(["sleep", "5"]), Collected().streams(), Ui()
        )
    assert info.value.exit_code == 5 and "lost mid-session" in info.value.message


def test_plain_http_to_a_remote_center_is_refused_before_connecting() -> None:
    from kaic.errors import UsageError

    with pytest.raises(UsageError):
        session_of("http://center.example")


# -- forward ---------------------------------------------------------------------------------


class EchoServer:
    """A job-side TCP server on 127.0.0.1: echoes, or sends `greeting` and closes."""

    def __init__(self, greeting: bytes | None = None) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.greeting = greeting
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._one, args=(conn,), daemon=True).start()

    def _one(self, conn: socket.socket) -> None:
        with conn:
            if self.greeting is not None:
                conn.sendall(self.greeting)
                return
            while data := conn.recv(65536):
                conn.sendall(data)

    def close(self) -> None:
        self.sock.close()


def test_forward_stream_round_trip_and_half_close(fake: FakeSessions) -> None:
    echo = EchoServer()
    try:
        stream = session_of(fake.url).interactive.forward("42", echo.port)
        payload = os.urandom(1_000_000)
        got = bytearray()

        def sender() -> None:
            for i in range(0, len(payload), 65536):
                stream.send(payload[i : i + 65536])
            stream.send_eof()

        threading.Thread(target=sender).start()
        while (data := stream.receive()) is not None:
            got.extend(data)
            if not data:
                continue
        assert bytes(got) == payload
    finally:
        echo.close()


def test_forward_refused_inside_the_job(fake: FakeSessions) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    stream = session_of(fake.url).interactive.forward("42", port)
    with pytest.raises(ForwardRefused) as info:
        stream.receive()
    assert f"connection refused on port {port} in job 42" in info.value.message


def test_debug_log_names_the_upgrade_and_masks_the_token(fake: FakeSessions) -> None:
    lines: list[str] = []
    session = session_of(fake.url, debug_log=lines.append)
    out = Collected()
    assert run_command(session, "42", Command(["true"]), out.streams(), out.ui()) == 0
    (line,) = lines
    assert line.startswith(f"GET ws://127.0.0.1:{fake.url.rsplit(':', 1)[1]}/v1/jobs/42/exec")
    assert "[authorization: Bearer ***] -> 101" in line and TOKEN not in line


def test_a_start_the_center_refuses_is_a_rejection(fake: FakeSessions) -> None:
    out = Collected()
    with pytest.raises(Rejected) as info:
        run_command(
            session_of(fake.url), "42", Command(["refused-by-the-fake"]), out.streams(), out.ui()
        )
    assert info.value.exit_code == 6 and "argv: not allowed here" in info.value.message
    assert out.said == []  # said once, by the error
