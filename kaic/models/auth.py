"""Authentication and identity models."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from kaic.models.limits import MAX_SECRET_LENGTH, NameText

#: API-token scopes; a session token (password login) has all of them. `jobs:exec`: open
#: interactive sessions in running jobs (`kaic exec`, `shell`, `forward`). `secrets:read`:
#: list the names of the user's secrets; `secrets:write`: set and remove them (values are
#: never readable through the API, whatever the scope).
SCOPES: tuple[str, ...] = (
    "jobs:read",
    "jobs:write",
    "files",
    "jobs:exec",
    "secrets:read",
    "secrets:write",
)


class TokenRequest(BaseModel):
    """`POST /v1/auth/token`: a password (+OTP) grant or a refresh grant."""

    # The schema says what the center requires of each grant (it answers 422 otherwise).
    model_config = ConfigDict(
        json_schema_extra={
            "allOf": [
                {
                    "if": {"properties": {"grant_type": {"const": "password"}}},
                    "then": {
                        "required": ["username", "password"],
                        "properties": {
                            "username": {"type": "string", "minLength": 1},
                            "password": {"type": "string"},
                        },
                    },
                },
                {
                    "if": {"properties": {"grant_type": {"const": "refresh_token"}}},
                    "then": {
                        "required": ["refresh_token"],
                        "properties": {"refresh_token": {"type": "string", "minLength": 1}},
                    },
                },
            ]
        }
    )

    grant_type: Literal["password", "refresh_token"]
    username: NameText | None = None
    password: str | None = Field(None, max_length=MAX_SECRET_LENGTH)
    otp: str | None = Field(
        None, max_length=16, description="6-digit TOTP code when the user has OTP enabled"
    )
    refresh_token: str | None = Field(None, max_length=MAX_SECRET_LENGTH)


class TokenResponse(BaseModel):
    access_token: str
    refresh_token: str
    token_type: Literal["bearer"] = "bearer"
    expires_in: int = Field(description="seconds the access token stays valid")
    expires_at: datetime


class RevokeRequest(BaseModel):
    """`POST /v1/auth/revoke`: revoke a refresh token's family (logout)."""

    refresh_token: str | None = Field(None, max_length=MAX_SECRET_LENGTH)


class ProjectRef(BaseModel):
    name: str
    role: Literal["member", "owner"] = "member"


class Me(BaseModel):
    user: str
    unix_account: str
    projects: list[ProjectRef] = []
    token_kind: Literal["session", "api", "local"] = "session"
    scopes: list[str] = []
    expires_at: datetime | None = None


class ApiTokenCreate(BaseModel):
    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    scopes: list[Annotated[str, Field(max_length=64)]] = Field(
        default_factory=lambda: list(SCOPES), max_length=16
    )
    expires_in_days: int = Field(30, ge=1, le=366)


class ApiTokenInfo(BaseModel):
    id: str
    name: str
    scopes: list[str]
    created_at: datetime
    expires_at: datetime
    last_used_at: datetime | None = None
    revoked: bool = False


class ApiTokenCreated(ApiTokenInfo):
    token: str = Field(description="the secret, shown once; starts with `kaic_`")


class ProjectInfo(BaseModel):
    """`GET /v1/projects`: a project's GPU-hour allocation."""

    name: str
    gpu_hours_granted: float
    gpu_hours_used: float
    gpu_hours_remaining: float
