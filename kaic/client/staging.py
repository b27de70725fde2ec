"""Server-side checksums of files in the caller's storage: how a transfer is verified on a
staging host that runs no commands (the embedded SFTP endpoint has no exec).

`FileChecksums` asks `POST /v1/files/checksums` for up to `MAX_CHECKSUM_PATHS` files per
request — one request per file cost 85 % of a 1,000-file push — and falls back to
`GET /v1/files/checksum` per file against a center that predates the batched route.
"""

from __future__ import annotations

from collections.abc import Sequence

from kaic.client.api import CenterClient
from kaic.errors import NotFound
from kaic.models.staging import (
    MAX_CHECKSUM_PATHS,
    FileChecksum,
    FileChecksums,
    FileChecksumsRequest,
)


def file_checksum(client: CenterClient, path: str) -> str | None:
    """sha256 of one file (`GET /v1/files/checksum`); None when the center has none."""
    try:
        response = client.request("GET", "/v1/files/checksum", params={"path": path})
    except NotFound:
        return None
    return client.parse(response, FileChecksum).sha256


class FileChecksumsClient:
    """`paths -> {path: sha256 or None}` over the center API, batched (see module doc).

    None for a path means the center has no checksum for it (missing, not a regular file,
    outside the caller's storage); transport failures raise `Unreachable` as usual.
    """

    def __init__(self, client: CenterClient, *, batch: int = MAX_CHECKSUM_PATHS):
        self.client = client
        self.batch = max(1, min(batch, MAX_CHECKSUM_PATHS))
        #: False once the center answered that it has no batched route
        self.batched = True

    def __call__(self, paths: Sequence[str]) -> dict[str, str | None]:
        result: dict[str, str | None] = {}
        for start in range(0, len(paths), self.batch):
            chunk = list(paths[start : start + self.batch])
            if self.batched:
                try:
                    result.update(self._batch(chunk))
                    continue
                except NotFound:  # an older center: no such route
                    self.batched = False
            result.update({path: file_checksum(self.client, path) for path in chunk})
        return result

    def _batch(self, paths: list[str]) -> dict[str, str | None]:
        body = FileChecksumsRequest(paths=paths).model_dump(mode="json")
        response = self.client.request("POST", "/v1/files/checksums", json=body)
        answer = self.client.parse(response, FileChecksums)
        return {r.path: r.sha256 for r in answer.results}
