"""What interactive sessions run, for every executor: a command started by the center for a
session (`SessionProcess`: the command itself with the local executor, `srun` with Slurm) and
the environment it gets. The byte stream of a forwarded TCP connection, which may be carried
by such a process, is `executors.forward_channel`'s.

A session's process is always a child of the center, started the same way:

- in a session of its own (`setsid`), so that everything it starts can be found and killed
  with it (`kill_session`: every process of that session, also those in other process groups
  — an interactive shell puts each pipeline in one);
- with a pseudo-terminal as its controlling terminal when the session asks for a tty
  (`setsid --ctty` on the pty's slave), pipes otherwise;
- through `setpriv`: as the job's unix account when the center runs jobs as their users, and
  always with `--pdeathsig KILL`, so it dies with the center thread that started it even if
  the center is killed outright (hence: start them on the event loop's thread, never on a
  worker thread that may end first);
- when it drops to the job's account, nothing of the job's environment reaches what runs as
  root: the job's variables are the user's to choose, and a PATH finding their own `setpriv`,
  or an LD_PRELOAD, BASH_ENV, ... acting on a root process would run their code as root. So
  `setsid` and `setpriv` are found on a fixed PATH (`ROOT_PATH`), by absolute path, and run
  with a fixed environment (`ROOT_ENV`); the job's variables reach only the process after
  the drop, through a file descriptor (`_LOADER`; never in argv, which `ps` shows everyone).
  A center that does not drop runs everything as itself, with the job's environment.

The center talks to it through non-blocking file descriptors only; the asyncio side
(`kaic.center.interactive.bridge`) decides when to read, so a client that stops reading
stops the process's output instead of filling the center's memory.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import pwd
import re
import shutil
import signal
import struct
import subprocess
import termios
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Protocol

from kaic.center.executors.base import ExecutorError

logger = logging.getLogger("kaic.center.interactive")

#: the default terminal size of a tty session that names none
DEFAULT_ROWS = 24
DEFAULT_COLS = 80
#: kaic's own variables, which a session's `env` cannot override (nor CUDA_VISIBLE_DEVICES)
RESERVED_PREFIX = "KAIC_"
RESERVED_NAMES = frozenset({"CUDA_VISIBLE_DEVICES"})
#: how many times `kill_session` looks again for processes forked meanwhile
_KILL_ROUNDS = 20


#: where the tools a session's process starts with are found (never on the job's PATH), and
#: the whole environment of what runs as root before the drop to the job's account
ROOT_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"
ROOT_ENV = {"PATH": ROOT_PATH, "LANG": "C.UTF-8"}
#: what runs first as the job's account, after the drop (bash: `read -d ''` reads the
#: NUL-separated `NAME=value` entries the center wrote to fd {fd}, and `export -- "$entry"`
#: takes each value as it is, never evaluated); it sets the job's environment in place of
#: ROOT_ENV, closes the fd and execs the command, found on the job's PATH
_LOADER = (
    "unset PATH LANG; "
    'while IFS= read -r -d "" -u {fd} entry; do export -- "$entry"; done; '
    'exec {fd}<&-; {enter}exec -- "$@"'
)
#: with a workdir: entered as the account (root never changes into a directory a user names)
_ENTER = 'cd -- "$1" || exit 126; shift; '

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def root_tool(name: str) -> str | None:
    """`name`'s absolute path on ROOT_PATH, or None."""
    return shutil.which(name, path=ROOT_PATH)


def tools_missing() -> str | None:
    """Why this host cannot start session processes (util-linux's setsid and setpriv, and
    bash, are needed), or None."""
    missing = [name for name in ("setsid", "setpriv", "bash") if root_tool(name) is None]
    if missing:
        return f"{' and '.join(missing)} not found in {ROOT_PATH} on the center host"
    return None


def require_root_tool(name: str) -> str:
    """`name`'s absolute path on ROOT_PATH; ExecutorError when it is not there."""
    found = root_tool(name)
    if found is None:
        raise ExecutorError(f"{name} not found in {ROOT_PATH} on the center host")
    return found


def environment_fd(env: Mapping[str, str]) -> int:
    """A memory file (close-on-exec) holding `env` as NUL-separated `NAME=value` entries,
    read from its start by `_LOADER`. ExecutorError for a name that is not a shell name
    (the API accepts none)."""
    bad = [name for name in env if not _NAME.fullmatch(name)]
    if bad:
        raise ExecutorError(f"environment variable name {bad[0]!r} is not valid")
    nul = [name for name, value in env.items() if "\0" in value]
    if nul:  # it would end its entry early (the API refuses them; an old stored job may not)
        raise ExecutorError(f"environment variable {nul[0]!r} contains a NUL byte")
    fd = os.memfd_create("kaic-env", os.MFD_CLOEXEC)
    try:
        data = b"".join(os.fsencode(f"{name}={value}") + b"\0" for name, value in env.items())
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.lseek(fd, 0, os.SEEK_SET)
    except BaseException:
        os.close(fd)
        raise
    return fd


