"""The API-token area of the center API: named, scoped, expiring tokens for CI."""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import quote

from kaic.client.api import CenterClient
from kaic.models import ApiTokenCreate, ApiTokenCreated, ApiTokenInfo


class TokensAPI:
    """`POST/GET/DELETE /v1/tokens` of one center."""

    def __init__(self, client: CenterClient) -> None:
        self.client = client

    def create(
        self, name: str, scopes: Iterable[str], expires_in_days: int = 30
    ) -> ApiTokenCreated:
        """`POST /v1/tokens`: a named, scoped, expiring API token; its secret is in the answer
        and only there. The request is validated before anything is sent (pydantic's
        ValidationError: call this inside `kaic.flows.inputs.user_input`, which names the
        flag)."""
        spec = ApiTokenCreate(name=name, scopes=list(scopes), expires_in_days=expires_in_days)
        response = self.client.request("POST", "/v1/tokens", json=spec.model_dump(mode="json"))
        return self.client.parse(response, ApiTokenCreated)

    def all(self) -> list[ApiTokenInfo]:
        """`GET /v1/tokens`: the user's API tokens (never their secrets)."""
        return self.client.parse_list(self.client.request("GET", "/v1/tokens"), ApiTokenInfo)

    def revoke(self, token_id: str) -> None:
        """`DELETE /v1/tokens/{id}`."""
        self.client.request("DELETE", f"/v1/tokens/{quote(token_id, safe='')}").close()
