"""Keyring access bounded by a timeout.

Keyring backends can hang for minutes (Secret Service over D-Bus with no session, WSL2) or be
missing entirely (headless Linux). Every keyring call — including ``import keyring`` and backend
resolution, which can hang too — therefore runs in a daemon thread that kaic waits on for at
most ``$KAIC_KEYRING_TIMEOUT`` seconds (default 3). A daemon thread that never returns is
abandoned: it cannot keep the process alive at exit.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar, cast

if TYPE_CHECKING:
    from keyring.backend import KeyringBackend

T = TypeVar("T")

DEFAULT_TIMEOUT_S = 3.0
SERVICE = "kaic"

# Set once a keyring call timed out: its thread is still stuck in the backend, so another call
# in this process would very likely hang as well and cost the user another full timeout.
_timed_out_reason: str | None = None
_state_lock = threading.Lock()


class KeyringUnavailable(Exception):
    """The keyring cannot be used: no backend, a backend error, or a timeout."""

    def __init__(self, reason: str, *, timed_out: bool = False):
        super().__init__(reason)
        self.reason = reason
        self.timed_out = timed_out


def keyring_timeout() -> float:
    """Seconds to wait for one keyring call (`$KAIC_KEYRING_TIMEOUT`, default 3)."""
    raw = os.environ.get("KAIC_KEYRING_TIMEOUT", "").strip()
    if not raw:
        return DEFAULT_TIMEOUT_S
    try:
        value = float(raw)
    except ValueError:
        return DEFAULT_TIMEOUT_S
    # Zero or negative would make every call "time out" instantly; keep a tiny floor instead.
    return max(value, 0.01)


def reset_keyring_state() -> None:
    """Forget an earlier timeout so the next call tries the keyring again (for tests)."""
    global _timed_out_reason
    with _state_lock:
        _timed_out_reason = None


def _usable_backend() -> KeyringBackend:
    """Import keyring and resolve its backend; raise KeyringUnavailable if there is none."""
    import keyring
    from keyring.backends import chainer, fail, null

    backend = keyring.get_keyring()
    if isinstance(backend, (fail.Keyring, null.Keyring)):
        raise KeyringUnavailable("no keyring backend is available")
    if isinstance(backend, chainer.ChainerBackend) and not backend.backends:
        raise KeyringUnavailable("no keyring backend is available")
    return backend


def _describe(exc: BaseException, secrets: tuple[str, ...]) -> str:
    """A one-line reason for a backend failure that cannot contain the secret being stored."""
    from kaic.redact import redact

    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    text = redact(text)
    name = type(exc).__name__
    if name == "NoKeyringError":
        return "no keyring backend is available"
    return f"{name}: {text}" if text else name


def call_keyring(
    op: Callable[[KeyringBackend], T],
    *,
    timeout: float | None = None,
    secrets: tuple[str, ...] = (),
) -> T:
    """Run `op(backend)` in a daemon thread and return its result within `timeout` seconds.

    Raises KeyringUnavailable when there is no usable backend, when the backend raises
    (the reason never contains any of `secrets`), or when the call does not finish in time.
    """
    if timeout is None:
        timeout = keyring_timeout()
    with _state_lock:
        earlier = _timed_out_reason
    if earlier is not None:
        raise KeyringUnavailable(earlier, timed_out=True)

    box: dict[str, Any] = {}

    def worker() -> None:
        try:
            box["result"] = op(_usable_backend())
        except BaseException as exc:  # the thread must report everything, never die silently
            box["error"] = exc

    thread = threading.Thread(target=worker, name="kaic-keyring", daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        reason = f"timed out after {timeout:g} s"
        _remember_timeout(reason)
        raise KeyringUnavailable(reason, timed_out=True)
    if "error" in box:
        exc = box["error"]
        if isinstance(exc, KeyringUnavailable):
            raise exc
        raise KeyringUnavailable(_describe(exc, secrets)) from None
    return cast(T, box["result"])


def _remember_timeout(reason: str) -> None:
    global _timed_out_reason
    with _state_lock:
        _timed_out_reason = reason
