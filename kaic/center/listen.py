"""Where the center listens: the address checks (loopback, or TLS served or proxied) made
before anything binds, and the listening sockets of the HTTP server and the SFTP endpoint.

Both `kaic.center.server` (uvicorn) and `kaic.center.sftp.server` (the embedded endpoint)
bind through here; it imports nothing of the center, so neither depends on the other.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import ssl
import stat
from pathlib import Path

from kaic.center.settings import CenterSettings

_PLAIN_HTTP_REFUSED = (
    "refusing to listen on {host!r} with plain http: it is not a loopback address "
    "(127.0.0.0/8, ::1 or localhost), and clients would send passwords and tokens "
    "unencrypted; serve HTTPS with --tls-cert FILE --tls-key FILE, or state that a TLS proxy "
    "stands in front with --behind-tls-proxy"
)


def listen_address(host: str, *, tls: bool = False, behind_tls_proxy: bool = False) -> str:
    """The address to bind for `host`, decided before anything binds; ValueError otherwise.

    Loopback (127.0.0.0/8, ::1, ``localhost``) always. Any other IP address only when clients
    reach the center over TLS: served by the center itself (`tls`) or by a TLS proxy the
    operator says stands in front of it (`behind_tls_proxy`). Names other than ``localhost``
    are refused: what they resolve to is not known here.
    """
    if host == "localhost":
        # Bind the literal address: "localhost" could resolve to something else.
        return "127.0.0.1"
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        address = None
    if address is not None and address.is_loopback:
        return str(address)
    if not (tls or behind_tls_proxy):
        raise ValueError(_PLAIN_HTTP_REFUSED.format(host=host))
    if address is None:
        raise ValueError(
            f"cannot listen on {host!r}: give an IP address (0.0.0.0 or :: for every interface)"
        )
    return str(address)


def loopback_bind_address(host: str) -> str:
    """The address to bind for `host`; ValueError unless it is a loopback address."""
    return listen_address(host)


def check_tls_files(cert: Path, key: Path) -> None:
    """Refuse a TLS key other users can read, and a certificate and key that do not load
    together; ValueError naming the file and the fix. Run before binding."""
    try:
        fd = os.open(key, os.O_RDONLY)
    except OSError as exc:
        raise ValueError(f"cannot read the TLS key {key}: {exc.strerror or exc}") from None
    with os.fdopen(fd, "rb") as handle:
        # fstat on the open file: the checked file is the one read.
        mode = stat.S_IMODE(os.fstat(handle.fileno()).st_mode)
        encrypted = b"ENCRYPTED" in handle.read()
    if mode & stat.S_IRWXO:
        raise ValueError(
            f"the TLS key {key} is readable by every user on this machine (mode {mode:04o}); "
            f"fix it with `chmod 600 {key}` (and replace the key if others may have read it)"
        )
    if encrypted:
        raise ValueError(f"the TLS key {key} is encrypted: give the center an unencrypted key")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(cert, key, password=lambda: b"")
    except ssl.SSLError as exc:  # before OSError, its base class
        reason = (exc.reason or str(exc)).replace("_", " ").lower()
        raise ValueError(
            f"the TLS certificate {cert} and key {key} cannot be used: {reason} "
            "(both must be PEM, and the key must belong to the certificate)"
        ) from None
    except OSError as exc:
        raise ValueError(f"cannot read the TLS certificate {cert}: {exc.strerror or exc}") from None


def check_listening(settings: CenterSettings) -> str:
    """Everything about where and how the center listens, checked before binding: the
    address (`listen_address`) and the TLS files. Returns the address to bind."""
    address = listen_address(
        settings.host, tls=settings.serves_tls, behind_tls_proxy=settings.behind_tls_proxy
    )
    if settings.tls_cert is not None and settings.tls_key is not None:
        check_tls_files(settings.tls_cert, settings.tls_key)
    return address


def bind_loopback_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket on a loopback `host` (port 0 picks a free port)."""
    return bind_socket(loopback_bind_address(host), port)


def bind_socket(address: str, port: int) -> socket.socket:
    """A listening TCP socket on an address already checked (port 0 picks a free port)."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    # IPPROTO_TCP spelled out: asyncio turns Nagle off (TCP_NODELAY) on accepted sockets
    # only when it sees it, and without that every response on a kept-alive connection
    # waited ~40 ms for the client's delayed ACK (headers and body are written apart).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((address, port))
        sock.listen(128)
    except BaseException:
        sock.close()
        raise
    sock.set_inheritable(False)
    return sock
