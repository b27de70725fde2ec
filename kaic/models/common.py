"""Models every endpoint shares: the error shape and health."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field


class ErrorBody(BaseModel):
    code: str = Field(description="machine-readable error code, e.g. `invalid_credentials`")
    message: str
    request_id: str


class ErrorResponse(BaseModel):
    """The one error shape of the center API."""

    error: ErrorBody


class Health(BaseModel):
    status: Literal["ok", "degraded"] = Field(
        "ok", description="`degraded`: the center cannot reach its batch system right now"
    )
    detail: str | None = Field(None, description="what is wrong when `degraded`")
    version: str
    executor: str
    instance_id: str = Field(description="random id of this server process")
    local: bool = Field(False, description="true for an embedded local center")
