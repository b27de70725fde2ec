"""`kaic exec` and `kaic shell`: a command inside a running job, its stdin, stdout and
stderr carried over the center's exec WebSocket (`kaic.client.interactive`).

Without a tty the command's stdout and stderr stay separate and local stdin is passed until
it ends (then the command sees EOF). With a tty (`exec -t`, `shell`) the command runs on a
pseudo-terminal in the job; when kaic's own stdin is a terminal it is put in raw mode, so
every key — Ctrl-C and Ctrl-Z included — goes to the remote side, and window size changes
follow (`kaic.flows.terminal`). The exit code is the command's; a session the center cut
(the job ended) says why on stderr; a dropped connection is exit 5.
"""

from __future__ import annotations

import contextlib
import os
import select
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from kaic.errors import KaicError, Rejected
from kaic.flows.terminal import DEFAULT_SIZE, Terminal
from kaic.flows.ui import Ui
from kaic.models.limits import CHUNK_BYTES
from kaic.text import visible

if TYPE_CHECKING:
    from kaic.client.interactive import ExecSession
    from kaic.flows.session import Session
    from kaic.models import ExecStart, ExecStatus

Writer = Callable[[bytes], None]

#: the shell of `kaic shell`: the account's login shell from its passwd entry, or bash, or
#: sh — run interactively, not as a login shell (a login shell's /etc/profile would reset
#: the job's PATH, and with it its virtualenv or modules)
SHELL_SCRIPT = (
    'shell=$(getent passwd "$(id -un)" 2>/dev/null | cut -d: -f7); '
    'case "$shell" in ""|*/nologin|*/false) shell=$(command -v bash || echo /bin/sh);; esac; '
    'exec "$shell" -i'
)
SHELL_ARGV = ["/bin/sh", "-c", SHELL_SCRIPT]

#: the largest piece of stdin sent in one message (the protocol's chunk)
_CHUNK = CHUNK_BYTES


@dataclass(frozen=True)
class Streams:
    """Where a session's bytes come from and go to: `stdin` (a binary file, or a file
    object with a descriptor), a writer per output stream, and the local terminal when
    stdin is one."""

    stdin: Any
    stdout: Writer
    stderr: Writer
    terminal: Terminal | None = None


@dataclass(frozen=True)
class Command:
    """What to run in the job, and how: `argv`, on a pseudo-terminal when `tty`, with `env`
    added to the job's environment."""

    argv: list[str]
    tty: bool = False
    env: Mapping[str, str] = field(default_factory=dict)


def start_message(command: Command, terminal: Terminal | None) -> ExecStart:
    """The session's `ExecStart` (a usage error naming CMD for a refused command)."""
    from kaic.flows.inputs import user_input
    from kaic.models import ExecStart

    rows, cols = terminal.size() if terminal is not None else DEFAULT_SIZE
    with user_input({"argv": "CMD", "env": "the environment (TERM)"}):
        return ExecStart(
            argv=list(command.argv),
            tty=command.tty,
            rows=rows if command.tty else None,
            cols=cols if command.tty else None,
            env=dict(command.env),
        )


def run_command(session: Session, job_id: str, command: Command, streams: Streams, ui: Ui) -> int:
    """Run `command` in the job until it ends; returns its exit code (see module doc)."""
    if not command.argv:
        raise KaicError("nothing to run: give the command after `--`")
    terminal = streams.terminal if command.tty else None
    start = start_message(command, terminal)
    remote = session.interactive.exec(job_id, start)
    pump = InputPump(streams.stdin, remote, resizes=terminal)
    raw = terminal.raw(on_resize=pump.note_resize) if terminal else contextlib.nullcontext()
    try:
        with raw:
            pump.start()
            status = _copy_output(remote, streams)
    finally:
        pump.stop()
        remote.close()
    return _exit_code(status, job_id, ui)


def _copy_output(remote: ExecSession, streams: Streams) -> ExecStatus:
    from kaic.client.interactive import Output

    writers = {"stdout": streams.stdout, "stderr": streams.stderr}
    while True:
        event = remote.receive()
        if isinstance(event, Output):
            writers[event.stream](event.data)
        else:
            return event


def _exit_code(status: ExecStatus, job_id: str, ui: Ui) -> int:
    if status.reason and status.exit_code is not None:
        ui.info(f"kaic: session in job {visible(job_id)} ended: {visible(status.reason)}")
    if status.exit_code is None:  # the center refused or could not start it
        raise Rejected(
            f"the command did not run in job {visible(job_id)}"
            + (f": {visible(status.reason)}" if status.reason else "")
        )
    return status.exit_code


def open_shell(
    session: Session, job_id: str, streams: Streams, ui: Ui, env: Mapping[str, str]
) -> int:
    """`kaic shell`: an interactive shell on a pseudo-terminal in the job."""
    return run_command(session, job_id, Command(SHELL_ARGV, tty=True, env=env), streams, ui)


class InputPump:
    """Copies local stdin into the session (EOF when it ends), and sends the terminal's new
    size after each SIGWINCH — from one thread, so the signal handler only writes a byte to
    a pipe (`note_resize`) and never touches the connection."""

    def __init__(self, source: Any, remote: ExecSession, *, resizes: Terminal | None) -> None:
        self._source = source
        self._remote = remote
        self._terminal = resizes
        self._wake_r, self._wake_w = os.pipe()
        self._thread = threading.Thread(target=self._run, name="kaic-stdin", daemon=True)
        self._stopped = False

    def start(self) -> None:
        self._thread.start()

    def note_resize(self) -> None:
        """Called from the SIGWINCH handler: the size is read and sent by the pump."""
        with contextlib.suppress(OSError):
            os.write(self._wake_w, b"r")

    def stop(self) -> None:
        """Stop copying (the session ended); the pump thread exits promptly."""
        if self._stopped:
            return
        self._stopped = True
        with contextlib.suppress(OSError):
            os.write(self._wake_w, b"q")
        if self._thread.is_alive():
            self._thread.join(timeout=1)
        if not self._thread.is_alive():
            os.close(self._wake_r)
        os.close(self._wake_w)

    def _run(self) -> None:
        try:
            fd = _descriptor(self._source)
            if fd is None:
                self._copy_file()
            else:
                self._copy_fd(fd)
        except KaicError:
            pass  # the session ended: the receiving side reports how

    def _copy_file(self) -> None:
        """A stdin without a descriptor (a test's bytes): copied, then EOF."""
        stream = getattr(self._source, "buffer", self._source)
        while not self._stopped:
            data = stream.read1(_CHUNK) if hasattr(stream, "read1") else stream.read(_CHUNK)
            if not data:
                break
            self._remote.send_stdin(data if isinstance(data, bytes) else data.encode())
        if not self._stopped:
            self._remote.close_stdin()

    def _copy_fd(self, fd: int) -> None:
        watched = [fd, self._wake_r]
        while True:
            ready, _, _ = select.select(watched, [], [])
            if self._wake_r in ready:
                signals = os.read(self._wake_r, 64)
                if b"q" in signals:
                    return
                if b"r" in signals and self._terminal is not None:
                    self._remote.resize(*self._terminal.size())
            if fd in ready:
                data = os.read(fd, _CHUNK)
                if data:
                    self._remote.send_stdin(data)
                else:
                    self._remote.close_stdin()
                    watched = [self._wake_r]  # resizes still count after stdin ended


def _descriptor(source: Any) -> int | None:
    try:
        fd = source.fileno()
    except (AttributeError, OSError, ValueError):
        return None
    return fd if isinstance(fd, int) else None
