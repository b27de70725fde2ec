"""The center's image catalogue: what `GET /v1/images` answers and `kaic images` shows
(ARCHITECTURE.md "Containers").

A job's `image:` is a name from this catalogue (`NAME` or `NAME:TAG`) or a path on the user's
center storage; the catalogue is the operator's (`kaic center serve --images`).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

#: how an image is stored: an unpacked root filesystem (a directory), an Apptainer SIF file, a
#: squashfs file (enroot), or a registry reference that the runtime pulls itself (pyxis)
ImageFormat = Literal["rootfs", "sif", "squashfs", "registry"]


class ImageInfo(BaseModel):
    """One image the center offers."""

    name: str = Field(description="what a job file's `image:` names (also `NAME:TAG`)")
    tag: str | None = None
    format: ImageFormat
    size_bytes: int | None = Field(None, description="on disk; None for a registry reference")
    description: str | None = Field(None, description="what it contains (CUDA, NCCL, …)")

    @property
    def reference(self) -> str:
        """`NAME:TAG`, or `NAME` for an untagged image."""
        return f"{self.name}:{self.tag}" if self.tag else self.name
