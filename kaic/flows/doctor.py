"""`kaic doctor`: its checks, each independent: one failing does not hide the rest."""

from __future__ import annotations

import email.utils
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from kaic.errors import KaicError


@dataclass
class Check:
    name: str
    status: str  # ok | warn | fail
    detail: str
    hint: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


#: Clock skew beyond which short-lived tokens and certificates misbehave.
MAX_SKEW_S = 60.0


def run_checks(
    profile: str | None, *, warn: Callable[[str], None], transport: Any = None
) -> list[Check]:
    """Config, center reachability, authentication, clock skew, credential storage."""
    from kaic.config import config_path, resolve_profile

    checks: list[Check] = []
    try:
        prof = resolve_profile(profile)
        where = f"profile {prof.name} → {prof.center}" if prof else "no profile: local center"
        checks.append(Check("config", "ok", f"{config_path()} ({where})"))
    except KaicError as err:
        checks.append(Check("config", "fail", err.message, err.hint))
        return checks

    from kaic.flows.session import open_session

    try:
        session = open_session(profile, warn=warn, notice=lambda _m: None, transport=transport)
    except KaicError as err:
        checks.append(Check("center", "fail", err.message, err.hint))
        return checks
    try:
        try:
            answer = session.health.check()
            health = answer.health
            status = "ok" if health.status == "ok" else "warn"
            hint = (
                None
                if status == "ok"
                else f"the center reports degraded service: {health.detail or 'no detail'}"
            )
            if session.client.insecure_http:
                status = "warn"
                hint = "use the center's https:// URL: passwords and tokens cross the network"
            checks.append(
                Check(
                    "center",
                    status,
                    f"{session.center_url}: {health.status}, version {health.version}, "
                    f"executor {health.executor} ({answer.round_trip_ms:.0f} ms); "
                    f"{session.client.transport_summary}",
                    hint,
                )
            )
            checks.append(_clock_check(answer.date_header))
        except KaicError as err:
            checks.append(Check("center", "fail", err.message, err.hint))
            return checks
        try:
            me = session.auth.me()
            expiry = f", expires {me.expires_at:%Y-%m-%d %H:%M} UTC" if me.expires_at else ""
            checks.append(
                Check("auth", "ok", f"{me.user} via {session.token_source} token{expiry}")
            )
        except KaicError as err:
            checks.append(Check("auth", "fail", err.message, err.hint))
        checks.append(_keyring_check(session.token_source))
    finally:
        session.close()
    return checks


def _clock_check(date_header: str | None) -> Check:
    if not date_header:
        return Check("clock", "warn", "the center sent no Date header; skew unknown")
    try:
        server = email.utils.parsedate_to_datetime(date_header).timestamp()
    except (TypeError, ValueError):
        return Check("clock", "warn", f"unreadable Date header {date_header!r}")
    skew = time.time() - server
    # HTTP dates have 1 s resolution: allow for it.
    status = "ok" if abs(skew) <= MAX_SKEW_S else "fail"
    return Check(
        "clock",
        status,
        f"{skew:+.0f} s against the center",
        None if status == "ok" else "sync this machine's clock (NTP): tokens expire early or late",
    )


def _keyring_check(source: str) -> Check:
    if source in ("env", "local"):
        return Check("credentials", "ok", f"token from {source}; nothing stored")
    if source == "keyring":
        return Check("credentials", "ok", "stored in the system keyring")
    return Check(
        "credentials",
        "warn",
        "stored in a 0600 file (no usable keyring)",
        "install a keyring backend, or keep using the file on a single-user machine",
    )