def as_account(
    argv: Sequence[str],
    env: Mapping[str, str],
    account: pwd.struct_passwd | None,
    *,
    workdir: Path | str | None = None,
) -> tuple[list[str], dict[str, str], int | None]:
    """(command, environment for Popen, fd to pass or None) that run `argv` with `env`
    through `setpriv --pdeathsig KILL`, as `account` when given (see the module's
    docstring): the command and the environment are then root's own, fixed, the fd
    carries `env` to the process after the drop, and `workdir` is entered after it too (the
    caller then starts the command in `/`). The caller closes the fd once started."""
    setpriv = [require_root_tool("setpriv"), "--pdeathsig=KILL"]
    if account is None:
        return [*setpriv, "--", *argv], dict(env), None
    bash = require_root_tool("bash")  # before the fd: a missing tool must not leak it
    fd = environment_fd(env)
    setpriv += [f"--reuid={account.pw_uid}", f"--regid={account.pw_gid}", "--init-groups"]
    enter = _ENTER if workdir is not None else ""
    loader = [bash, "-c", _LOADER.format(fd=fd, enter=enter), "kaic-session"]
    where = [os.fspath(workdir)] if workdir is not None else []
    return [*setpriv, "--", *loader, *where, *argv], dict(ROOT_ENV), fd


class OutputFilter(Protocol):
    """Takes what is not the command's own out of a stream as it passes (Slurm: srun's
    reports): `feed` returns what to pass on now, `flush` what is left at the end."""

    def feed(self, data: bytes) -> bytes: ...

    def flush(self) -> bytes: ...


def session_environment(
    job_env: Mapping[str, str], extra: Mapping[str, str], *, tty: bool
) -> dict[str, str]:
    """The job's environment with a session's `extra` variables added; kaic's own
    (`KAIC_*`) and `CUDA_VISIBLE_DEVICES` stay the job's. A tty gets a TERM if none is set."""
    env = dict(job_env)
    for name, value in extra.items():
        if name.startswith(RESERVED_PREFIX) or name in RESERVED_NAMES:
            continue
        env[name] = value
    if tty:
        env.setdefault("TERM", "xterm")
    return env


def _stat_fields(pid: int) -> list[str] | None:
    """/proc/<pid>/stat after the command name: state, ppid, pgrp, session, ..."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text(encoding="ascii", errors="replace")
    except OSError:
        return None
    return text[text.rfind(")") + 2 :].split()


def session_members(sid: int) -> list[int]:
    """The live (not zombie) processes of session `sid`."""
    found = []
    with contextlib.suppress(OSError):
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            fields = _stat_fields(int(entry.name))
            if fields and len(fields) > 3 and fields[3] == str(sid) and fields[0] not in "ZX":
                found.append(int(entry.name))
    return found


def kill_session(sid: int) -> None:
    """SIGKILL every process of session `sid` (looking again for ones forked meanwhile)."""
    for _ in range(_KILL_ROUNDS):
        members = session_members(sid)
        if not members:
            return
        for pid in members:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
    logger.warning("session %s: processes still left after %d rounds", sid, _KILL_ROUNDS)


def set_window_size(fd: int, rows: int, cols: int) -> None:
    """Size the terminal of pty `fd` (the kernel tells its foreground process: SIGWINCH)."""
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


def exit_code_of(returncode: int) -> tuple[int, int | None]:
    """(exit code, signal) of a process's return code: 128+N for signal N, as for jobs."""
    if returncode < 0:
        return 128 - returncode, -returncode
    return returncode, None


def _close(fd: int | None) -> None:
    if fd is not None:
        with contextlib.suppress(OSError):
            os.close(fd)


