"""`POST /v1/files/checksums`: many files' sha256 in one call, with the single route's rules."""

from __future__ import annotations

import contextlib
import hashlib
import os
from pathlib import Path

import pytest

from kaic.models.staging import MAX_CHECKSUM_PATHS

from .conftest import Center, assert_error, bearer


def _session(center: Center, user: str = "alice") -> dict[str, str]:
    return bearer(center.login(user)["access_token"])


def _home(center: Center, user: str) -> Path:
    home = center.settings.state_dir / "storage" / user
    home.mkdir(parents=True, exist_ok=True)
    return home


def _checksums(center: Center, paths: list[str], user: str = "alice") -> list[dict[str, object]]:
    response = center.client.post(
        "/v1/files/checksums", json={"paths": paths}, headers=_session(center, user)
    )
    assert response.status_code == 200, response.text
    results: list[dict[str, object]] = response.json()["results"]
    return results


def test_checksums_in_request_order(center: Center) -> None:
    home = _home(center, "alice")
    (home / "data").mkdir()
    for name in ("a", "b", "c"):
        (home / "data" / f"{name}.bin").write_bytes(name.encode() * 100)
    paths = ["data/c.bin", "~/data/a.bin", str(home / "data" / "b.bin"), "data/a.bin"]
    results = _checksums(center, paths)
    assert [r["path"] for r in results] == paths
    for result, name in zip(results, "caba", strict=True):
        assert result == {
            "path": result["path"],
            "size": 100,
            "sha256": hashlib.sha256(name.encode() * 100).hexdigest(),
            "error": None,
        }


def test_per_path_errors_leave_the_others_alone(center: Center) -> None:
    home = _home(center, "alice")
    (home / "dir").mkdir()
    (home / "ok.txt").write_text("ok\n")
    results = _checksums(center, ["missing.txt", "dir", "ok.txt"])
    assert results[0]["error"] == {
        "code": "not_found",
        "message": "no such file in your storage: missing.txt",
    }
    assert results[1]["error"] == {"code": "invalid_request", "message": "not a regular file: dir"}
    assert results[0]["sha256"] is None and results[1]["sha256"] is None
    assert results[2]["sha256"] == hashlib.sha256(b"ok\n").hexdigest()
    assert results[2]["error"] is None


def test_confinement_and_other_users_files(center: Center, tmp_path: Path) -> None:
    alice_home = _home(center, "alice")
    bob_home = _home(center, "bob")
    (bob_home / "bobs.txt").write_text("bob's\n")
    (alice_home / "to-bob").symlink_to(bob_home / "bobs.txt")
    (alice_home / "to-etc").symlink_to("/etc")
    (alice_home / "mine.txt").write_text("mine\n")
    hostile = [
        str(bob_home / "bobs.txt"),
        "../bob/bobs.txt",
        "..",
        "to-bob",
        "to-etc/passwd",
        "/etc/passwd",
        "~bob/bobs.txt",
        "missing.txt",
    ]
    results = _checksums(center, [*hostile, "mine.txt"])
    # Outside and missing read the same: the answer says nothing about what exists elsewhere.
    for path, result in zip(hostile, results, strict=False):
        assert result["sha256"] is None and result["size"] is None, path
        assert result["error"] == {
            "code": "not_found",
            "message": f"no such file in your storage: {path}",
        }, path
    assert results[-1]["sha256"] == hashlib.sha256(b"mine\n").hexdigest()
    # Bob sees his own file, and not alice's.
    bobs = _checksums(center, ["bobs.txt", str(alice_home / "mine.txt")], user="bob")
    assert bobs[0]["sha256"] == hashlib.sha256(b"bob's\n").hexdigest()
    assert bobs[1]["error"] == {
        "code": "not_found",
        "message": f"no such file in your storage: {alice_home / 'mine.txt'}",
    }


