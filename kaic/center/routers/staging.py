"""Data staging: where users' storage is reachable over SSH, user certificates, checksums.

All of them need the `files` scope. `GET /v1/staging` is how a client learns the staging
host's keys over the authenticated API (so no trust-on-first-use);
`POST /v1/ssh/certificates` signs the client's key for the caller's unix account;
`GET /v1/files/checksum` hashes a file inside the caller's storage root only, and
`POST /v1/files/checksums` does the same for up to `MAX_CHECKSUM_PATHS` files at once, each
path through the same `_checksums` and `_answer` (one confinement rule for both: the
storage root's, `kaic.center.storage`), read with the caller's rights (`kaic.center.files`).
"""

from __future__ import annotations

import logging
from datetime import timezone
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request

from kaic.center.accounts import is_center_account
from kaic.center.deps import Principal, SettingsDep, require_scope
from kaic.center.errors import ApiError
from kaic.center.files import Checksum, HashingSlots, checksums
from kaic.center.runas import UnixAccount
from kaic.center.settings import CenterSettings
from kaic.center.ssh_ca import ForbiddenPrincipal, UnacceptableKey, UserCA
from kaic.models import ErrorResponse
from kaic.models.staging import (
    MAX_CHECKSUM_PATH_LENGTH,
    FileChecksum,
    FileChecksumResult,
    FileChecksums,
    FileChecksumsRequest,
    PathError,
    SshCertificate,
    SshCertificateRequest,
    StagingInfo,
    StorageRoot,
)

router = APIRouter(
    prefix="/v1",
    tags=["staging"],
    responses={
        401: {"model": ErrorResponse},
        403: {"model": ErrorResponse, "description": "the token lacks the `files` scope"},
    },
)

logger = logging.getLogger("kaic.center")

FilesPrincipal = Annotated[Principal, Depends(require_scope("files"))]


def get_user_ca(request: Request) -> UserCA:
    """The app's SSH user CA."""
    ca: UserCA = request.app.state.user_ca
    return ca


UserCADep = Annotated[UserCA, Depends(get_user_ca)]


@router.get(
    "/staging",
    response_model=StagingInfo,
    responses={
        404: {"model": ErrorResponse, "description": "no staging endpoint"},
        503: {"model": ErrorResponse, "description": "the embedded endpoint is not running"},
    },
)
def staging(principal: FilesPrincipal, settings: SettingsDep, request: Request) -> StagingInfo:
    """How to reach the caller's storage over SSH/SFTP: host, port, host keys, roots."""
    endpoint = request.app.state.sftp_endpoint
    if endpoint is not None:
        # The embedded endpoint: its real port and host key, so clients pin the key.
        if endpoint.port is None:
            raise ApiError(503, "unavailable", "the embedded SFTP endpoint is not running")
        host, port, host_keys = endpoint.host, endpoint.port, [endpoint.host_key_line]
    elif settings.staging_host is not None:
        host, port = settings.staging_host, settings.staging_port
        host_keys = list(settings.staging_host_keys)
    else:
        raise ApiError(404, "not_found", "this center has no staging endpoint")
    root = settings.ensure_storage_root(principal.user, principal.unix_account)
    return StagingInfo(
        host=host,
        port=port,
        username=principal.unix_account,
        host_keys=host_keys,
        roots=[StorageRoot(name="home", path=str(root))],
        certificates=True,
    )


@router.post(
    "/ssh/certificates",
    status_code=201,
    response_model=SshCertificate,
    responses={
        403: {
            "model": ErrorResponse,
            "description": "the token lacks the `files` scope, or your unix account is root",
        },
        422: {"model": ErrorResponse, "description": "unacceptable public key"},
    },
)
def sign_certificate(
    body: SshCertificateRequest,
    principal: FilesPrincipal,
    settings: SettingsDep,
    ca: UserCADep,
) -> SshCertificate:
    """Sign the caller's OpenSSH public key: a short-lived user certificate whose only
    principal is the caller's unix account (ed25519, ECDSA or RSA >= 2048 bits); never
    for root."""
    validity = settings.ssh_cert_validity
    if body.validity_seconds is not None:
        validity = min(validity, body.validity_seconds)
    try:
        return ca.sign_user_key(
            body.public_key,
            user=principal.user,
            principal=principal.unix_account,
            now=settings.now().astimezone(timezone.utc),
            validity_seconds=validity,
            # The local center's own user is whoever runs it: a certificate as that account
            # (root, when kaic runs as root) gives it nothing it does not have.
            allow_root=principal.user == settings.local_user
            and is_center_account(principal.unix_account),
        )
    except UnacceptableKey as exc:
        raise ApiError(422, "invalid_request", f"public_key: {exc}") from None
    except ForbiddenPrincipal as exc:
        raise ApiError(403, "forbidden", str(exc)) from None


