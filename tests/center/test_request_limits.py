"""Hostile input is refused at the API, naming the field and the limit (422), or before it is
read (413): control characters and NUL bytes that would reach an environment, an argv or a
path; oversized scripts, env and arrays; integers past SQLite's range."""

from __future__ import annotations

import base64
import json
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from kaic.models.limits import (
    MAX_ARRAY_TASKS,
    MAX_DEPENDENCIES,
    MAX_ENV_TOTAL_LENGTH,
    MAX_ENV_VARS,
    MAX_NAME_LENGTH,
    MAX_REQUEST_BYTES,
    MAX_SCRIPT_LENGTH,
    MAX_TIME_LIMIT_SECONDS,
)
from tests.helpers import RunningCenter, start_center

from .conftest import assert_error
from .jobs_support import JobsCenter, jobs_center


@pytest.fixture
def center(tmp_path: Path) -> Iterator[JobsCenter]:
    with jobs_center(tmp_path) as running:
        yield running


def _refused(center: JobsCenter, spec: dict[str, Any], *, dry_run: bool = False) -> str:
    params = {"dry_run": "true"} if dry_run else {}
    response = center.post("/v1/jobs", json={"run": "true", **spec}, params=params)
    message: str = assert_error(response, 422, "invalid_request")["message"]
    assert center.get("/v1/jobs", params={"all": "true"}).json()["jobs"] == []
    return message


@pytest.mark.parametrize("text", ["a\0b", "a\x1b[2Jb", "a\nb", "a\rb", "a\x7fb", "a\x9bb"])
@pytest.mark.parametrize("field", ["name", "project", "partition", "image", "workdir"])
def test_control_characters_are_refused_naming_the_field(
    center: JobsCenter, field: str, text: str
) -> None:
    message = _refused(center, {field: text})
    assert f"body.{field}: must not contain control characters" in message


def test_control_characters_are_refused_in_nested_fields(center: JobsCenter) -> None:
    message = _refused(center, {"resources": {"gpu_type": "H\0100"}})
    assert "body.resources.gpu_type: must not contain control characters" in message
    message = _refused(center, {"depends_on": ["1\n2"]})
    assert "body.depends_on.0: must not contain control characters" in message
    assert "control characters" in _refused(center, {"name": "a\0b"}, dry_run=True)


def test_an_over_long_name_is_refused_naming_the_limit(center: JobsCenter) -> None:
    message = _refused(center, {"name": "x" * (MAX_NAME_LENGTH + 1)})
    assert f"body.name: must be at most {MAX_NAME_LENGTH} characters" in message
    assert center.submit("true", name="x" * MAX_NAME_LENGTH)["name"] == "x" * MAX_NAME_LENGTH


def test_a_name_with_unicode_is_fine(center: JobsCenter) -> None:
    assert center.submit("true", name="Übung – 训练 🚀")["name"] == "Übung – 训练 🚀"


def test_a_2_mib_script_is_refused_naming_the_limit(center: JobsCenter) -> None:
    message = _refused(center, {"run": "x" * (2 * 1024 * 1024)})
    assert f"body.run: must be at most {MAX_SCRIPT_LENGTH} characters" in message
    assert "NUL" in _refused(center, {"run": "echo a\0b"})
    # Newlines, tabs and escapes are what scripts are made of.
    job = center.submit("printf 'a\\tb\\n'\r\necho \x1b[1mbold\x1b[0m\n")
    assert center.wait_done(job["id"])["state"] == "COMPLETED"


def test_env_is_refused_when_it_could_not_be_an_environment(center: JobsCenter) -> None:
    assert "'BAD-NAME' is not a valid variable name" in _refused(center, {"env": {"BAD-NAME": "1"}})
    assert "'A\\nB' is not a valid variable name" in _refused(center, {"env": {"A\nB": "1"}})
    assert "X: must not contain NUL" in _refused(center, {"env": {"X": "a\0b"}})
    many = {f"V{i}": "" for i in range(MAX_ENV_VARS + 1)}
    assert f"at most {MAX_ENV_VARS} variables" in _refused(center, {"env": many})
    big = {f"V{i}": "x" * 30000 for i in range(5)}
    assert f"at most {MAX_ENV_TOTAL_LENGTH} characters" in _refused(center, {"env": big})
    job = center.submit('printf "%s" "$MULTI"', env={"MULTI": "line 1\nline 2"})
    center.wait_done(job["id"])
    assert center.stdout(job["id"]) == "line 1\nline 2"


