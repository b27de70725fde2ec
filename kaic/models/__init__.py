"""Wire models shared by the client and the reference center (pydantic v2 + stdlib only)."""

from kaic.models.auth import (
    SCOPES,
    ApiTokenCreate,
    ApiTokenCreated,
    ApiTokenInfo,
    Me,
    ProjectInfo,
    ProjectRef,
    RevokeRequest,
    TokenRequest,
    TokenResponse,
)
from kaic.models.common import ErrorBody, ErrorResponse, Health
from kaic.models.states import TERMINAL_STATES, JobState, is_terminal

__all__ = [
    "SCOPES",
    "TERMINAL_STATES",
    "ApiTokenCreate",
    "ApiTokenCreated",
    "ApiTokenInfo",
    "ErrorBody",
    "ErrorResponse",
    "Health",
    "JobState",
    "Me",
    "ProjectInfo",
    "ProjectRef",
    "RevokeRequest",
    "TokenRequest",
    "TokenResponse",
    "is_terminal",
]