#: seconds a client waits before asking again when its hashing slots are all taken
_BUSY_RETRY_AFTER = 1


def get_hashing_slots(request: Request) -> HashingSlots:
    slots: HashingSlots = request.app.state.hashing_slots
    return slots


SlotsDep = Annotated[HashingSlots, Depends(get_hashing_slots)]


def _checksums(
    principal: Principal, settings: CenterSettings, slots: HashingSlots, paths: list[str]
) -> list[Checksum]:
    """The checksums of `paths` in the caller's storage root, read with the caller's rights:
    as the caller's unix account when the center runs jobs as users (an account that does
    not exist here can read nothing); 429 when the caller already hashes as much as a user
    may at once (`HashingSlots`)."""
    root = settings.storage_root_for(principal.user, principal.unix_account)
    account = None
    if settings.acts_as_users:
        try:
            account = UnixAccount.lookup(principal.unix_account)
        except LookupError as exc:
            logger.warning("checksums for %s refused: %s", principal.user, exc)
            return [Checksum(problem="not_found") for _ in paths]
    with slots.slot(principal.user) as granted:
        if not granted:
            raise ApiError(
                429,
                "rate_limited",
                f"too many checksum requests at once (at most {slots.per_user} per user); "
                "try again in a moment",
                headers={"Retry-After": str(_BUSY_RETRY_AFTER)},
            )
        return checksums(root, paths, account)


def _answer(path: str, found: Checksum) -> FileChecksum:
    """The wire form of one checksum; ApiError 404 when the file is missing, outside the
    root or unreadable to the caller (the same answer: never reveal what exists elsewhere),
    422 when it is not a regular file."""
    if found.problem == "not_a_file":
        raise ApiError(422, "invalid_request", f"not a regular file: {path}")
    if found.digest is None or found.shown is None:
        raise ApiError(404, "not_found", f"no such file in your storage: {path}")
    return FileChecksum(path=found.shown, size=found.digest.size, sha256=found.digest.sha256)


@router.get(
    "/files/checksum",
    response_model=FileChecksum,
    responses={
        404: {"model": ErrorResponse, "description": "no such file in your storage"},
        422: {"model": ErrorResponse, "description": "not a regular file"},
    },
)
def file_checksum(
    principal: FilesPrincipal,
    settings: SettingsDep,
    slots: SlotsDep,
    path: Annotated[
        str,
        Query(
            min_length=1,
            max_length=MAX_CHECKSUM_PATH_LENGTH,
            description="relative to your storage root (`~/…` too), or absolute inside it",
        ),
    ],
) -> FileChecksum:
    """sha256 and size of a file in the caller's storage, computed on the server."""
    # A sync route: FastAPI runs it in a worker thread, so hashing a large file does not
    # block the event loop.
    return _answer(path, _checksums(principal, settings, slots, [path])[0])


@router.post(
    "/files/checksums",
    response_model=FileChecksums,
    responses={422: {"model": ErrorResponse, "description": "no paths, or too many"}},
)
def file_checksums(
    body: FileChecksumsRequest, principal: FilesPrincipal, settings: SettingsDep, slots: SlotsDep
) -> FileChecksums:
    """sha256 and size of several files in the caller's storage (at most
    `MAX_CHECKSUM_PATHS`), each path judged exactly as `GET /v1/files/checksum` judges it.
    A path that fails gets its own `error`; the others are answered."""
    results = []
    answers = _checksums(principal, settings, slots, body.paths)
    for path, checksum in zip(body.paths, answers, strict=True):
        try:
            found = _answer(path, checksum)
        except ApiError as exc:
            results.append(
                FileChecksumResult(path=path, error=PathError(code=exc.code, message=exc.message))
            )
            continue
        results.append(FileChecksumResult(path=path, size=found.size, sha256=found.sha256))
    return FileChecksums(results=results)
