"""One try of one notification. A webhook is a JSON POST with bounded timeouts, redirects
not followed (a 3xx is a failure: the target is the user's URL, not wherever it points),
no proxy from the environment, and nothing of the center's but its user agent: no cookies,
no credentials. A mail goes through the configured relay, unauthenticated, as plain text.
Every failure raises `SendFailed` with words fit for the job's events."""

from __future__ import annotations

import smtplib
import socket
from typing import Any

import httpx

from kaic import __version__
from kaic.center.notify.message import mail

USER_AGENT = f"kaic-center/{__version__} (job notification)"


class SendFailed(Exception):
    """A try failed; the message says why (`connection refused`, `answered 500`)."""


def _reason(exc: BaseException) -> str:
    """A transport failure in a few words."""
    text = str(exc)
    lowered = text.lower()
    if "connection refused" in lowered or isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, (httpx.TimeoutException, socket.timeout, TimeoutError)):
        return "timed out"
    if "name or service not known" in lowered or "nodename nor servname" in lowered:
        return "unknown host"
    return text.splitlines()[0][:200] if text else type(exc).__name__


def send_webhook(url: str, body: dict[str, Any], timeout: float) -> str:
    """POST `body` to `url`; returns what it answered (`200`)."""
    try:
        with httpx.Client(
            timeout=httpx.Timeout(timeout), follow_redirects=False, trust_env=False
        ) as client:
            response = client.post(url, json=body, headers={"User-Agent": USER_AGENT})
    except httpx.HTTPError as exc:
        raise SendFailed(_reason(exc)) from None
    if response.is_redirect:
        raise SendFailed(f"answered {response.status_code} (redirects are not followed)")
    if not response.is_success:
        raise SendFailed(f"answered {response.status_code}")
    return str(response.status_code)


def send_mail(
    relay: tuple[str, int], sender: str, to: str, body: dict[str, Any], timeout: float
) -> str:
    """Hand the mail of `body` to the relay; returns what it did (`accepted`)."""
    host, port = relay
    try:
        with smtplib.SMTP(host, port, timeout=timeout) as smtp:
            refused = smtp.send_message(mail(body, sender, to))
    except (OSError, smtplib.SMTPException) as exc:
        raise SendFailed(f"the SMTP relay: {_reason(exc)}") from None
    if refused:
        raise SendFailed(f"the SMTP relay refused {to}")
    return "accepted by the SMTP relay"
