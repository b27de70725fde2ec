"""The images area of the center API: the center's image catalogue."""

from __future__ import annotations

from kaic.client.api import CenterClient
from kaic.models import ImageInfo


class ImagesAPI:
    """`GET /v1/images` of one center."""

    def __init__(self, client: CenterClient) -> None:
        self.client = client

    def all(self) -> list[ImageInfo]:
        """`GET /v1/images`: the images a job's `image:` may name."""
        return self.client.parse_list(self.client.request("GET", "/v1/images"), ImageInfo)
