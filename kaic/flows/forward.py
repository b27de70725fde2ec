"""`kaic forward JOB PORT[:LOCALPORT]...`: ports inside a running job, reachable on this
machine's 127.0.0.1 (Jupyter, TensorBoard, a debugger).

Each local port listens on 127.0.0.1 only; each accepted connection gets a WebSocket of its
own to the center (`kaic.client.interactive.ForwardStream`), which opens the TCP connection
inside the job — so many connections run at once, and one that fails (nothing listens on the
port in the job yet) is said on stderr while the others go on. The forward ends when the job
does (its state is polled, riding out a center outage as `kaic wait` does) or on Ctrl-C.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from kaic.errors import KaicError, Rejected, UsageError
from kaic.flows.ui import Ui
from kaic.models.limits import CHUNK_BYTES
from kaic.text import visible

if TYPE_CHECKING:
    from kaic.client.interactive import ForwardStream
    from kaic.flows.session import Session
    from kaic.models import Job

#: bytes read from a local connection at a time (the protocol's chunk)
_CHUNK = CHUNK_BYTES


@dataclass(frozen=True)
class PortSpec:
    """`PORT[:LOCALPORT]`: a port inside the job and the local port that reaches it."""

    remote: int
    local: int


def parse_ports(specs: list[str]) -> list[PortSpec]:
    """`8888`, `8888:18888` -> PortSpec; a usage error naming the spec otherwise."""
    if not specs:
        raise UsageError("give at least one PORT to forward", hint="e.g. `kaic forward 42 8888`")
    parsed: list[PortSpec] = []
    for spec in specs:
        remote, sep, local = spec.partition(":")
        ports = [_port(remote, spec), _port(local, spec) if sep else None]
        parsed.append(PortSpec(ports[0] or 0, ports[1] if ports[1] is not None else ports[0] or 0))
    locals_ = [p.local for p in parsed]
    taken_twice = sorted({p for p in locals_ if locals_.count(p) > 1})
    if taken_twice:
        raise UsageError(
            f"local port {taken_twice[0]} is given twice",
            hint="give each a LOCALPORT of its own: PORT:LOCALPORT",
        )
    return parsed


def _port(text: str, spec: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise UsageError(
            f"PORT[:LOCALPORT]: '{visible(spec)}' is not a port (1-65535) or PORT:LOCALPORT",
            hint="e.g. `kaic forward 42 8888` or `kaic forward 42 8888:18888`",
        )
    return int(text)


def running_job(session: Session, job_id: str) -> Job:
    """The job, which must be RUNNING (a rejection naming its state otherwise, exit 6)."""
    job = session.jobs.get(job_id)
    if job.state.value != "RUNNING":
        raise Rejected(
            f"job {visible(job_id)} is {job.state.value}, not RUNNING: "
            "interactive sessions need a running job",
            hint="wait for it to start: `kaic wait` ends only when it ends; see `kaic show "
            f"{visible(job_id)}`",
        )
    return job


def listen(spec: PortSpec, job_id: str) -> socket.socket:
    """A listening socket on 127.0.0.1:LOCALPORT, or an error naming the port and the fix."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.bind(("127.0.0.1", spec.local))
    except OSError as exc:
        sock.close()
        raise KaicError(
            f"cannot listen on 127.0.0.1:{spec.local}: {exc.strerror or exc}",
            hint=f"another program uses it; choose a free local port: `kaic forward "
            f"{visible(job_id)} {spec.remote}:LOCALPORT` (e.g. {spec.remote}:{_suggest()})",
        ) from None
    sock.listen(128)
    return sock


def _suggest() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def forward(
    session: Session,
    job_id: str,
    ports: list[PortSpec],
    ui: Ui,
    *,
    on_listening: Callable[[PortSpec, str], None],
) -> Job:
    """Forward until the job ends (returned as it ended) or Ctrl-C (KeyboardInterrupt)."""
    from kaic.flows.wait import CenterOutage, wait_for_jobs

    running_job(session, job_id)
    listeners = []
    relays = Relays(session, job_id, ui)
    try:
        for spec in ports:
            listeners.append((spec, listen(spec, job_id)))
        for spec, sock in listeners:
            on_listening(spec, f"http://127.0.0.1:{spec.local}")
            threading.Thread(
                target=relays.accept,
                args=(sock, spec),
                name=f"kaic-listen-{spec.local}",
                daemon=True,
            ).start()
        final = wait_for_jobs(
            session.jobs, [job_id], sleep=ui.sleep, on_reachability=CenterOutage(ui.info)
        )[0]
    finally:
        for _spec, sock in listeners:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)  # wakes the thread blocked in accept()
            sock.close()
        relays.close_all()
    return final


class Relays:
    """The connections being forwarded: one thread per direction of each."""

    def __init__(self, session: Session, job_id: str, ui: Ui) -> None:
        self._session = session
        self._job_id = job_id
        self._ui = ui
        self._lock = threading.Lock()
        self._open: set[ForwardStream] = set()

    def accept(self, listener: socket.socket, spec: PortSpec) -> None:
        while True:
            try:
                conn, _peer = listener.accept()
            except OSError:
                return  # the listener was closed: the forward ends
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            threading.Thread(
                target=self.relay, args=(conn, spec), name="kaic-forward", daemon=True
            ).start()

    def relay(self, conn: socket.socket, spec: PortSpec) -> None:
        """Carry one connection both ways until both ends are done (or one fails)."""
        from kaic.client.interactive import ForwardRefused

        try:
            stream = self._session.interactive.forward(self._job_id, spec.remote)
        except KaicError as exc:
            self._ui.warn(f"127.0.0.1:{spec.local}: {exc.message}")
            conn.close()
            return
        with self._lock:
            self._open.add(stream)
        upstream = threading.Thread(target=_upstream, args=(conn, stream), daemon=True)
        upstream.start()
        try:
            _downstream(stream, conn)
        except ForwardRefused as exc:
            self._ui.warn(f"127.0.0.1:{spec.local}: {exc.message}")
        except KaicError as exc:
            self._ui.warn(f"127.0.0.1:{spec.local}: connection ended: {exc.message}")
        finally:
            with self._lock:
                self._open.discard(stream)
            stream.close()
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
            upstream.join(timeout=5)
            conn.close()

    def close_all(self) -> None:
        with self._lock:
            streams = list(self._open)
        for stream in streams:
            with contextlib.suppress(Exception):
                stream.close()


def _upstream(conn: socket.socket, stream: ForwardStream) -> None:
    """Local -> job: bytes as they come, then EOF (a half-close reaches the job's side)."""
    try:
        while True:
            data = conn.recv(_CHUNK)
            if not data:
                stream.send_eof()
                return
            stream.send(data)
    except (OSError, KaicError):
        stream.close()  # the local side failed, or the stream ended: the other thread ends


def _downstream(stream: ForwardStream, conn: socket.socket) -> None:
    """Job -> local until the stream ends; the job side's EOF half-closes the local socket."""
    while True:
        data = stream.receive()
        if data is None:
            return
        if not data:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_WR)
            continue
        try:
            conn.sendall(data)
        except OSError:
            return  # the local program went away
