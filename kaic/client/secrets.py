"""The secrets area of the center API: set, list and remove a user's secrets.

Values travel one way, in the body of a `PUT` (the request log of `KAIC_DEBUG` shows body
sizes only); no answer of the center carries one.
"""

from __future__ import annotations

from urllib.parse import quote

from kaic.client.api import CenterClient
from kaic.models import SecretInfo, SecretValue


class SecretsAPI:
    """`PUT/GET/DELETE /v1/secrets[/{name}]` of one center."""

    def __init__(self, client: CenterClient) -> None:
        self.client = client

    def set(self, name: str, value: str) -> SecretInfo:
        """`PUT /v1/secrets/{name}`: set or replace the secret. The value is validated
        before anything is sent (pydantic's ValidationError: call this inside
        `kaic.flows.inputs.user_input`)."""
        body = SecretValue(value=value)
        response = self.client.request("PUT", _path(name), json=body.model_dump(mode="json"))
        return self.client.parse(response, SecretInfo)

    def all(self) -> list[SecretInfo]:
        """`GET /v1/secrets`: the user's secrets, names and dates only."""
        return self.client.parse_list(self.client.request("GET", "/v1/secrets"), SecretInfo)

    def remove(self, name: str) -> None:
        """`DELETE /v1/secrets/{name}`."""
        self.client.request("DELETE", _path(name)).close()


def _path(name: str) -> str:
    return f"/v1/secrets/{quote(name, safe='')}"