def test_integers_past_sqlites_range_are_422(center: JobsCenter) -> None:
    for value in (2**63, 10**30, MAX_TIME_LIMIT_SECONDS + 1):
        message = _refused(center, {"time_limit_seconds": value})
        assert "body.time_limit_seconds: Input should be less than or equal to " in message
    assert "task indices go up to" in _refused(center, {"array": "99999999999999999999"})
    assert "body.array: String should have at most" in _refused(center, {"array": "1" * 5000})
    assert f"at most {MAX_ARRAY_TASKS}" in _refused(center, {"array": "0-3%" + "9" * 30})
    assert f"more than {MAX_ARRAY_TASKS} tasks" in _refused(center, {"array": "0-10000"})
    deps = [str(i) for i in range(MAX_DEPENDENCIES + 1)]
    assert "body.depends_on" in _refused(center, {"depends_on": deps})


@pytest.mark.parametrize(
    "number", [str(2**63), "9" * 30, "0", "-1", "1e5", ""], ids=lambda n: n[:8] or "empty"
)
def test_a_forged_cursor_is_422(center: JobsCenter, number: str) -> None:
    cursor = base64.urlsafe_b64encode(f"jobs:{number}".encode()).decode().rstrip("=")
    response = center.get("/v1/jobs", params={"cursor": cursor})
    assert "invalid cursor" in assert_error(response, 422, "invalid_request")["message"]
    response = center.get("/v1/jobs", params={"cursor": "x" * 1000})
    assert_error(response, 422, "invalid_request")


def test_a_log_offset_past_any_file_is_422(center: JobsCenter) -> None:
    job = center.submit("echo hi")
    center.wait_done(job["id"])
    for params in ({"offset": 10**18}, {"offset": 10**18, "follow": "true"}, {"tail": 10**18}):
        response = center.logs(job["id"], **params)
        assert_error(response, 422, "invalid_request")
    # Far past the end, but representable: nothing there, and the stream ends cleanly.
    response = center.logs(job["id"], offset=2**52, follow="true")
    assert response.status_code == 200 and response.content == b""
    assert response.headers["X-Log-Offset"] == str(2**52)


# -- 413: a body over the overall limit is refused before it is read -------------------------


@pytest.fixture
def served(tmp_path: Path) -> Iterator[RunningCenter]:
    """A real center (uvicorn) on loopback: it is uvicorn that hands the body over."""
    running = start_center(tmp_path / "served")
    try:
        yield running
    finally:
        running.stop()


def _exchange(url: str, head: bytes, body: Iterator[bytes]) -> bytes:
    """Send `head` and then `body` (from a thread, which may find the connection closed);
    returns the response's status line and headers as soon as they arrive (30 s at most)."""
    parts = urlsplit(url)
    sock = socket.create_connection((parts.hostname, parts.port), timeout=30)

    def send_body() -> None:
        try:
            for chunk in body:
                sock.sendall(chunk)
        except OSError:
            pass  # the server answered and stopped reading: fine

    try:
        sock.sendall(head)
        sender = threading.Thread(target=send_body, daemon=True)
        sender.start()
        received = b""
        while b"\r\n\r\n" not in received:
            chunk = sock.recv(65536)
            if not chunk:
                break
            received += chunk
        return received
    finally:
        sock.close()


def _request_head(url: str, headers: str) -> bytes:
    host = urlsplit(url).netloc
    return (
        f"POST /v1/jobs HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n{headers}\r\n"
    ).encode()


def test_a_body_over_the_limit_is_refused_by_its_length_before_it_is_read(
    served: RunningCenter,
) -> None:
    declared = 100 * 1024 * 1024
    head = _request_head(served.url, f"Content-Length: {declared}\r\n")
    # Only 64 KiB of the 100 MB is ever sent: the answer must come without the rest.
    received = _exchange(served.url, head, iter([b'{"run": "' + b"x" * 65536]))
    assert received.startswith(b"HTTP/1.1 413"), received[:200]
    assert b"x-request-id" in received.lower()


def test_a_chunked_body_over_the_limit_is_refused_once_it_passes_the_limit(
    served: RunningCenter,
) -> None:
    head = _request_head(served.url, "Transfer-Encoding: chunked\r\n")
    piece = b"x" * (1024 * 1024)

    def chunks() -> Iterator[bytes]:
        yield b"%x\r\n%s\r\n" % (10, b'{"run": "x')
        # Never finished: a server that waits for the end of the body never answers.
        for _ in range(MAX_REQUEST_BYTES // len(piece) + 2):
            yield b"%x\r\n%s\r\n" % (len(piece), piece)

    received = _exchange(served.url, head, chunks())
    assert received.startswith(b"HTTP/1.1 413"), received[:200]


def test_a_413_is_in_the_error_shape(tmp_path: Path, center: JobsCenter) -> None:
    response = center.post(
        "/v1/jobs",
        content=b"{" + b" " * MAX_REQUEST_BYTES + b"}",
        headers={"Content-Type": "application/json"},
    )
    error = assert_error(response, 413, "too_large")
    assert str(MAX_REQUEST_BYTES) in error["message"]
    assert json.loads(response.text)["error"]["request_id"].startswith("req_")
