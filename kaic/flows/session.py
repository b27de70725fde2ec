"""Which center and which credentials a command uses, resolved in one place.

Order: ``KAIC_CENTER`` or the profile's center with stored credentials (``KAIC_TOKEN`` wins
over them); with neither a center nor a profile, the embedded local center, started on demand.
The profile's TLS settings (CA bundle, plain-http opt-out) apply to its own center only.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from kaic.errors import AuthRequired, NotFound

if TYPE_CHECKING:
    import httpx

    from kaic.auth.credentials import Credentials
    from kaic.client.api import CenterClient
    from kaic.client.auth import AuthAPI
    from kaic.client.health import HealthAPI
    from kaic.client.images import ImagesAPI
    from kaic.client.interactive import InteractiveAPI
    from kaic.client.jobs import JobsAPI
    from kaic.client.metrics import MetricsAPI
    from kaic.client.secrets import SecretsAPI
    from kaic.client.staging import StagingAPI
    from kaic.client.tokens import TokensAPI

Log = Callable[[str], None]


@dataclass
class Session:
    """An API client bound to a center, plus where its center and token came from, and the
    center's API areas on that client (`session.jobs.get(…)`)."""

    client: CenterClient
    center_url: str
    profile: str | None
    token_source: str  # env | keyring | file | local
    local: bool
    auth: AuthAPI = field(init=False, repr=False)
    tokens: TokensAPI = field(init=False, repr=False)
    jobs: JobsAPI = field(init=False, repr=False)
    staging: StagingAPI = field(init=False, repr=False)
    health: HealthAPI = field(init=False, repr=False)
    interactive: InteractiveAPI = field(init=False, repr=False)
    secrets: SecretsAPI = field(init=False, repr=False)
    images: ImagesAPI = field(init=False, repr=False)
    metrics: MetricsAPI = field(init=False, repr=False)

    def __post_init__(self) -> None:
        from kaic.client.auth import AuthAPI
        from kaic.client.health import HealthAPI
        from kaic.client.images import ImagesAPI
        from kaic.client.interactive import InteractiveAPI
        from kaic.client.jobs import JobsAPI
        from kaic.client.metrics import MetricsAPI
        from kaic.client.secrets import SecretsAPI
        from kaic.client.staging import StagingAPI
        from kaic.client.tokens import TokensAPI

        self.auth, self.tokens = AuthAPI(self.client), TokensAPI(self.client)
        self.jobs, self.staging = JobsAPI(self.client), StagingAPI(self.client)
        self.health = HealthAPI(self.client)
        self.interactive = InteractiveAPI(self.client)
        self.secrets = SecretsAPI(self.client)
        self.images = ImagesAPI(self.client)
        self.metrics = MetricsAPI(self.client)

    def close(self) -> None:
        self.client.close()


@dataclass(frozen=True)
class Connector:
    """How a flow makes its API clients: where their warnings and request log go (KAIC_DEBUG),
    over which transport (None: the network; tests: a fake center) and how they wait."""

    warn: Log
    debug_log: Log | None = None
    transport: httpx.BaseTransport | None = None
    sleep: Callable[[float], None] = time.sleep

    def client(self, center: str, **options: Any) -> CenterClient:
        """A client of `center`; `options` are `CenterClient`'s (credentials, policy, …)."""
        from kaic.client.api import CenterClient

        return CenterClient(
            center,
            warn=self.warn,
            debug_log=self.debug_log,
            transport=self.transport,
            sleep=self.sleep,
            **options,
        )


