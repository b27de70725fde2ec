"""The auth area of the center API: token grants, revocation, who the token belongs to.

(The refresh grant behind a transparent refresh after 401 is the transport's own business:
`CenterClient._refresh_grant`.)
"""

from __future__ import annotations

from typing import Any

from kaic.auth.credentials import Credentials
from kaic.client.api import CenterClient
from kaic.models import Me, RevokeRequest, TokenRequest, TokenResponse


class AuthAPI:
    """`POST /v1/auth/token`, `POST /v1/auth/revoke`, `GET /v1/me` of one center."""

    def __init__(self, client: CenterClient) -> None:
        self.client = client

    def login_password(self, username: str, password: str, otp: str | None = None) -> TokenResponse:
        """Password (+ OTP) grant. On success the client uses the new session credentials.

        401 codes: ``invalid_credentials``, ``otp_required`` (ask for a code and try again);
        429 ``rate_limited`` raises RateLimited with `retry_after`. Never retried. What the
        user typed is validated here (pydantic's ValidationError: call this inside
        `kaic.flows.inputs.user_input`, which names the flag).
        """
        grant = TokenRequest(grant_type="password", username=username, password=password, otp=otp)
        response = self.client.request(
            "POST", "/v1/auth/token", json=grant.model_dump(exclude_none=True), auth=False
        )
        granted = self.client.parse(response, TokenResponse)
        self.client.credentials = Credentials.from_token_response(granted)
        return granted

    def revoke(self, refresh_token: str | None = None) -> None:
        """`POST /v1/auth/revoke`: end the session (the refresh token's family).

        Without an argument, revokes the session of the client's own credentials — also when
        the request needed a transparent refresh first (then the rotated token is sent).
        """
        client = self.client
        original = client.credentials.refresh_token if client.credentials else None

        def body() -> dict[str, Any]:
            token = refresh_token
            if token is None or token == original:
                token = client.credentials.refresh_token if client.credentials else refresh_token
            return RevokeRequest(refresh_token=token).model_dump(exclude_none=True)

        client.request("POST", "/v1/auth/revoke", body=body).close()

    def me(self) -> Me:
        """`GET /v1/me`: who the token belongs to."""
        return self.client.parse(self.client.request("GET", "/v1/me"), Me)
