"""The worker process serving one SSH connection's SFTP sessions as the user's unix account.

A center that runs jobs as users (`--run-as-user`, running as root) must not touch users'
files as root: files pushed as root belong to root (the user's own jobs cannot write into
their staged data), and every path a client names would be resolved with root's rights,
confinement being the only barrier. So, like OpenSSH's sftp-server, the file serving runs
as the user: the center (`kaic.center.sftp.relay`) starts this module for each logged-in
connection as `python -m kaic.center.sftp.worker …` and relays each SFTP channel's bytes to
it over a socket. In order:

1. Import what it needs — as root, but only the center's own code, no user path.
2. Switch to the account for good: `setgroups` (the account's groups), `setresgid`,
   `setresuid`, then check that all three ids changed and that root cannot be regained.
3. `PR_SET_PDEATHSIG(SIGKILL)` — after the switch, which clears it — then check the center
   is still its parent: the worker never outlives the center, even one killed with -9.
4. Set the umask sshd's sessions get by default (022), check the storage root opens as
   the user; answer `R` (ready) on the control socket, or
   `E<reason>` and exit (the center logs the reason and closes the connection).
5. For each SFTP channel the center sends one end of a socketpair (SCM_RIGHTS) on the
   control socket; a thread serves it with the same `SftpSubsystem` and `ConfinedSFTP` the
   in-process endpoint uses. The kernel now checks every access against the user's
   rights, and the confinement still applies on top.
6. EOF on the control socket (the connection ended, or the center is gone): the sessions
   are shut down and the process exits.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import socket
import sys
import threading
from dataclasses import dataclass
from typing import Any

from kaic.center.runas import add_account_arguments, become

logger = logging.getLogger("kaic.center.sftp")

#: seconds the sessions get to finish once the connection has ended
SESSION_GRACE = 2.0
#: the file mode creation mask of the user's files: what sshd's sessions (and OpenSSH's
#: sftp-server) use by default, whatever umask the center itself was started with
UMASK = 0o022


@dataclass
class Login:
    """What `ConfinedSFTP` needs to know about the session's user (the gate's fields)."""

    storage_root: str
    username: str


class SocketChannel:
    """The worker's end of one relayed SFTP session, shaped as paramiko's SFTP server wants
    its channel (and that channel's transport: a name, a log channel, `_log`)."""

    def __init__(self, sock: socket.socket, name: str) -> None:
        self._sock = sock
        self._name = name
        self._lock = threading.Lock()
        self._closed = False

    def get_transport(self) -> SocketChannel:
        return self

    def get_name(self) -> str:
        return self._name

    def get_log_channel(self) -> str:
        return "kaic.center.sftp.wire"

    def get_hexdump(self) -> bool:
        return False

    def _log(self, level: int, message: Any) -> None:
        logging.getLogger(self.get_log_channel()).log(level, "%s", message)

    def send(self, data: bytes) -> int:
        return self._sock.send(data)

    def recv(self, size: int) -> bytes:
        return self._sock.recv(size)

    def shutdown(self) -> None:
        """End the session from outside: its reads see EOF (the descriptor stays ours)."""
        with self._lock:
            if not self._closed:
                with contextlib.suppress(OSError):
                    self._sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        with self._lock:
            if not self._closed:
                self._closed = True
                self._sock.close()


def _serve_sessions(ctl: socket.socket, login: Login) -> None:
    from kaic.center.sftp.fs import ConfinedSFTP
    from kaic.center.sftp.subsystem import SftpSubsystem

    sessions: list[tuple[SocketChannel, threading.Thread]] = []
    count = 0
    while True:
        try:
            message, fds, _flags, _address = socket.recv_fds(ctl, 16, 4)
        except OSError:
            break
        if not message:
            break  # the connection ended (or the center is gone)
        for fd in fds:
            count += 1
            channel = SocketChannel(socket.socket(fileno=fd), f"{os.getpid()}.{count}")
            handler = SftpSubsystem(channel, "sftp", login, ConfinedSFTP)  # type: ignore[arg-type]
            handler.daemon = True
            handler.start()
            sessions.append((channel, handler))
        sessions = [(c, h) for c, h in sessions if h.is_alive()]
    for session, _thread in sessions:
        session.shutdown()
    for _session, thread in sessions:
        thread.join(SESSION_GRACE)


def _check_root(root: str) -> None:
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    os.close(fd)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kaic.center.sftp.worker")
    parser.add_argument("--ctl-fd", type=int, required=True)
    parser.add_argument("--root", required=True)
    add_account_arguments(parser)
    args = parser.parse_args(argv)
    # Ctrl-C on a center in a terminal reaches its whole process group: the center stops
    # its connections, and with them their workers.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s[worker %(process)d]: %(message)s",
    )
    logging.getLogger("kaic.center.sftp.wire").setLevel(logging.WARNING)
    ctl = socket.socket(fileno=args.ctl_fd)
    try:
        # Everything is imported before the switch: afterwards the center's code and the
        # standard library may not be readable (an interpreter under /root, say).
        import array  # noqa: F401  (socket.recv_fds imports it on first use)

        import kaic.center.sftp.fs
        import kaic.center.sftp.subsystem  # noqa: F401

        become(args)
        os.umask(UMASK)
        _check_root(args.root)
    except Exception as exc:
        reason = f"{type(exc).__name__}: {exc}" if not isinstance(exc, OSError) else str(exc)
        with contextlib.suppress(OSError):
            ctl.send(b"E" + reason.encode("utf-8", "replace")[:1000])
        return 1
    ctl.send(b"R")
    _serve_sessions(ctl, Login(storage_root=args.root, username=args.user))
    return 0


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    # Daemon session threads may still sit in a system call: do not wait for them.
    os._exit(code)
