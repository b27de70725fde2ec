"""Where `kaic data` and job staging log in over SSH/SFTP, and as whom.

From the center (its staging info over the authenticated API, and a short-lived certificate
for the profile's key, renewed when needed), or — for operators and tests without a center —
from ``KAIC_SSH_*`` variables. With a center, a transfer's checksums can also be asked of the
center (what verifies a transfer on a staging host that runs no commands); from the
variables there is no center to ask, and the transfer engine falls back to reading the
files back over SFTP.

`obtain_ssh_identity` gets the first certificate right after a login, best effort.
"""

from __future__ import annotations

import getpass
import os
from collections.abc import Callable
from datetime import datetime, timezone
from typing import TYPE_CHECKING

from kaic.errors import KaicError, NotFound, UsageError

if TYPE_CHECKING:
    from kaic.auth.credentials import Credentials
    from kaic.auth.ssh import SshIdentity
    from kaic.client.api import CenterClient
    from kaic.client.tls import TransportPolicy
    from kaic.flows.session import Connector, Session
    from kaic.staging.connect import SshTarget
    from kaic.staging.remote_fs import ChecksumsFn

ENV_HELP = (
    "Without a center (operators, tests), set KAIC_SSH_HOST, KAIC_SSH_PORT, KAIC_SSH_USER, "
    "KAIC_SSH_KEY, KAIC_SSH_CERT and KAIC_SSH_KNOWN_HOSTS (a known_hosts file)."
)

Log = Callable[[str], None]


def _utc_now() -> datetime:
    return datetime.now(timezone.utc)


def env_target() -> SshTarget | None:
    """The target ``KAIC_SSH_*`` name; None when ``KAIC_SSH_HOST`` is not set."""
    host = os.environ.get("KAIC_SSH_HOST")
    if not host:
        return None
    from kaic.staging.connect import SshTarget

    key = os.environ.get("KAIC_SSH_KEY")
    if not key:
        raise UsageError("KAIC_SSH_HOST is set but KAIC_SSH_KEY is not", hint=ENV_HELP)
    try:
        port = int(os.environ.get("KAIC_SSH_PORT") or 22)
    except ValueError as exc:
        raise UsageError("KAIC_SSH_PORT must be a number") from exc
    lines: list[str] = []
    known = os.environ.get("KAIC_SSH_KNOWN_HOSTS")
    if known:
        try:
            with open(known, encoding="utf-8") as f:
                lines = f.read().splitlines()
        except OSError as exc:
            raise UsageError(f"cannot read KAIC_SSH_KNOWN_HOSTS {known}: {exc}") from exc
    return SshTarget(
        host=host,
        port=port,
        username=os.environ.get("KAIC_SSH_USER") or getpass.getuser(),
        key_path=key,
        cert_path=os.environ.get("KAIC_SSH_CERT") or None,
        known_hosts_lines=lines,
    )


def ensure_identity(
    client: CenterClient,
    profile: str | None,
    *,
    now: Callable[[], datetime] = _utc_now,
) -> SshIdentity:
    """The profile's SSH key and a certificate good for at least `RENEW_MARGIN`.

    Creates the key on first use; asks the center for a new certificate when there is none
    or it is expired, about to expire, for another key or from another center. Center errors
    propagate as KaicError (NotFound for a center without staging).
    """
    from kaic.auth import ssh
    from kaic.client.staging import StagingAPI

    public_line = ssh.load_or_create_key(ssh.key_path(profile))
    stored = ssh.stored_identity(profile, public_line, issuer=client.base_url, now=now())
    if stored is not None:
        return stored
    signed = StagingAPI(client).request_certificate(public_line)
    return ssh.store_certificate(profile, public_line, signed, issuer=client.base_url)


def resolve_target(
    session: Callable[[], Session],
) -> tuple[SshTarget, ChecksumsFn | None]:
    """The SSH target (``KAIC_SSH_*``, else the center's staging info and a certificate),
    and the center's batched checksums (None without a center). `session` is called only
    when the center is needed: the variables alone need no center, not even a local one."""
    target = env_target()
    if target is not None:
        return target, None
    from kaic.auth.ssh import known_hosts_lines
    from kaic.staging.connect import SshTarget

    opened = session()
    info = opened.staging.info()
    identity = ensure_identity(opened.client, opened.profile)
    target = SshTarget(
        host=info.host,
        port=info.port,
        username=info.username,
        key_path=identity.key_path,
        cert_path=identity.cert_path,
        known_hosts_lines=list(known_hosts_lines(info)),
    )
    return target, opened.staging.checksums()


def obtain_ssh_identity(
    center: str,
    creds: Credentials,
    profile: str,
    via: Connector,
    *,
    policy: TransportPolicy | None = None,
) -> SshIdentity | None:
    """Best effort: the profile's SSH key and a fresh certificate, right after a login.

    A center without staging is skipped silently; any other failure costs one warning line
    and never the login (`kaic data` renews the certificate itself later). Pass the login's
    `policy`: these calls must trust the same CA bundle as the login itself; `via` makes the
    client (warnings, request log, transport).
    """
    from kaic.auth.credentials import Credentials
    from kaic.client.staging import StagingAPI

    # No refresh token: a refresh here would rotate the one just stored and invalidate it.
    access_only = Credentials(
        access_token=creds.access_token, expires_at=creds.expires_at, kind=creds.kind
    )
    try:
        with via.client(center, credentials=access_only, policy=policy) as client:
            StagingAPI(client).info()
            return ensure_identity(client, profile)
    except NotFound:
        return None
    except KaicError as exc:
        via.warn(f"no SSH certificate for data staging yet ({exc.message})")
    except Exception as exc:  # best effort: never fail a login over this
        via.warn(f"no SSH certificate for data staging yet ({exc})")
    return None
