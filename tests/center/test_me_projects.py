"""`GET /v1/me` and `GET /v1/projects`."""

from __future__ import annotations

from datetime import timedelta

from kaic.center.admin import add_project

from .conftest import Center, assert_error, bearer


def test_me_reports_the_token(center: Center) -> None:
    tokens = center.login("bob")
    me = center.client.get("/v1/me", headers=bearer(tokens["access_token"])).json()
    assert me["user"] == "bob"
    assert me["unix_account"] == "bob"
    assert me["projects"] == []
    assert me["expires_at"].startswith(
        (center.clock() + timedelta(seconds=900)).strftime("%Y-%m-%dT%H:%M:%S")
    )


def test_projects_lists_only_the_callers(center: Center) -> None:
    add_project(center.settings.state_dir, "other", gpu_hours=5, members=["bob"])
    add_project(center.settings.state_dir, "shared", gpu_hours=2.5, members=["alice", "bob"])
    headers = bearer(center.login("alice")["access_token"])
    projects = center.client.get("/v1/projects", headers=headers).json()
    assert projects == [
        {
            "name": "ai-2026-0042",
            "gpu_hours_granted": 100.0,
            "gpu_hours_used": 0.0,
            "gpu_hours_remaining": 100.0,
        },
        {
            "name": "shared",
            "gpu_hours_granted": 2.5,
            "gpu_hours_used": 0.0,
            "gpu_hours_remaining": 2.5,
        },
    ]


def test_projects_needs_a_token(center: Center) -> None:
    assert_error(center.client.get("/v1/projects"), 401, "invalid_token")


def test_garbage_and_refresh_tokens_are_not_bearer_tokens(center: Center) -> None:
    tokens = center.login()
    for value in ("kaa_nonsense", tokens["refresh_token"]):
        response = center.client.get("/v1/me", headers=bearer(value))
        error = assert_error(response, 401, "invalid_token")
        assert "revoked" in error["message"]
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
    response = center.client.get("/v1/me", headers={"Authorization": "Basic YWxpY2U6eA=="})
    assert_error(response, 401, "invalid_token")
