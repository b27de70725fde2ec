"""Verification through the center's checksums: the batched client against a real center,
and the engine asking once per batch (not once per file) where the host has no exec."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import httpx
import pytest
import respx

from kaic.auth.credentials import Credentials
from kaic.client.api import CenterClient
from kaic.client.auth import AuthAPI
from kaic.client.staging import FileChecksumsClient
from kaic.staging import workers
from kaic.staging.connect import SftpConnection
from kaic.staging.plan import part_name
from kaic.staging.transfer import push
from tests.helpers import RunningCenter
from tests.staging.conftest import SshEnv

Remote = tuple[str, Path]
PASSWORD = "correct horse battery staple"


class CountingTransport(httpx.HTTPTransport):
    """The real HTTP transport, counting the requests per path."""

    def __init__(self) -> None:
        super().__init__()
        self.paths: list[str] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.paths.append(request.url.path)
        return super().handle_request(request)


@pytest.fixture
def alice_client(center: RunningCenter) -> Iterator[tuple[CenterClient, CountingTransport, Path]]:
    center.add_user("alice", PASSWORD, unix_account="alice01")
    counting = CountingTransport()
    with CenterClient(center.url, transport=counting) as client:
        tokens = AuthAPI(client).login_password("alice", PASSWORD)
        client.set_credentials(Credentials(access_token=tokens.access_token, kind="session"))
        home = center.state_dir / "storage" / "alice"
        home.mkdir(parents=True, exist_ok=True)
        yield client, counting, home


def test_batched_client_against_a_real_center(
    alice_client: tuple[CenterClient, CountingTransport, Path],
) -> None:
    client, counting, home = alice_client
    files = {f"f{i}": os.urandom(100 + i) for i in range(5)}
    for name, data in files.items():
        (home / name).write_bytes(data)
    counting.paths.clear()
    sums = FileChecksumsClient(client, batch=2)([*files, "missing", "../etc/passwd"])
    assert counting.paths == ["/v1/files/checksums"] * 4  # 7 paths, 2 per request
    for name, data in files.items():
        assert sums[name] == hashlib.sha256(data).hexdigest()
    assert sums["missing"] is None and sums["../etc/passwd"] is None


@respx.mock(base_url="https://center.test", assert_all_called=True)
def test_older_center_without_the_batched_route(respx_mock: respx.MockRouter) -> None:
    """A center from before `POST /v1/files/checksums` answers 404 there: the client asks
    path by path from then on (a real center cannot be made older, hence respx)."""
    batched = respx_mock.post("/v1/files/checksums").respond(
        404, json={"error": {"code": "not_found", "message": "Not Found", "request_id": "r"}}
    )

    def one(request: httpx.Request) -> httpx.Response:
        path = request.url.params["path"]
        if path == "gone":
            error = {"code": "not_found", "message": "no such file", "request_id": "r"}
            return httpx.Response(404, json={"error": error})
        return httpx.Response(200, json={"path": path, "size": 1, "sha256": "ab" * 32})

    single = respx_mock.get("/v1/files/checksum").mock(side_effect=one)
    with CenterClient("https://center.test", max_retries=0) as client:
        checksums = FileChecksumsClient(client)
        assert checksums(["a", "gone"]) == {"a": "ab" * 32, "gone": None}
        assert checksums(["b"]) == {"b": "ab" * 32}
    assert batched.call_count == 1 and single.call_count == 3


def test_engine_verifies_a_batch_with_one_call(
    ssh_env: SshEnv, remote_dir: Remote, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A host without exec: the push asks the center's checksums once per batch of files."""
    monkeypatch.setattr(SftpConnection, "exec", lambda self, command, **_kw: (-1, b"", b""))
    name, view = remote_dir
    src = tmp_path / "src"
    src.mkdir()
    for i in range(200):
        (src / f"f{i:03d}").write_bytes(os.urandom(500 + i))
    calls: list[list[str]] = []

    def checksums(paths: Sequence[str]) -> dict[str, str | None]:
        calls.append(list(paths))
        return {p: hashlib.sha256((view.parent / p).read_bytes()).hexdigest() for p in paths}

    result = push(ssh_env.target(), [str(src)], name, checksums_fn=checksums)
    assert result.files_transferred == 200 and not result.failures and result.verified
    assert sorted(p for call in calls for p in call) == sorted(
        part_name(f"{name}/f{i:03d}") for i in range(200)
    )
    assert len(calls) <= 200 // workers.BATCH_FILES + 1 + 3  # per batch, not per file
