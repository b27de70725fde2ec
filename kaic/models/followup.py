"""What a job asks the center to do about how it ends: run again after the system ended it
(`RetryPolicy`), and tell someone (`Notify`).

Both are job-file keys (`retry:`, `notify:`) and `kaic submit` flags (`--retry`,
`--notify`); their text forms (`NODE_FAIL,PREEMPTED:2`, a URL or an address) are parsed
here, once, for the job file, the flags and the center alike.
"""

from __future__ import annotations

from typing import Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

#: the states a job can be requeued after: the system ended it, not its own exit code
RetryState = Literal["NODE_FAIL", "PREEMPTED", "BOOT_FAIL"]
RETRY_STATES: tuple[RetryState, ...] = ("NODE_FAIL", "PREEMPTED", "BOOT_FAIL")
#: the most times one job may be requeued
MAX_RETRIES = 10
#: `end`: every end; `fail`: an end other than COMPLETED
NotifyEvent = Literal["end", "fail"]
MAX_URL_LENGTH = 2048
MAX_ADDRESS_LENGTH = 254
#: a plain mail address: no display name, no list, nothing a header could be split on
ADDRESS_PATTERN = r"^[^@\s<>,;:\"]+@[^@\s<>,;:\"]+\.[^@\s<>,;:\"]+$"


class RetryPolicy(BaseModel):
    """Requeue the job, as the same id with the next attempt number, when the system ends
    it in one of `on`; at most `max` times. A job that fails by its own exit code is never
    retried."""

    model_config = ConfigDict(extra="forbid")

    on: list[RetryState] = Field(
        default_factory=lambda: list(RETRY_STATES), min_length=1, max_length=3
    )
    max: int = Field(2, ge=1, le=MAX_RETRIES, description="requeues at most (attempts - 1)")

    @field_validator("on")
    @classmethod
    def _unique(cls, value: list[RetryState]) -> list[RetryState]:
        return list(dict.fromkeys(value))


def parse_retry(text: str) -> RetryPolicy:
    """`--retry`: `2` (the default states, 2 requeues), `NODE_FAIL,PREEMPTED:2`, or
    `NODE_FAIL` (2 requeues). ValueError says what is wrong."""
    states_text, sep, count_text = text.strip().rpartition(":")
    if not sep:
        states_text, count_text = (
            ("", text.strip()) if text.strip().isdigit() else (text.strip(), "2")
        )
    count_text = count_text.strip()
    if not count_text.isdigit():
        raise ValueError(f"expected a number of retries after ':' (got {count_text!r})")
    count = int(count_text)
    if not 1 <= count <= MAX_RETRIES:
        raise ValueError(f"retries must be 1 to {MAX_RETRIES} (got {count})")
    states = [s.strip().upper() for s in states_text.split(",") if s.strip()]
    unknown = [s for s in states if s not in RETRY_STATES]
    if unknown:
        raise ValueError(
            f"cannot retry after {', '.join(unknown)}: only {', '.join(RETRY_STATES)} "
            "(a job's own failure is never retried)"
        )
    if not states:
        return RetryPolicy(max=count)
    return RetryPolicy.model_validate({"on": states, "max": count})


def webhook_problem(url: str) -> str | None:
    """Why `url` cannot be a webhook (None if it can): only http(s) with a host."""
    if any(ord(c) < 0x21 or c == "\x7f" for c in url):
        return "must not contain spaces or control characters"
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 (raises ValueError for a bad port)
    except ValueError as exc:
        return f"not a URL: {exc}"
    if parts.scheme not in ("http", "https"):
        return f"only http:// and https:// URLs are sent to (got {parts.scheme or 'none'!r})"
    if not parts.hostname:
        return "names no host"
    return None


class Notify(BaseModel):
    """Tell the user when the job ends: a JSON POST to `webhook`, a short mail to `email`
    (sent through the center's SMTP relay), or both. `on`: `end` (every end) or `fail`
    (only an end other than COMPLETED)."""

    model_config = ConfigDict(extra="forbid")

    on: list[NotifyEvent] = Field(default_factory=lambda: ["end"], min_length=1, max_length=2)  # type: ignore[arg-type]
    webhook: str | None = Field(None, max_length=MAX_URL_LENGTH)
    email: str | None = Field(None, max_length=MAX_ADDRESS_LENGTH, pattern=ADDRESS_PATTERN)

    @field_validator("webhook")
    @classmethod
    def _http_only(cls, value: str | None) -> str | None:
        if value is not None:
            problem = webhook_problem(value)
            if problem:
                raise ValueError(problem)
        return value

    @model_validator(mode="after")
    def _somewhere(self) -> Notify:
        if self.webhook is None and self.email is None:
            raise ValueError("needs a webhook or an email to send to")
        return self

    def wants(self, state: str) -> bool:
        """Whether a job that ended in `state` is to be notified."""
        return "end" in self.on or ("fail" in self.on and state != "COMPLETED")


def parse_notify(text: str) -> Notify:
    """`--notify`: a URL (webhook) or an address (email), optionally after `fail:` (only
    when the job does not complete). ValueError says what is wrong."""
    target = text.strip()
    on: list[NotifyEvent] = ["end"]
    for prefix in ("fail:", "end:"):
        if target.startswith(prefix):
            on = [prefix[:-1]]  # type: ignore[list-item]
            target = target[len(prefix) :].strip()
    if "://" in target:
        return Notify.model_validate({"on": on, "webhook": target})
    if "@" in target:
        return Notify.model_validate({"on": on, "email": target})
    raise ValueError(f"expected an http(s) URL or a mail address (got {target!r})")
