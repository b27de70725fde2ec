"""The staging area of the center API: where and as whom to log in over SFTP
(`GET /v1/staging`), an SSH certificate for the user's key (`POST /v1/ssh/certificates`), and
server-side checksums of files in the caller's storage.

Checksums are how a transfer is verified on a staging host that runs no commands (the
embedded SFTP endpoint has no exec): `FileChecksumsClient` asks `POST /v1/files/checksums`
for up to `MAX_CHECKSUM_PATHS` files per request — one request per file cost 85 % of a
1,000-file push — and falls back to `GET /v1/files/checksum` per file against a center that
predates the batched route.
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
    SshCertificate,
    SshCertificateRequest,
    StagingInfo,
)

#: what to do about a center without data staging: the user asks, the operator switches it on
NO_STAGING_HINT = (
    "ask your center's operators to offer data staging; operators: start the center "
    "without --no-staging (it then serves storage over SFTP itself), or with "
    "--staging-host HOST pointing at the cluster's sshd"
)


class StagingAPI:
    """`GET /v1/staging`, `POST /v1/ssh/certificates` and the checksums of one center."""

    def __init__(self, client: CenterClient) -> None:
        self.client = client

    def info(self) -> StagingInfo:
        """`GET /v1/staging` (NotFound, saying how to get one, when the center has no staging
        endpoint)."""
        try:
            return self.client.parse(self.client.request("GET", "/v1/staging"), StagingInfo)
        except NotFound as exc:
            raise NotFound(
                "this center offers no data staging (no staging endpoint)",
                hint=NO_STAGING_HINT,
                code=exc.code,
            ) from exc

    def request_certificate(self, public_line: str) -> SshCertificate:
        """`POST /v1/ssh/certificates`: the center signs `public_line` (an OpenSSH public
        key) for the caller's unix account."""
        body = SshCertificateRequest(public_key=public_line)
        response = self.client.request(
            "POST", "/v1/ssh/certificates", json=body.model_dump(mode="json", exclude_none=True)
        )
        return self.client.parse(response, SshCertificate)

    def checksums(self) -> FileChecksumsClient:
        """`paths -> {path: sha256 or None}`, batched (see `FileChecksumsClient`)."""
        return FileChecksumsClient(self.client)


def staging_info(client: CenterClient) -> StagingInfo:
    """`StagingAPI(client).info()`."""
    return StagingAPI(client).info()


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
