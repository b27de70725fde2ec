"""Running the center: uvicorn (with TLS), ready file, local-center bootstrap.

The center listens on loopback unless its operator says how clients reach it securely: it
serves HTTPS itself (`tls_cert`/`tls_key`, through uvicorn's ssl options) or a TLS proxy
stands in front of it (`behind_tls_proxy`). Both are checked before anything binds
(`kaic.center.listen`, which also binds the socket).
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import os
import signal
import socket
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

from kaic.center.listen import bind_socket, check_listening
from kaic.center.sessions import mint_local_token
from kaic.center.settings import CenterSettings
from kaic.center.store import Store

if TYPE_CHECKING:
    import uvicorn

logger = logging.getLogger("kaic.center")

LOCAL_TOKEN_FILE = "local-token"
LOCAL_PROJECT = "local"
LOCAL_PROJECT_GPU_HOURS = 1e6


def write_json_atomic(path: Path, data: dict[str, Any], *, mode: int) -> None:
    """Write JSON so readers see the old file or the whole new one, created with `mode`."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    # Created with its final mode: a token must never sit in a world-readable file,
    # not even for a moment.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(data, handle)
            handle.write("\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def prepare_local_center(store: Store, settings: CenterSettings) -> Path:
    """Set up the embedded local center and write its token file; returns the file's path.

    Ensures the local user (no password; unix account = user name) and the `local` project
    with that user in it, revokes earlier local tokens and mints a fresh one.
    """
    name = settings.local_user
    if not name:
        raise ValueError("prepare_local_center needs settings.local_user")
    with store.transaction():
        user = store.get_user(name) or store.create_user(name, unix_account=name)
        store.upsert_project(
            LOCAL_PROJECT, gpu_hours_granted=LOCAL_PROJECT_GPU_HOURS, member_ids=[user.id]
        )
        local = mint_local_token(store, user.id, user.name, settings.now())
    path = settings.state_dir / LOCAL_TOKEN_FILE
    write_json_atomic(
        path,
        {"token": local.token, "user": local.user, "expires_at": local.expires_at.isoformat()},
        mode=0o600,
    )
    return path


def _configure_logging() -> None:
    # Only when the embedding program has not configured logging itself.
    if not logging.getLogger().handlers:
        logging.basicConfig(
            level=logging.INFO,
            stream=sys.stderr,
            format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        )


def websocket_options() -> dict[str, Any]:
    """How uvicorn serves the interactive sessions' WebSockets (also used by the tests'
    servers): the `websockets` library's sans-I/O protocol, which stops reading a client's
    messages until the app has taken the last one and waits for the socket to drain before
    it sends more (so neither direction buffers without bound), messages of at most
    `MAX_FRAME_BYTES`, and no compression (a terminal's keystrokes and forwarded bytes gain
    little from it, and it costs CPU on the center for every session)."""
    from kaic.models.limits import MAX_FRAME_BYTES

    _quiet_denial_errors()
    return {
        "ws": "websockets-sansio",
        "ws_max_size": MAX_FRAME_BYTES,
        "ws_per_message_deflate": False,
    }


#: what uvicorn 0.54's sans-I/O WebSocket protocol logs, as an error, after every refusal
#: sent as an HTTP answer (`WebSocket.send_denial_response`): it sends the answer, but
#: counts the handshake as incomplete. The center's routes always accept or refuse.
_DENIAL_NOISE = "ASGI callable returned without completing handshake."


class _DenialNoiseFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.getMessage() != _DENIAL_NOISE


def _quiet_denial_errors() -> None:
    error_log = logging.getLogger("uvicorn.error")
    if not any(isinstance(f, _DenialNoiseFilter) for f in error_log.filters):
        error_log.addFilter(_DenialNoiseFilter())


def raise_open_files_limit() -> int:
    """Raise this process's soft limit on open files to its hard limit; returns the limit.

    Each follower of a log, each API client and each SFTP session holds a socket: under the
    common soft limit of 1,024 a center could not hold 1,000 followers. The hard limit is
    the administrator's ceiling and stays as it is.
    """
    try:
        import resource
    except ImportError:  # not a POSIX system
        return -1
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return soft
    # An unlimited hard limit cannot be the soft one everywhere: macOS caps it at its
    # kern.maxfilesperproc, 10,240 by default.
    candidates = [hard] if hard != resource.RLIM_INFINITY else [65536, 10240]
    for wanted in candidates:
        if wanted <= soft:
            break
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
        except (ValueError, OSError):
            continue
        return wanted
    return soft


def _url(address: str, port: int, *, tls: bool = False) -> str:
    scheme = "https" if tls else "http"
    return f"{scheme}://[{address}]:{port}" if ":" in address else f"{scheme}://{address}:{port}"


async def _run_until_stopped(
    server: uvicorn.Server, sock: socket.socket, on_started: Callable[[], None]
) -> None:
    task = asyncio.ensure_future(server.serve(sockets=[sock]))
    # uvicorn has no start-up callback; `started` is its public flag for "accepting now".
    while not server.started and not task.done():
        await asyncio.wait({task}, timeout=0.02)
    if server.started and not task.done():
        on_started()
    await task


def check_accounts(settings: CenterSettings) -> None:
    """Refuse (SharedCenterAccount) several users on the center's own account unless the
    operator said so, and warn loudly when they did, or when jobs would run as root.

    Every entry point serves through here (`kaic center serve`, `python -m kaic.center`); the
    local executor checks again at each job start (`kaic.center.executors.own_account`), for
    users added while the center runs."""
    from kaic.center.accounts import shared_center_account_users, shared_center_account_warning

    shared = shared_center_account_users(settings)
    if shared:
        logger.warning("%s", shared_center_account_warning(shared))
    as_own_account = settings.executor == "local" and not settings.run_as_users
    if as_own_account and os.geteuid() == 0 and settings.local_user is None:
        if settings.single_account_ok:
            logger.warning(
                "WARNING: --single-account-ok on a center running as root: every job runs as root"
            )
        else:
            logger.warning(
                "this center runs as root without --run-as-user: it will run no job (jobs "
                "never run as root); serve with --run-as-user --storage-root "
                "'/home/{unix_account}'"
            )


def serve(settings: CenterSettings, *, ready_file: Path | None = None) -> None:
    """Run the center in the foreground until SIGTERM/SIGINT.

    Listens on `settings.host` and `settings.port` (0 = a free port): loopback, or any
    address with TLS served here or a TLS proxy in front (`check_listening`; ValueError
    before anything binds otherwise). In local mode the token file is written before the
    ready file.
    Once accepting connections, writes `ready_file` as JSON
    `{"pid", "port", "url", "instance_id", "started_at", "sftp_port"}` (`sftp_port`: the
    embedded SFTP endpoint's port, null when it is off); removes it on shutdown.
    """
    # Imported here: the CLI imports this module on its start path and must stay fast.
    import uvicorn

    from kaic.center.app import create_app

    address = check_listening(settings)
    _configure_logging()
    raise_open_files_limit()
    check_accounts(settings)
    app = create_app(settings)
    if settings.local_user:
        prepare_local_center(app.state.store, settings)
    sock = bind_socket(address, settings.port)
    port = int(sock.getsockname()[1])
    url = _url(address, port, tls=settings.serves_tls)
    tls_files: dict[str, Any] = {}
    if settings.tls_cert is not None and settings.tls_key is not None:
        tls_files = {"ssl_certfile": str(settings.tls_cert), "ssl_keyfile": str(settings.tls_key)}
    server = uvicorn.Server(
        # proxy_headers=False: uvicorn would believe X-Forwarded-For from any loopback
        # peer; the center does that itself, from configured trusted proxies only.
        uvicorn.Config(
            app,
            log_level="warning",
            access_log=False,
            lifespan="on",
            proxy_headers=False,
            **websocket_options(),
            **tls_files,
        )
    )
    if not settings.serves_tls and not ipaddress.ip_address(address).is_loopback:
        logger.warning(
            "serving plain http on %s for the TLS proxy in front: make sure only that proxy "
            "can reach this port",
            url,
        )

    def on_started() -> None:
        endpoint = app.state.sftp_endpoint
        sftp_port = endpoint.port if endpoint is not None else None
        if ready_file is not None:
            write_json_atomic(
                ready_file,
                {
                    "pid": os.getpid(),
                    "port": port,
                    "url": url,
                    "instance_id": app.state.instance_id,
                    "started_at": settings.now().isoformat(),
                    "sftp_port": sftp_port,
                },
                mode=0o644,
            )
        if sftp_port is not None:
            staging = f"embedded SFTP endpoint on {endpoint.host}:{sftp_port}"
        elif settings.staging_host is not None:
            staging = f"staging host {settings.staging_host}:{settings.staging_port}"
        else:
            staging = "no data staging"
        logger.info(
            "kaic center listening on %s (state in %s; %s)", url, settings.state_dir, staging
        )

    # uvicorn handles SIGTERM/SIGINT while serving, then restores the previous handlers and
    # re-raises the signal. With the default SIGTERM action that would kill the process
    # before the ready file is removed, so the "previous" handlers are ours: they ask the
    # server to stop (also covering a signal that arrives before uvicorn installs its own).
    def stop(signum: int, frame: FrameType | None) -> None:
        server.should_exit = True

    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = (
        {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
        if in_main_thread
        else {}
    )
    try:
        asyncio.run(_run_until_stopped(server, sock, on_started))
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        sock.close()
        _remove_ready_file(ready_file)
        logger.info("kaic center on %s stopped", url)


def _remove_ready_file(ready_file: Path | None) -> None:
    # Only our own: another server may have taken the path over since.
    if ready_file is None:
        return
    try:
        owner = json.loads(ready_file.read_text(encoding="utf-8")).get("pid")
    except (OSError, ValueError, AttributeError):
        return
    if owner == os.getpid():
        ready_file.unlink(missing_ok=True)
