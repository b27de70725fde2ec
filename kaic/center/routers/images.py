"""`GET /v1/images`: the center's image catalogue (what a job's `image:` may name)."""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import APIRouter, Depends

from kaic.center.containers.catalogue import CatalogueError, image_info, load_catalogue
from kaic.center.deps import Principal, SettingsDep, require_scope
from kaic.center.errors import ApiError
from kaic.models import ErrorResponse, ImageInfo

logger = logging.getLogger("kaic.center.images")

router = APIRouter(
    prefix="/v1",
    tags=["resources"],
    responses={401: {"model": ErrorResponse}, 403: {"model": ErrorResponse}},
)


@router.get("/images", response_model=list[ImageInfo], responses={503: {"model": ErrorResponse}})
def list_images(
    principal: Annotated[Principal, Depends(require_scope("jobs:read"))], settings: SettingsDep
) -> list[ImageInfo]:
    """The images the center offers: name, tag, format, size and what each contains. A job
    may also name an image on the user's own storage by its path (`~/images/NAME`)."""
    try:
        entries = load_catalogue(settings.images)
    except CatalogueError as exc:
        logger.warning("image catalogue: %s", exc)  # the operator's paths stay in the log
        raise ApiError(
            503, "unavailable", "the center's image catalogue cannot be read; tell its operator"
        ) from None
    return [image_info(entry) for entry in entries]
