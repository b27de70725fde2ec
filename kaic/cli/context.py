"""The one context object every command receives (gh's Factory + IOStreams).

It holds the chosen profile, the output streams, the output sink and the lazily opened
center session, so tests can swap any of them. Only stdlib at import time: the CLI must start
fast.

The output sink: a command hands its result over once (`emit(data, human)`), and the sink
chooses how it is shown — one JSON document on stdout (`--json`, filtered by `--jq EXPR`), or
the command's human rendering (tables, ids; none at all for a command whose notices on stderr
said everything). `--json` and `--jq` set the choice themselves (`kaic.cli.options`): no
command branches on them.
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
    from kaic.flows.ui import Ui


#: what `warn` adds, and so strips from a message that carries it already
_WARNING_PREFIX = re.compile(r"^(?:\s*warning:\s*)+", re.IGNORECASE)


def debug_enabled() -> bool:
    return os.environ.get("KAIC_DEBUG", "") not in ("", "0", "false", "no")


@dataclass
class Output:
    """How this invocation shows results: JSON (`--json`, or a `--jq` filter) or for humans."""

    json: bool = False
    jq: str | None = None
    #: `--json id,state`: only these fields of the document (of each element of a list)
    fields: list[str] | None = None


@dataclass
class AppContext:
    """State shared by the commands of one kaic invocation."""

    profile: str | None = None
    stdout: IO[str] = field(default_factory=lambda: sys.stdout)
    stderr: IO[str] = field(default_factory=lambda: sys.stderr)
    now: Callable[[], float] = time.time
    sleep: Callable[[float], None] = time.sleep
    #: the words kaic was run with (after the program name), as `main` hands them over; None
    #: for an embedding caller. `kaic submit` reads what came after `--` from them.
    argv: list[str] | None = None
    #: the httpx transport of every API client this invocation makes (tests: a fake
    #: center in process); None: the network
    transport: Any = None
    output: Output = field(default_factory=Output)
    _session: Session | None = None

    # -- output -----------------------------------------------------------------------
    # Every line goes through `visible_lines`: whatever a renderer interpolated, no control
    # sequence from outside data reaches the terminal. Renderers still pass each outside
    # value through `visible` (which also escapes line breaks inside a value).
    def emit(self, data: Any, human: Callable[[], None] | None = None) -> None:
        """The command's result, handed over once: as JSON (`--json` / `--jq`), else shown by
        `human` (None: nothing on stdout — the notices on stderr said it all)."""
        if self.output.json:
            if self.output.fields:
                from kaic.cli.json_fields import select_fields

                data = select_fields(data, self.output.fields)
            if self.output.jq is None:
                self.json(data)
            else:
                from kaic.cli.jq import run_jq

                # Strings come out raw, as `jq -r` prints them; on a terminal they are
                # outside data like any other and shown with their controls made visible.
                show = visible if self.is_terminal() else str
                for line in run_jq(self.output.jq, data, show=show):
                    print(line, file=self.stdout)
        elif human is not None:
            human()

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

    def ui(self) -> Ui:
        """What the flows say through: notices and warnings on stderr, the request log under
        KAIC_DEBUG, a progress bar for transfers on a terminal, this context's `sleep`."""
        from functools import partial

        from kaic.cli.progress import transfer_progress
        from kaic.flows.ui import Ui

        return Ui(
            info=self.info,
            warn=self.warn,
            debug=self.debug if debug_enabled() else None,
            progress=partial(transfer_progress, self.stderr),
            sleep=self.sleep,
        )

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
                transport=self.transport,
                sleep=self.sleep,
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
