"""Login and logout flows: talk to the center, then store the profile and credentials.

A login's TLS settings are its flags (`--ca-bundle`, `--insecure-http`), else the
environment, else what the profile already stores for that center (a re-login needs no
flags again); the flags are stored in the profile, the environment is not.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from kaic.errors import AuthRequired, KaicError, NotFound, Unreachable, UsageError

if TYPE_CHECKING:
    from kaic.auth.credentials import Credentials
    from kaic.auth.ssh import SshIdentity
    from kaic.config import Profile, TransportPolicy

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


@dataclass(frozen=True)
class LoginTls:
    """The TLS flags of `kaic login`: stored in the profile when given."""

    ca_bundle: str | None = None
    insecure_http: bool = False


def _same_center(profile: Profile, center: str) -> bool:
    from kaic.config import validate_center_url

    try:
        return validate_center_url(profile.center) == center
    except UsageError:
        return False


def _stored_profile(center: str, explicit: str | None) -> Profile | None:
    """The profile whose stored TLS settings a login to `center` uses: `explicit`, else the
    current profile, else any profile of that center — only ever one of that same center."""
    from kaic.config import load_config

    cfg = load_config()
    names = [explicit] if explicit else [cfg.current_profile, *sorted(cfg.profiles)]
    for name in names:
        prof = cfg.profiles.get(name) if name else None
        if prof is not None and _same_center(prof, center):
            return prof
    return None


def login_policy(center: str, *, profile: str | None, tls: LoginTls) -> TransportPolicy:
    """The transport policy of a login to `center`, checked before anything is asked or sent:
    UsageError for plain http to a non-loopback host without the opt-out, or an unusable
    CA bundle."""
    from kaic.client.api import tls_context
    from kaic.config import check_plain_http, transport_policy

    policy = transport_policy(
        _stored_profile(center, profile), ca_bundle=tls.ca_bundle, insecure_http=tls.insecure_http
    )
    check_plain_http(center, policy)
    if center.startswith("https://"):
        tls_context(policy)
    return policy


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
    tls: LoginTls,
    warn: Log,
) -> tuple[str, str]:
    from pathlib import Path

    from kaic.auth import credentials as store
    from kaic.config import Profile, is_loopback_url, load_config, save_config

    name = _choose_profile(profile, center, username)
    storage = store.save(name, creds, insecure_storage=insecure_storage, warn=warn)  # type: ignore[arg-type]
    cfg = load_config()
    before = cfg.profiles.get(name)
    kept = before if before is not None and _same_center(before, center) else None
    # A re-login keeps the profile's TLS settings (and unknown keys) unless flags replace them.
    ca_bundle = str(Path(tls.ca_bundle).expanduser().resolve()) if tls.ca_bundle else None
    cfg.profiles[name] = Profile(
        name=name,
        center=center,
        username=username,
        credential_store=storage,
        ca_bundle=ca_bundle or (kept.ca_bundle if kept else None),
        # Stored only where it means something: plain http to a host that is not loopback.
        insecure_http=(
            tls.insecure_http and center.startswith("http://") and not is_loopback_url(center)
        )
        or (kept.insecure_http if kept else False),
        extra=dict(kept.extra) if kept else {},
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
    policy: TransportPolicy | None = None,
) -> SshIdentity | None:
    """Best effort: the profile's SSH key and a fresh certificate, right after a login.

    A center without staging is skipped silently; any other failure costs one warning line
    and never the login (`kaic data` renews the certificate itself later). Pass the login's
    `policy`: these calls must trust the same CA bundle as the login itself.
    """
    from kaic.auth.credentials import Credentials
    from kaic.auth.ssh import ensure_identity, staging_info
    from kaic.client.api import CenterClient

    # No refresh token: a refresh here would rotate the one just stored and invalidate it.
    access_only = Credentials(
        access_token=creds.access_token, expires_at=creds.expires_at, kind=creds.kind
    )
    try:
        with CenterClient(
            center, credentials=access_only, debug_log=debug_log, policy=policy, warn=warn
        ) as client:
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
    tls: LoginTls = LoginTls(),
) -> LoginResult:
    """Password (+OTP) grant; raises AuthRequired with code `otp_required` when OTP is needed
    and `invalid_otp` when the code was wrong.

    The password is sent only after `login_policy` allowed the center (https, or loopback, or
    the user's plain-http opt-out)."""
    from kaic.auth.credentials import Credentials
    from kaic.client.api import CenterClient

    policy = login_policy(center, profile=profile, tls=tls)
    with CenterClient(center, debug_log=debug_log, policy=policy, warn=warn) as client:
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
        tls=tls,
        warn=warn,
    )
    identity = obtain_ssh_identity(
        center, creds, name, policy=policy, warn=warn, debug_log=debug_log
    )
    return LoginResult(name, center, me.user, storage, tokens.expires_at, identity)


def login_token(
    center: str,
    token: str,
    *,
    profile: str | None,
    insecure_storage: bool,
    warn: Log,
    debug_log: Log | None = None,
    tls: LoginTls = LoginTls(),
) -> LoginResult:
    """Store an existing (API or access) token after checking it with `GET /v1/me`."""
    from kaic.auth.credentials import Credentials, check_token_text
    from kaic.client.api import CenterClient

    token = check_token_text(token.strip(), "the token on standard input")
    policy = login_policy(center, profile=profile, tls=tls)
    creds = Credentials(access_token=token, refresh_token=None, expires_at=None, kind="api")
    with CenterClient(
        center, credentials=creds, debug_log=debug_log, policy=policy, warn=warn
    ) as client:
        me = client.me()
    creds.expires_at = me.expires_at
    name, storage = _store(
        profile=profile,
        center=center,
        username=me.user,
        creds=creds,
        insecure_storage=insecure_storage,
        tls=tls,
        warn=warn,
    )
    identity = obtain_ssh_identity(
        center, creds, name, policy=policy, warn=warn, debug_log=debug_log
    )
    return LoginResult(name, center, me.user, storage, me.expires_at, identity)


def logout(profile: str | None, *, warn: Log, debug_log: Log | None = None) -> str | None:
    """Revoke the session server-side (best effort) and delete the local credentials.

    Returns the profile logged out of, or None when there was nothing to log out of.
    """
    from kaic.auth import credentials as store
    from kaic.client.api import CenterClient
    from kaic.config import resolve_profile, transport_policy

    prof = resolve_profile(profile)
    if prof is None:
        return None
    found = store.load(prof.name, credential_store=prof.credential_store, warn=warn, use_env=False)
    if found is not None:
        creds, _source = found
        if creds.refresh_token:
            try:
                with CenterClient(
                    prof.center,
                    credentials=creds,
                    debug_log=debug_log,
                    policy=transport_policy(prof),
                    warn=warn,
                ) as client:
                    client.revoke(creds.refresh_token)
            # UsageError: plain http refused or an unusable CA bundle. The refresh token is
            # then not sent, and the local copy goes all the same.
            except (Unreachable, AuthRequired, UsageError) as exc:
                warn(
                    f"could not revoke the session on the center ({exc.message}); "
                    "deleting the local credentials anyway"
                )
    store.delete(prof.name, warn=warn)
    return prof.name
