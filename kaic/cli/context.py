"""The one context object every command receives (gh's Factory + IOStreams).

It holds the chosen profile, the output streams and the lazily opened center session, so
tests can swap any of them. Only stdlib at import time: the CLI must start fast.
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import IO, TYPE_CHECKING, Any

import typer

from kaic.text import visible, visible_lines

if TYPE_CHECKING:
    from kaic.flows.session import Session


#: what `warn` adds, and so strips from a message that carries it already
_WARNING_PREFIX = re.compile(r"^(?:\s*warning:\s*)+", re.IGNORECASE)


def debug_enabled() -> bool:
    return os.environ.get("KAIC_DEBUG", "") not in ("", "0", "false", "no")


@dataclass
class AppContext:
    """State shared by the commands of one kaic invocation."""

    profile: str | None = None
    stdout: IO[str] = field(default_factory=lambda: sys.stdout)
    stderr: IO[str] = field(default_factory=lambda: sys.stderr)
    now: Callable[[], float] = time.time
    sleep: Callable[[float], None] = time.sleep
    _session: Session | None = None

    # -- output -----------------------------------------------------------------------
    # Every line goes through `visible_lines`: whatever a renderer interpolated, no control
    # sequence from outside data reaches the terminal. Renderers still pass each outside
    # value through `visible` (which also escapes line breaks inside a value).
    def out(self, text: str = "") -> None:
        """Data for stdout (ids, tables, JSON)."""
        print(visible_lines(text), file=self.stdout)

    def info(self, text: str) -> None:
        """Status, hints and notices: stderr, so stdout stays data."""
        print(visible_lines(text), file=self.stderr)

    def warn(self, text: str) -> None:
        """One warning line on stderr. The prefix is added here only: a message that already
        starts with "warning:" (the layers below call this with their own text) keeps one."""
        print(f"warning: {visible(_WARNING_PREFIX.sub('', text))}", file=self.stderr)

    def debug(self, text: str) -> None:
        if debug_enabled():
            print(f"debug: {text}", file=self.stderr)

    def json(self, data: Any) -> None:
        print(json.dumps(data, indent=2, default=str), file=self.stdout)

    def is_terminal(self) -> bool:
        return self.stdout.isatty()

    # -- center -----------------------------------------------------------------------
    def session(self) -> Session:
        """The center session (profile, credentials, API client), opened on first use."""
        if self._session is None:
            from kaic.flows.session import open_session

            self._session = open_session(
                self.profile,
                warn=self.warn,
                notice=self.info,
                debug_log=self.debug if debug_enabled() else None,
            )
        return self._session

    def close(self) -> None:
        if self._session is not None:
            self._session.close()
            self._session = None


def get_app(ctx: typer.Context) -> AppContext:
    """The AppContext of this invocation (created by the root callback)."""
    obj = ctx.find_root().obj
    if not isinstance(obj, AppContext):
        obj = AppContext()
        ctx.find_root().obj = obj
    return obj
