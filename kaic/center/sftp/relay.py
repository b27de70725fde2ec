"""The center's side of serving SFTP as the user's unix account: the worker and the relay.

Why a process per connection (not per SFTP channel, not per user): the worker is a Python
interpreter with paramiko loaded — about 0.3 s of CPU and 50 MB to start. kaic opens up to
four SFTP channels on each of its connections, so a process per channel would cost a
default `kaic data push` eight of them; one per connection costs two. A process per user
would couple unrelated sessions (one crash ends them all) and outlive each of them. So a
connection's worker starts once the login is admitted, serves every SFTP channel of that
connection (a thread each), and ends with it. The number of workers a user can hold is the
number of connections a user may hold (`sftp_max_connections_per_user`).

The center keeps the SSH side — keys, encryption, the channel windows — and only copies
bytes between an SFTP channel and the worker's socket for it, two threads per channel (one
each way, so neither direction can stall the other). The worker is never given a path to
resolve as root, and the center resolves none for it.

Life and death: the worker's control socket is the connection's; the connection's thread
(`EmbeddedSftp._serve`) starts it, waits for it, closes that socket at the end and kills
the worker if it has not exited `WORKER_STOP_GRACE` seconds later. A worker that exits
ends its connection (the client sees a closed channel or connection, never a hang). The
worker itself asks the kernel for SIGKILL when its parent thread dies — the connection's
thread, or the whole center — so no worker outlives either.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import subprocess
import threading
from pathlib import Path
from typing import Any

import paramiko

from kaic.center.runas import UnixAccount, helper_command, helper_environment

logger = logging.getLogger("kaic.center.sftp")

#: seconds a worker may take to start and switch accounts
WORKER_START_TIMEOUT = 30.0
#: seconds a worker gets to exit after its connection ended, before SIGKILL
WORKER_STOP_GRACE = 2.0
#: bytes copied at once between a channel and the worker (an SFTP packet is at most 256 KiB)
RELAY_CHUNK = 256 * 1024
#: seconds to wait for the relay's other direction once both of its waits were woken
RELAY_JOIN_TIMEOUT = 10.0


class WorkerFailed(Exception):
    """The worker could not start or switch to the account; the message says why."""


class ConnectionWorker:
    """The worker process of one connection: started, handed sessions, stopped."""

    def __init__(self, account: UnixAccount, root: Path | str) -> None:
        self.account = account
        self.root = str(root)
        self._proc: subprocess.Popen[bytes] | None = None
        self._ctl: socket.socket | None = None
        self._lock = threading.Lock()

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self, timeout: float = WORKER_START_TIMEOUT) -> None:
        """Start the worker and wait until it runs as the account; WorkerFailed if not.

        Call it from the thread that lives as long as the connection: the worker dies
        with that thread (PR_SET_PDEATHSIG follows the thread that started it).
        """
        ctl, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        account = self.account
        command = helper_command(
            "kaic.center.sftp.worker",
            account,
            f"--ctl-fd={theirs.fileno()}",
            f"--root={self.root}",
        )
        try:
            self._proc = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                pass_fds=(theirs.fileno(),),
                env=helper_environment(),
                cwd="/",
            )
        except OSError as exc:
            ctl.close()
            raise WorkerFailed(f"cannot start the worker: {exc}") from exc
        finally:
            theirs.close()
        self._ctl = ctl
        try:
            ctl.settimeout(timeout)
            reply = ctl.recv(2048)
            ctl.settimeout(None)
        except OSError as exc:
            self.stop(0)
            raise WorkerFailed(f"the worker did not start in {timeout:.0f} s ({exc})") from exc
        if reply != b"R":
            self.stop(0)
            why = reply[1:].decode("utf-8", "replace") if reply else "it exited"
            raise WorkerFailed(f"the worker could not serve as {account.name}: {why}")

    def open_session(self) -> socket.socket:
        """Hand the worker a new SFTP session; returns the center's end of its socket."""
        if self._ctl is None:
            raise OSError("the worker is not running")
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            with self._lock:
                socket.send_fds(self._ctl, [b"S"], [theirs.fileno()])
        except OSError:
            ours.close()
            raise
        finally:
            theirs.close()
        return ours

    def stop(self, grace: float = WORKER_STOP_GRACE) -> None:
        """End the worker: EOF on its control socket, SIGKILL after `grace` seconds."""
        with self._lock:
            ctl, self._ctl = self._ctl, None
        if ctl is not None:
            ctl.close()
        proc = self._proc
        if proc is None:
            return
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class WorkerRelay(paramiko.SubsystemHandler):
    """The `sftp` subsystem of a connection served by its worker: the center copies bytes.

    paramiko builds one per SFTP channel, with the connection's gate as `server`; the gate
    hands out the connection's worker (`wait_for_worker`) once it has started.
    """

    def start_subsystem(self, name: str, transport: Any, channel: paramiko.Channel) -> None:
        gate: Any = self.get_server()  # the connection's Gate
        worker: ConnectionWorker | None = gate.wait_for_worker(WORKER_START_TIMEOUT)
        if worker is None:
            return  # no worker (it failed, or the connection is ending): the channel closes
        try:
            sock = worker.open_session()
        except OSError as exc:
            logger.warning(
                "sftp: cannot hand a session to the worker of %s: %s", gate.username, exc
            )
            return
        relay(channel, sock)


def relay(channel: paramiko.Channel, sock: socket.socket) -> None:
    """Copy bytes both ways between `channel` and `sock` until either side ends.

    The client's EOF reaches the worker as EOF (it answers what it has, then closes);
    the worker's end closes the channel. Returns once both directions have stopped.
    """

    def upstream() -> None:  # client -> worker
        try:
            while data := channel.recv(RELAY_CHUNK):
                sock.sendall(data)
        except (OSError, EOFError):
            pass
        finally:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_WR)

    pump = threading.Thread(target=upstream, name="kaic-sftp-relay", daemon=True)
    pump.start()
    try:
        while data := sock.recv(RELAY_CHUNK):  # worker -> client
            channel.sendall(data)
    except (OSError, EOFError):
        pass
    finally:
        # Wake the other direction wherever it waits: on the socket or on the channel.
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(Exception):
            channel.close()
        pump.join(RELAY_JOIN_TIMEOUT)
        if pump.is_alive():  # pragma: no cover - both of its waits were woken above
            logger.warning("sftp: a relay thread did not stop")
        else:
            sock.close()
