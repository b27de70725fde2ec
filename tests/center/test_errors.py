"""The one error shape and X-Request-ID on every response."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from .conftest import Center, assert_error


def test_success_carries_a_request_id(center: Center) -> None:
    first = center.client.get("/v1/health")
    second = center.client.get("/v1/health")
    assert first.status_code == 200
    assert first.headers["X-Request-ID"] != second.headers["X-Request-ID"]


def test_sane_incoming_request_id_is_echoed(center: Center) -> None:
    response = center.client.get("/v1/health", headers={"X-Request-ID": "ci-run.42:7"})
    assert response.headers["X-Request-ID"] == "ci-run.42:7"
    error = assert_error(
        center.client.get("/v1/me", headers={"X-Request-ID": "abc-123"}), 401, "invalid_token"
    )
    assert error["request_id"] == "abc-123"


def test_odd_incoming_request_id_is_replaced(center: Center) -> None:
    for odd in ("x" * 65, "a b", "<script>", ""):
        response = center.client.get("/v1/health", headers={"X-Request-ID": odd})
        assert response.headers["X-Request-ID"] not in {odd, ""}


def test_401_shape(center: Center) -> None:
    response = center.client.get("/v1/me")
    error = assert_error(response, 401, "invalid_token")
    assert "missing" in error["message"]
    assert response.headers["WWW-Authenticate"] == "Bearer"


def test_404_shape_for_unknown_route(center: Center) -> None:
    error = assert_error(center.client.get("/v1/nope"), 404, "not_found")
    assert "/v1/nope" in error["message"]


def test_405_shape(center: Center) -> None:
    response = center.client.delete("/v1/health")
    assert_error(response, 405, "method_not_allowed")
    assert "GET" in response.headers["Allow"]


def test_422_shape_names_the_field(center: Center) -> None:
    error = assert_error(
        center.client.post("/v1/auth/token", json={"username": "alice"}), 422, "invalid_request"
    )
    assert "grant_type" in error["message"]
    error = assert_error(
        center.client.post(
            "/v1/auth/token", content=b"{not json", headers={"Content-Type": "application/json"}
        ),
        422,
        "invalid_request",
    )
    assert "body" in error["message"]


def test_500_shape_hides_the_traceback(center: Center, caplog: pytest.LogCaptureFixture) -> None:
    def boom() -> None:
        raise RuntimeError("secret internal detail")

    center.app.add_api_route("/v1/test-boom", boom, methods=["GET"])
    client = TestClient(center.app, raise_server_exceptions=False)
    response = client.get("/v1/test-boom")
    error = assert_error(response, 500, "internal")
    assert "secret internal detail" not in response.text
    assert "Traceback" not in response.text
    assert error["request_id"] in error["message"]
    # The detail goes to the server log instead, tagged with the request id.
    logged = [r for r in caplog.records if r.name == "kaic.center" and r.exc_info]
    assert logged and error["request_id"] in logged[-1].getMessage()


def test_health(center: Center) -> None:
    body = center.client.get("/v1/health").json()
    assert body["status"] == "ok"
    assert body["executor"] == "local"
    assert body["local"] is False
    assert body["instance_id"] == center.app.state.instance_id


def test_openapi_document_builds(center: Center) -> None:
    paths = center.client.get("/openapi.json").json()["paths"]
    assert {"/v1/health", "/v1/auth/token", "/v1/me", "/v1/tokens", "/v1/projects"} <= set(paths)
