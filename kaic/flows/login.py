"""Login and logout flows: talk to the center, then store the profile and credentials.

`login` is the whole of `kaic login`: which center, which secret (a token, or a user name and
password, asked for through the `Prompts` the command hands over), a second factor when the
center asks for one, then the profile, the credentials and a first SSH certificate.

A login's TLS settings are its flags (`--ca-bundle`, `--insecure-http`), else the
environment, else what the profile already stores for that center (a re-login needs no
flags again); the flags are stored in the profile, the environment is not.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from kaic.errors import AuthRequired, Unreachable, UsageError
from kaic.flows.session import Connector
from kaic.flows.ui import Ui

if TYPE_CHECKING:
    import httpx

    from kaic.auth.credentials import Credentials
    from kaic.auth.ssh import SshIdentity
    from kaic.client.tls import TransportPolicy
    from kaic.config import Profile

Log = Callable[[str], None]

#: what the user typed for each field of a password grant
_LOGIN_INPUTS = {"username": "--username", "password": "the password", "otp": "--otp"}

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
    from kaic.urls import validate_center_url

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
    from kaic.client.tls import check_plain_http, tls_context, transport_policy

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
    from kaic.config import Profile, load_config, save_config
    from kaic.urls import is_loopback_url

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


def login_password(
    center: str,
    username: str,
    password: str,
    otp: str | None,
    request: LoginRequest,
    via: Connector,
) -> LoginResult:
    """Password (+OTP) grant; raises AuthRequired with code `otp_required` when OTP is needed
    and `invalid_otp` when the code was wrong. `request` says where the credentials go
    (profile, storage, TLS settings), `via` how the API clients are made.

    The password is sent only after `login_policy` allowed the center (https, or loopback, or
    the user's plain-http opt-out)."""
    from kaic.auth.credentials import Credentials
    from kaic.client.auth import AuthAPI
    from kaic.flows.inputs import user_input

    policy = login_policy(center, profile=request.profile, tls=request.tls)
    with via.client(center, policy=policy) as client:
        api = AuthAPI(client)
        try:
            with user_input(_LOGIN_INPUTS, secrets=("password",)):
                tokens = api.login_password(username, password, otp)
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
        me = api.me()
    return _keep(center, me.user, creds, tokens.expires_at, request, policy, via)


def login_token(center: str, token: str, request: LoginRequest, via: Connector) -> LoginResult:
    """Store an existing (API or access) token after checking it with `GET /v1/me`."""
    from kaic.auth.credentials import Credentials, check_token_text
    from kaic.client.auth import AuthAPI

    token = check_token_text(token.strip(), "the token on standard input")
    policy = login_policy(center, profile=request.profile, tls=request.tls)
    creds = Credentials(access_token=token, refresh_token=None, expires_at=None, kind="api")
    with via.client(center, credentials=creds, policy=policy) as client:
        me = AuthAPI(client).me()
    creds.expires_at = me.expires_at
    return _keep(center, me.user, creds, me.expires_at, request, policy, via)


def _keep(
    center: str,
    user: str,
    creds: Credentials,
    expires_at: datetime | None,
    request: LoginRequest,
    policy: TransportPolicy,
    via: Connector,
) -> LoginResult:
    """Store the profile and the credentials of a login, then get a first SSH certificate."""
    from kaic.flows.ssh_target import obtain_ssh_identity

    name, storage = _store(
        profile=request.profile,
        center=center,
        username=user,
        creds=creds,
        insecure_storage=request.insecure_storage,
        tls=request.tls,
        warn=via.warn,
    )
    identity = obtain_ssh_identity(center, creds, name, via, policy=policy)
    return LoginResult(name, center, user, storage, expires_at, identity)


def logout(
    profile: str | None,
    *,
    warn: Log,
    debug_log: Log | None = None,
    transport: httpx.BaseTransport | None = None,
) -> str | None:
    """Revoke the session server-side (best effort) and delete the local credentials.

    Returns the profile logged out of, or None when there was nothing to log out of.
    """
    from kaic.auth import credentials as store
    from kaic.client.auth import AuthAPI
    from kaic.client.tls import transport_policy
    from kaic.config import resolve_profile

    prof = resolve_profile(profile)
    if prof is None:
        return None
    found = store.load(prof.name, credential_store=prof.credential_store, warn=warn, use_env=False)
    if found is not None:
        creds, _source = found
        if creds.refresh_token:
            try:
                via = Connector(warn, debug_log, transport)
                with via.client(
                    prof.center, credentials=creds, policy=transport_policy(prof)
                ) as client:
                    AuthAPI(client).revoke(creds.refresh_token)
            # UsageError: plain http refused or an unusable CA bundle. The refresh token is
            # then not sent, and the local copy goes all the same.
            except (Unreachable, AuthRequired, UsageError) as exc:
                warn(
                    f"could not revoke the session on the center ({exc.message}); "
                    "deleting the local credentials anyway"
                )
    store.delete(prof.name, warn=warn)
    return prof.name


# -- `kaic login` as a whole -------------------------------------------------------------------


@dataclass(frozen=True)
class LoginRequest:
    """The flags of `kaic login`."""

    center: str | None = None
    username: str | None = None
    otp: str | None = None
    profile: str | None = None
    with_token: bool = False
    password_stdin: bool = False
    insecure_storage: bool = False
    tls: LoginTls = LoginTls()


@dataclass(frozen=True)
class Prompts:
    """How the login asks the user for what the flags did not give. `read_stdin(what)` reads
    one line of standard input (`what`: "a token", "a password"); the others ask at a
    terminal and are None where there is none."""

    read_stdin: Callable[[str], str]
    username: Callable[[], str] | None = None
    password: Callable[[str], str] | None = None  # the prompt text -> the password
    otp: Callable[[], str] | None = None


def center_for_login(center: str | None, profile: str | None) -> str:
    """The center a login goes to: `--center`, ``KAIC_CENTER``, else the profile's."""
    import os

    from kaic.config import resolve_profile
    from kaic.urls import validate_center_url

    center = center or os.environ.get("KAIC_CENTER")
    if center:
        return validate_center_url(center)
    prof = resolve_profile(profile)
    if prof is not None:
        return prof.center
    raise UsageError(
        "no center to log in to",
        hint="pass `--center https://host[:port]`; with no center configured kaic uses "
        "the local center, which needs no login",
    )


def _profile_username(profile: str | None) -> str | None:
    from kaic.config import resolve_profile

    try:
        prof = resolve_profile(profile)
    except Exception:
        return None
    return prof.username if prof else None


def login(
    request: LoginRequest,
    prompts: Prompts,
    ui: Ui,
    *,
    transport: httpx.BaseTransport | None = None,
) -> LoginResult:
    """`kaic login`: the center's transport policy is checked before anything is asked for or
    read (plain http refused, CA bundle unusable), then a token or a password grant."""
    profile = request.profile
    url = center_for_login(request.center, profile)
    login_policy(url, profile=profile, tls=request.tls)
    via = Connector(ui.warn, ui.debug, transport)
    if request.with_token:
        if request.password_stdin:
            raise UsageError("--with-token and --password-stdin both read standard input")
        return login_token(url, prompts.read_stdin("a token"), request, via)
    user = request.username or _profile_username(profile)
    if user is None:
        if prompts.username is None:
            raise UsageError("no user name given", hint="pass --username NAME")
        user = prompts.username()
    if request.password_stdin:
        password = prompts.read_stdin("a password")
    elif prompts.password is not None:
        password = prompts.password(f"Password for {user} at {url}: ")
    else:
        raise UsageError(
            "no terminal to ask for a password",
            hint="pipe it in with --password-stdin, or use --with-token with an API token",
        )

    def grant(otp: str | None) -> LoginResult:
        return login_password(url, user, password, otp, request, via)

    try:
        return grant(request.otp)
    except AuthRequired as err:
        if err.code == "otp_required" and request.otp is None and prompts.otp is not None:
            return grant(prompts.otp())
        if err.code == "otp_required":
            err.hint = "pass your one-time code with --otp CODE"
        elif err.code in ("invalid_credentials", None):
            err.hint = "check your user name and password"
        raise
