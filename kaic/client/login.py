"""Login and logout flows: talk to the center, then store the profile and credentials."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from kaic.errors import AuthRequired, KaicError, NotFound, Unreachable

if TYPE_CHECKING:
    from kaic.auth.credentials import Credentials
    from kaic.auth.ssh import SshIdentity

Log = Callable[[str], None]

OTP_REJECTED = "the one-time code was wrong or expired; try the next code"
OTP_REJECTED_HINT = "wait for your authenticator app to show a new code, then log in with it"


@dataclass
class LoginResult:
    profile: str
    center: str
    user: str
    storage: str  # keyring | file
    expires_at: datetime | None
    #: the SSH key + certificate for staging; None when the center has no staging or it failed
    ssh_identity: SshIdentity | None = None


def _choose_profile(explicit: str | None, center: str, username: str) -> str:
    from kaic.config import load_config, profile_name_for

    if explicit:
        return explicit
    cfg = load_config()
    for prof in cfg.profiles.values():
        if prof.center == center and prof.username == username:
            return prof.name
    return profile_name_for(center, username)


def _store(
    *,
    profile: str | None,
    center: str,
    username: str,
    creds: object,
    insecure_storage: bool,
    warn: Log,
) -> tuple[str, str]:
    from kaic.auth import credentials as store
    from kaic.config import Profile, load_config, save_config

    name = _choose_profile(profile, center, username)
    storage = store.save(name, creds, insecure_storage=insecure_storage, warn=warn)  # type: ignore[arg-type]
    cfg = load_config()
    cfg.profiles[name] = Profile(
        name=name, center=center, username=username, credential_store=storage
    )
    cfg.current_profile = name
    save_config(cfg)
    return name, storage


def obtain_ssh_identity(
    center: str,
    creds: Credentials,
    profile: str,
    *,
    warn: Log,
    debug_log: Log | None = None,
) -> SshIdentity | None:
    """Best effort: the profile's SSH key and a fresh certificate, right after a login.

    A center without staging is skipped silently; any other failure costs one warning line
    and never the login (`kaic data` renews the certificate itself later).
    """
    from kaic.auth.credentials import Credentials
    from kaic.auth.ssh import ensure_identity, staging_info
    from kaic.client.api import CenterClient

    # No refresh token: a refresh here would rotate the one just stored and invalidate it.
    access_only = Credentials(
        access_token=creds.access_token, expires_at=creds.expires_at, kind=creds.kind
    )
    try:
        with CenterClient(center, credentials=access_only, debug_log=debug_log) as client:
            staging_info(client)
            return ensure_identity(client, profile)
    except NotFound:
        return None
    except KaicError as exc:
        warn(f"no SSH certificate for data staging yet ({exc.message})")
    except Exception as exc:  # best effort: never fail a login over this
        warn(f"no SSH certificate for data staging yet ({exc})")
    return None


def login_password(
    center: str,
    username: str,
    password: str,
    otp: str | None,
    *,
    profile: str | None,
    insecure_storage: bool,
    warn: Log,
    debug_log: Log | None = None,
) -> LoginResult:
    """Password (+OTP) grant; raises AuthRequired with code `otp_required` when OTP is needed
    and `invalid_otp` when the code was wrong."""
    from kaic.auth.credentials import Credentials
    from kaic.client.api import CenterClient

    with CenterClient(center, debug_log=debug_log) as client:
        try:
            tokens = client.login_password(username, password, otp)
        except AuthRequired as err:
            if err.code == "invalid_otp":
                # The password was right; retyping it would not help.
                raise AuthRequired(
                    OTP_REJECTED, hint=OTP_REJECTED_HINT, code="invalid_otp"
                ) from None
            raise
        creds = Credentials(
            access_token=tokens.access_token,
            refresh_token=tokens.refresh_token,
            expires_at=tokens.expires_at,
            kind="session",
        )
        client.set_credentials(creds)
        me = client.me()
    name, storage = _store(
        profile=profile,
        center=center,
        username=me.user,
        creds=creds,
        insecure_storage=insecure_storage,
        warn=warn,
    )
    identity = obtain_ssh_identity(center, creds, name, warn=warn, debug_log=debug_log)
    return LoginResult(name, center, me.user, storage, tokens.expires_at, identity)


def login_token(
    center: str,
    token: str,
    *,
    profile: str | None,
    insecure_storage: bool,
    warn: Log,
    debug_log: Log | None = None,
) -> LoginResult:
    """Store an existing (API or access) token after checking it with `GET /v1/me`."""
    from kaic.auth.credentials import Credentials
    from kaic.client.api import CenterClient

    creds = Credentials(access_token=token, refresh_token=None, expires_at=None, kind="api")
    with CenterClient(center, credentials=creds, debug_log=debug_log) as client:
        me = client.me()
    creds.expires_at = me.expires_at
    name, storage = _store(
        profile=profile,
        center=center,
        username=me.user,
        creds=creds,
        insecure_storage=insecure_storage,
        warn=warn,
    )
    identity = obtain_ssh_identity(center, creds, name, warn=warn, debug_log=debug_log)
    return LoginResult(name, center, me.user, storage, me.expires_at, identity)


def logout(profile: str | None, *, warn: Log, debug_log: Log | None = None) -> str | None:
    """Revoke the session server-side (best effort) and delete the local credentials.

    Returns the profile logged out of, or None when there was nothing to log out of.
    """
    from kaic.auth import credentials as store
    from kaic.client.api import CenterClient
    from kaic.config import resolve_profile

    prof = resolve_profile(profile)
    if prof is None:
        return None
    found = store.load(prof.name, credential_store=prof.credential_store, warn=warn, use_env=False)
    if found is not None:
        creds, _source = found
        if creds.refresh_token:
            try:
                with CenterClient(prof.center, credentials=creds, debug_log=debug_log) as client:
                    client.revoke(creds.refresh_token)
            except (Unreachable, AuthRequired) as exc:
                warn(
                    f"could not revoke the session on the center ({exc.message}); "
                    "deleting the local credentials anyway"
                )
    store.delete(prof.name, warn=warn)
    return prof.name