class SessionProcess:
    """A process the center started for a session: its pid (also its session's id), its
    non-blocking file descriptors, and how to end it and everything it started.

    With a tty, `stdin` and `stdout` are the same fd (the pty's master) and `stderr` is None.
    `exit_fd` (a pidfd) becomes readable when the process has ended; `returncode` then
    reaps it. `kill` ends the whole session (and runs `on_kill`, e.g. Slurm's step cancel).
    `filters` (by fd) clean what is read from `stdout`/`stderr` before it is sent on.
    """

    def __init__(
        self,
        popen: subprocess.Popen[bytes],
        *,
        stdin: int,
        stdout: int,
        stderr: int | None,
        tty: bool,
        on_kill: Callable[[], None] | None = None,
        filters: Mapping[int, OutputFilter] | None = None,
    ) -> None:
        self.popen = popen
        self.filters = dict(filters or {})
        self.pid = popen.pid
        self.stdin: int | None = stdin
        self.stdout = stdout
        self.stderr = stderr
        self.tty = tty
        self.on_kill = on_kill
        self.exit_fd = os.pidfd_open(popen.pid)
        for fd in {stdin, stdout, *([stderr] if stderr is not None else [])}:
            os.set_blocking(fd, False)

    def resize(self, rows: int, cols: int) -> None:
        """Resize the session's terminal (nothing without a tty)."""
        if self.tty:
            set_window_size(self.stdout, rows, cols)

    def close_stdin(self) -> None:
        """EOF on the process's stdin. A terminal has no EOF of its own: its EOF character
        (^D) is written instead, which ends input in the terminal's normal mode."""
        if self.tty:
            with contextlib.suppress(OSError):
                os.write(self.stdout, b"\x04")
            return
        _close(self.stdin)
        self.stdin = None

    @property
    def returncode(self) -> int | None:
        """The process's return code (negative: killed by that signal) once it ended."""
        return self.popen.poll()

    def kill(self) -> None:
        """End the process and everything it started (its whole session), now. The process
        itself is reaped by `returncode` afterwards."""
        if self.on_kill is not None:
            try:
                self.on_kill()
            except Exception:
                logger.exception("session process %s: cleaning up failed", self.pid)
        if self.popen.returncode is None:
            kill_session(self.pid)

    def reap_session(self) -> None:
        """After the process ended: end what it left behind in its session (background
        children), before the pid is reaped and could be reused."""
        kill_session(self.pid)

    def close(self) -> None:
        """Close the center's ends of the descriptors (after `kill` or the process's end)."""
        for fd in {self.stdin, self.stdout, self.stderr, self.exit_fd}:
            _close(fd)
        self.stdin = None
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(timeout=5)


def spawn(
    argv: Sequence[str],
    *,
    env: Mapping[str, str],
    cwd: Path | str,
    tty: bool,
    rows: int | None = None,
    cols: int | None = None,
    account: pwd.struct_passwd | None = None,
    on_kill: Callable[[], None] | None = None,
    noise: Callable[[], OutputFilter] | None = None,
) -> SessionProcess:
    """Start `argv` for a session (see the module's docstring): in its own session, on a
    pty of `rows` x `cols` when `tty`, as `account` when given, with `env` (after the drop
    only: `as_account`); `noise` makes the filter of its stderr (a tty: of its one stream).
    Call it on the event loop's thread. Raises ExecutorError when it cannot start (the
    workdir is gone, ...; as an account, a workdir it cannot enter ends the command with
    126 and bash's reason on its stderr)."""
    opened: list[int] = []
    try:
        command, popen_env, env_fd = as_account(argv, env, account, workdir=cwd)
        if env_fd is not None:  # dropping: the workdir is entered as the account
            cwd = "/"
            opened.append(env_fd)
        pass_fds = () if env_fd is None else (env_fd,)
        if tty:
            master, slave = os.openpty()
            opened += [master, slave]
            set_window_size(master, rows or DEFAULT_ROWS, cols or DEFAULT_COLS)
            # Not a new session here: `setsid --ctty` makes one and takes the pty as its
            # controlling terminal (a process group leader would make setsid fork).
            popen = subprocess.Popen(
                [require_root_tool("setsid"), "--ctty", *command],
                stdin=slave,
                stdout=slave,
                stderr=slave,
                cwd=cwd,
                env=popen_env,
                close_fds=True,
                pass_fds=pass_fds,
            )
            _close(slave)
            _close(env_fd)
            return SessionProcess(
                popen,
                stdin=master,
                stdout=master,
                stderr=None,
                tty=True,
                on_kill=on_kill,
                filters={master: noise()} if noise else None,
            )
        in_r, in_w = os.pipe()
        opened += [in_r, in_w]
        out_r, out_w = os.pipe()
        opened += [out_r, out_w]
        err_r, err_w = os.pipe()
        opened += [err_r, err_w]
        popen = subprocess.Popen(
            command,
            stdin=in_r,
            stdout=out_w,
            stderr=err_w,
            cwd=cwd,
            env=popen_env,
            close_fds=True,
            pass_fds=pass_fds,
            start_new_session=True,
        )
        for fd in (in_r, out_w, err_w, env_fd):
            _close(fd)
        return SessionProcess(
            popen,
            stdin=in_w,
            stdout=out_r,
            stderr=err_r,
            tty=False,
            on_kill=on_kill,
            filters={err_r: noise()} if noise else None,
        )
    except (OSError, ValueError) as exc:
        for fd in opened:
            _close(fd)
        raise ExecutorError(f"could not start the command: {exc}") from exc
