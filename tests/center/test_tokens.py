"""`/v1/tokens`: API tokens are shown once, stored hashed, scoped, expiring, per-user."""

from __future__ import annotations

import hashlib
import sqlite3

from .conftest import Center, assert_error, bearer


def _session(center: Center, user: str = "alice") -> dict[str, str]:
    return bearer(center.login(user)["access_token"])


def _create(center: Center, headers: dict[str, str], **body: object) -> dict[str, object]:
    response = center.client.post("/v1/tokens", json={"name": "ci", **body}, headers=headers)
    assert response.status_code == 201, response.text
    created: dict[str, object] = response.json()
    return created


def test_create_list_revoke(center: Center) -> None:
    headers = _session(center)
    created = _create(center, headers, scopes=["jobs:read"], expires_in_days=7)
    token = str(created["token"])
    assert token.startswith("kaic_")
    assert str(created["id"]).startswith("tok_") and len(str(created["id"])) == 12
    assert created["scopes"] == ["jobs:read"]
    assert created["revoked"] is False

    center.clock.advance(1)
    newer = _create(center, headers, name="nightly")
    listed = center.client.get("/v1/tokens", headers=headers).json()
    assert [t["id"] for t in listed] == [newer["id"], created["id"]]  # newest first
    assert all("token" not in t for t in listed)  # the secret is shown once only

    me = center.client.get("/v1/me", headers=bearer(token)).json()
    assert me["token_kind"] == "api"
    assert me["scopes"] == ["jobs:read"]
    listed = center.client.get("/v1/tokens", headers=headers).json()
    assert listed[1]["last_used_at"] is not None

    assert center.client.delete(f"/v1/tokens/{created['id']}", headers=headers).status_code == 204
    error = assert_error(center.client.get("/v1/me", headers=bearer(token)), 401, "invalid_token")
    assert "revoked" in error["message"]
    listed = center.client.get("/v1/tokens", headers=headers).json()
    assert [t["revoked"] for t in listed] == [False, True]


def test_only_the_hash_is_stored(center: Center) -> None:
    created = _create(center, _session(center))
    token = str(created["token"])
    db = center.settings.state_dir / "center.db"
    with sqlite3.connect(db) as conn:
        stored = conn.execute(
            "SELECT token_hash FROM access_tokens WHERE id = ?", (created["id"],)
        ).fetchone()[0]
    assert stored == hashlib.sha256(token.encode()).hexdigest()
    # Not anywhere in the database files, write-ahead log included.
    for path in center.settings.state_dir.iterdir():
        assert token.encode() not in path.read_bytes(), path


def test_expired_api_token_is_refused(center: Center) -> None:
    token = str(_create(center, _session(center), expires_in_days=1)["token"])
    center.clock.advance(86400)
    error = assert_error(center.client.get("/v1/me", headers=bearer(token)), 401, "invalid_token")
    assert "expired" in error["message"]


def test_unknown_scope_is_rejected(center: Center) -> None:
    response = center.client.post(
        "/v1/tokens", json={"name": "ci", "scopes": ["jobs:read", "root"]}, headers=_session(center)
    )
    error = assert_error(response, 422, "invalid_request")
    assert "root" in error["message"]


def test_empty_scopes_are_rejected(center: Center) -> None:
    response = center.client.post(
        "/v1/tokens", json={"name": "ci", "scopes": []}, headers=_session(center)
    )
    assert_error(response, 422, "invalid_request")


def test_bad_name_names_the_field(center: Center) -> None:
    response = center.client.post(
        "/v1/tokens", json={"name": "no spaces"}, headers=_session(center)
    )
    error = assert_error(response, 422, "invalid_request")
    assert "body.name" in error["message"]


def test_scopes_gate_endpoints(center: Center) -> None:
    headers = _session(center)
    reader = str(_create(center, headers, name="reader", scopes=["jobs:read"])["token"])
    files_only = str(_create(center, headers, name="files", scopes=["files"])["token"])

    projects = center.client.get("/v1/projects", headers=bearer(reader))
    assert projects.status_code == 200
    assert [p["name"] for p in projects.json()] == ["ai-2026-0042"]

    error = assert_error(
        center.client.get("/v1/projects", headers=bearer(files_only)), 403, "insufficient_scope"
    )
    assert "jobs:read" in error["message"]


def test_api_tokens_cannot_manage_tokens(center: Center) -> None:
    headers = _session(center)
    created = _create(center, headers)
    api = bearer(str(created["token"]))
    assert_error(
        center.client.post("/v1/tokens", json={"name": "x"}, headers=api), 403, "insufficient_scope"
    )
    assert_error(center.client.get("/v1/tokens", headers=api), 403, "insufficient_scope")
    assert_error(
        center.client.delete(f"/v1/tokens/{created['id']}", headers=api), 403, "insufficient_scope"
    )


def test_other_users_tokens_are_invisible(center: Center) -> None:
    alice = _session(center, "alice")
    bob = _session(center, "bob")
    created = _create(center, alice)
    foreign = assert_error(
        center.client.delete(f"/v1/tokens/{created['id']}", headers=bob), 404, "not_found"
    )
    unknown = assert_error(
        center.client.delete("/v1/tokens/tok_zzzzzzzz", headers=bob), 404, "not_found"
    )
    assert foreign["message"].replace(str(created["id"]), "ID") == unknown["message"].replace(
        "tok_zzzzzzzz", "ID"
    )
    assert center.client.get("/v1/tokens", headers=bob).json() == []
    # Still alive for its owner.
    assert center.client.get("/v1/me", headers=bearer(str(created["token"]))).status_code == 200


def test_session_tokens_do_not_appear_as_api_tokens(center: Center) -> None:
    headers = _session(center)
    assert center.client.get("/v1/tokens", headers=headers).json() == []
    session_id = None
    with sqlite3.connect(center.settings.state_dir / "center.db") as conn:
        session_id = conn.execute("SELECT id FROM access_tokens WHERE kind = 'session'").fetchone()[
            0
        ]
    assert_error(
        center.client.delete(f"/v1/tokens/{session_id}", headers=headers), 404, "not_found"
    )