def open_session(
    profile_name: str | None,
    *,
    warn: Log,
    notice: Log,
    debug_log: Log | None = None,
    transport: httpx.BaseTransport | None = None,
    sleep: Callable[[float], None] = time.sleep,
    local_if_running: bool = False,
    timeout: float | None = None,
) -> Session:
    """Resolve the center and credentials for a command and build its client (`transport`
    and `sleep` go to the client: tests answer in process and do not wait).

    `local_if_running` (shell completion): with no center configured, only a local center
    that already runs is used — none is started — and `NotFound` says there is none;
    `timeout` bounds each request of the client."""
    from kaic.auth import credentials as store
    from kaic.client.tls import check_plain_http, transport_policy
    from kaic.config import resolve_profile
    from kaic.urls import validate_center_url

    profile = resolve_profile(profile_name)
    env_center = os.environ.get("KAIC_CENTER")
    center = (
        validate_center_url(env_center) if env_center else (profile.center if profile else None)
    )

    via = Connector(warn, debug_log, transport, sleep)
    options: dict[str, Any] = {} if timeout is None else {"timeout": timeout, "max_retries": 0}
    if center is None:
        return _local_session(via, notice=notice, only_running=local_if_running, **options)

    name = profile.name if profile else "default"
    own = profile if profile is not None and _origin(profile.center) == _origin(center) else None
    policy = transport_policy(own)
    # Before credentials are even read: a refused plain-http center names the opt-out, not
    # "not logged in" (the client checks again when it is built).
    check_plain_http(center, policy)
    if own is not None:
        found = store.load(name, credential_store=own.credential_store, warn=warn)
    else:
        # KAIC_CENTER points elsewhere than the profile's center: stored tokens were issued
        # by that other center and must never be sent here (nor its refresh token).
        env = store.from_env()
        found = (env, "env") if env is not None else None
    if found is None:
        raise AuthRequired(
            f"not logged in to {center}",
            hint=f"run `kaic login --center {center}`, or set KAIC_TOKEN",
        )
    creds, source = found

    def persist(new: Credentials) -> None:
        # Refreshed tokens go back where they came from (never into the env).
        if source in ("keyring", "file"):
            store.save(name, new, insecure_storage=(source == "file"), warn=warn)

    shared = (
        _StoredSession(name, profile.credential_store if profile else None)
        if source in ("keyring", "file")
        else None
    )
    client = via.client(
        center,
        credentials=creds,
        on_refresh=persist,
        shared_refresh=shared,
        policy=policy,
        **options,
    )
    return Session(client=client, center_url=center, profile=name, token_source=source, local=False)


class _StoredSession:
    """Refreshes of a stored session are serialised across kaic processes by a file lock, and
    each one first re-reads the store (see CenterClient's SharedRefresh)."""

    def __init__(self, profile: str, credential_store: str | None) -> None:
        self.profile, self.credential_store = profile, credential_store

    @contextlib.contextmanager
    def lock(self) -> Iterator[object]:
        import fcntl

        from kaic.auth.credentials import credentials_dir

        path = credentials_dir() / f".{self.profile}.refresh.lock"
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        with open(path, "a") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield fh
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def reload(self) -> Credentials | None:
        from kaic.auth import credentials as store

        found = store.load(self.profile, credential_store=self.credential_store, use_env=False)
        return found[0] if found else None


def _origin(url: str) -> tuple[str, str, int | None]:
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    port = parts.port or {"http": 80, "https": 443}.get(parts.scheme)
    return (parts.scheme, (parts.hostname or "").lower(), port)


def _local_session(
    via: Connector, *, notice: Log, only_running: bool = False, **options: Any
) -> Session:
    from kaic.auth.credentials import Credentials, from_env
    from kaic.flows.local_center import ensure_running, find_running

    if only_running:
        running = find_running()
        if running is None:
            raise NotFound("no center configured and no local center running")
        center = running
    else:
        center = ensure_running()
        verb = "started" if center.started else "using"
        notice(
            f"kaic: {verb} the local center at {center.url} (no center configured; "
            "`kaic login --center URL` to use a real one)"
        )
    env = from_env()
    creds = env or Credentials(access_token=center.token(), kind="api")
    source = "env" if env is not None else "local"
    client = via.client(center.url, credentials=creds, **options)
    return Session(
        client=client, center_url=center.url, profile=None, token_source=source, local=True
    )
