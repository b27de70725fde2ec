"""Data-staging models: where to reach center storage over SSH/SFTP, and user certificates."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field

from kaic.models.limits import MAX_PUBLIC_KEY_LENGTH


class StorageRoot(BaseModel):
    name: str = Field(description="e.g. home, scratch")
    path: str = Field(description="absolute POSIX path on the staging host")


class StagingInfo(BaseModel):
    """`GET /v1/staging`: how to reach the user's storage (over the authenticated API, so the
    host keys here can be trusted without trust-on-first-use)."""

    host: str
    port: int = 22
    username: str = Field(description="the unix account to log in as")
    host_keys: list[str] = Field(
        default_factory=list, description="OpenSSH public host keys (`ssh-ed25519 AAAA…`)"
    )
    host_ca_keys: list[str] = Field(
        default_factory=list, description="OpenSSH public keys of host CAs (`@cert-authority`)"
    )
    roots: list[StorageRoot] = Field(default_factory=list)
    certificates: bool = Field(True, description="the center signs user certificates")


class SshCertificateRequest(BaseModel):
    """`POST /v1/ssh/certificates`: sign this OpenSSH public key for the caller."""

    public_key: str = Field(
        max_length=MAX_PUBLIC_KEY_LENGTH,
        description="OpenSSH public key, e.g. `ssh-ed25519 AAAA… comment`",
    )
    validity_seconds: int | None = Field(None, ge=60, le=7 * 86400)


class SshCertificate(BaseModel):
    certificate: str = Field(description="OpenSSH user certificate (`ssh-ed25519-cert-v01@…`)")
    principals: list[str]
    valid_after: datetime
    valid_before: datetime
    serial: int
    key_id: str


class FileChecksum(BaseModel):
    """`GET /v1/files/checksum?path=`: sha256 of a file on the user's storage."""

    path: str
    size: int
    sha256: str