def test_bounded_count_and_malformed_requests(center: Center) -> None:
    home = _home(center, "alice")
    (home / "f").write_text("f")
    headers = _session(center)
    full = center.client.post(
        "/v1/files/checksums", json={"paths": ["f"] * MAX_CHECKSUM_PATHS}, headers=headers
    )
    assert full.status_code == 200 and len(full.json()["results"]) == MAX_CHECKSUM_PATHS
    for body in (
        {"paths": ["f"] * (MAX_CHECKSUM_PATHS + 1)},
        {"paths": []},
        {"paths": [""]},
        {"paths": ["x" * 5000]},
        {"paths": "f"},
        {},
    ):
        response = center.client.post("/v1/files/checksums", json=body, headers=headers)
        assert response.status_code in (413, 422), (body, response.text)
        assert_error(response, response.status_code, response.json()["error"]["code"])


@pytest.mark.parametrize("path", ["with\0nul"])
def test_nul_is_a_per_path_error(center: Center, path: str) -> None:
    _home(center, "alice")
    (result,) = _checksums(center, [path])
    assert result["error"] is not None and result["sha256"] is None


def test_scope_and_auth(center: Center) -> None:
    response = center.client.post("/v1/files/checksums", json={"paths": ["x"]})
    assert_error(response, 401, "invalid_token")
    created = center.client.post(
        "/v1/tokens", json={"name": "ci", "scopes": ["jobs:read"]}, headers=_session(center)
    )
    reader = bearer(created.json()["token"])
    response = center.client.post("/v1/files/checksums", json={"paths": ["x"]}, headers=reader)
    assert_error(response, 403, "insufficient_scope")


def test_a_link_to_a_name_that_is_not_utf8(center: Center) -> None:
    # JSON cannot carry the name the link leads to: the answer names the path asked for
    # (it used to fail the whole response, an internal error).
    home = _home(center, "alice")
    name = os.path.join(os.fsencode(home), b"caf\xe9")
    with open(name, "wb") as handle:
        handle.write(b"latin-1\n")
    os.symlink(b"caf\xe9", os.path.join(os.fsencode(home), b"link"))
    single = center.client.get(
        "/v1/files/checksum", params={"path": "link"}, headers=_session(center)
    )
    assert single.status_code == 200, single.text
    assert single.json() == {
        "path": str(home / "link"),
        "size": 8,
        "sha256": hashlib.sha256(b"latin-1\n").hexdigest(),
    }
    (result,) = _checksums(center, ["link"])
    assert result["sha256"] == hashlib.sha256(b"latin-1\n").hexdigest()


def test_a_user_hashing_at_their_limit_is_told_to_come_back(center: Center) -> None:
    # Hashing holds a server thread while it reads: one user's many requests could hold
    # them all. Over the per-user limit the answer is 429 at once; others are unaffected.
    (_home(center, "alice") / "a.bin").write_bytes(b"a")
    (_home(center, "bob") / "b.bin").write_bytes(b"b")
    slots = center.app.state.hashing_slots
    with contextlib.ExitStack() as held:
        for _ in range(slots.per_user):  # requests of alice's in flight
            assert held.enter_context(slots.slot("alice"))
        response = center.client.get(
            "/v1/files/checksum", params={"path": "a.bin"}, headers=_session(center)
        )
        assert_error(response, 429, "rate_limited")
        assert response.headers["Retry-After"] == "1"
        response = center.client.post(
            "/v1/files/checksums", json={"paths": ["a.bin"]}, headers=_session(center)
        )
        assert_error(response, 429, "rate_limited")
        response = center.client.get(
            "/v1/files/checksum", params={"path": "b.bin"}, headers=_session(center, "bob")
        )
        assert response.status_code == 200, response.text
    response = center.client.get(
        "/v1/files/checksum", params={"path": "a.bin"}, headers=_session(center)
    )
    assert response.json()["sha256"] == hashlib.sha256(b"a").hexdigest()
