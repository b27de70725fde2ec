"""SSH/SFTP connections to center storage: host keys checked, certificate login, tuned.

Host keys are trusted only when they appear in the lines the center's authenticated API
gave us (`known_hosts_lines`) or in the user's own `~/.ssh/known_hosts`; there is no trust
on first use. The throughput settings follow the measurements in TEST_SERVICES.md:
aes128-gcm when the server offers it, 248 KiB SFTP requests in 256 KiB packets, and the
default window (a large window makes paramiko downloads quadratic). Packets are read and
sealed by `packets.BufferedPacketizer` (fewer system calls and copies per packet).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import logging
import os
import re
import socket
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

# paramiko imports `invoke` (and through it unittest.mock, yaml, ...: ~70 ms of every
# `kaic data` start) only to run `Match exec` lines of ssh_config files, which kaic never
# reads. Hide it from paramiko unless something imported it already.
if "invoke" not in sys.modules:
    sys.modules["invoke"] = None  # type: ignore[assignment]

import paramiko

from kaic.errors import AuthRequired, ExitCode, KaicError, Unreachable
from kaic.staging.names import name_bytes
from kaic.staging.packets import BufferedPacketizer
from kaic.staging.sftp_client import SftpClient
from kaic.staging.transport import ClientTransport, shutdown_write

#: SFTP read/write request size: below OpenSSH's 256 KiB message limit, with room for headers
REQUEST_SIZE = 248 * 1024
MAX_PACKET_SIZE = 256 * 1024
CONNECT_TIMEOUT = 15.0
#: seconds an SFTP channel may wait for the next reply before the connection counts as lost
#: (then the sync reconnects and resumes): a server that stays connected but stops
#: answering must not hang kaic forever
REPLY_TIMEOUT = 120.0
PREFERRED_CIPHERS = ("aes128-gcm@openssh.com", "aes256-gcm@openssh.com")

# Key types of known_hosts lines -> host key algorithms paramiko may negotiate for them.
_HOST_KEY_ALGORITHMS = {
    "ssh-ed25519": ("ssh-ed25519",),
    "ecdsa-sha2-nistp256": ("ecdsa-sha2-nistp256",),
    "ecdsa-sha2-nistp384": ("ecdsa-sha2-nistp384",),
    "ecdsa-sha2-nistp521": ("ecdsa-sha2-nistp521",),
    "ssh-rsa": ("rsa-sha2-512", "rsa-sha2-256", "ssh-rsa"),
}


class HostKeyError(KaicError):
    """The staging host presented a host key kaic does not trust (changed, or unknown)."""

    exit_code = ExitCode.ERROR
    default_hint = (
        "if the center's operators announced a new host key, run the command again once "
        "the center publishes it; otherwise do not connect and tell them"
    )


@dataclass
class SshTarget:
    """Where and how to log in: host, account, key (+ OpenSSH certificate), trusted host keys."""

    host: str
    port: int
    username: str
    key_path: Path | str
    cert_path: Path | str | None = None
    known_hosts_lines: list[str] = field(default_factory=list)
    #: also trust the user's own ~/.ssh/known_hosts (tests turn this off)
    use_user_known_hosts: bool = True

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def host_pattern_name(self) -> str:
        """The name of this host in known_hosts: `host`, or `[host]:port` off port 22."""
        return self.host if self.port == 22 else f"[{self.host}]:{self.port}"


@dataclass(frozen=True)
class KnownKey:
    marker: str | None  # None, "cert-authority" or "revoked"
    key_type: str
    key_b64: str


def fingerprint(key_type: str, key_b64: str) -> str:
    """OpenSSH's SHA256 fingerprint of a public key blob."""
    digest = hashlib.sha256(base64.b64decode(key_b64)).digest()
    return f"{key_type} SHA256:{base64.b64encode(digest).decode().rstrip('=')}"


def _host_matches(patterns: str, names: list[str]) -> bool:
    """OpenSSH host-pattern matching: comma list, `*`/`?` wildcards, `!` negation, hashes."""
    matched = False
    for raw in patterns.split(","):
        pattern = raw.strip()
        if not pattern:
            continue
        if pattern.startswith("|1|"):
            try:
                _, _, salt_b64, _ = pattern.split("|")
            except ValueError:
                continue
            hit = any(
                hmac.compare_digest(paramiko.HostKeys.hash_host(name, salt_b64), pattern)
                for name in names
            )
        else:
            negate = pattern.startswith("!")
            body = pattern[1:] if negate else pattern
            regex = re.compile(
                "".join(
                    ".*" if c == "*" else "." if c == "?" else re.escape(c) for c in body.lower()
                )
            )
            hit = any(regex.fullmatch(name.lower()) for name in names)
            if hit and negate:
                return False
        if hit:
            matched = True
    return matched


def parse_known_hosts(lines: list[str], target: SshTarget) -> list[KnownKey]:
    """The keys of `lines` that apply to `target`.

    A line may omit the host field (`ssh-ed25519 AAAA…`): the center's API lists the keys of
    its own staging host that way.
    """
    names = [target.host_pattern_name()]
    if target.port == 22:
        names.append(f"[{target.host}]:22")
    keys: list[KnownKey] = []
    for line in lines:
        fields = line.strip().split()
        if not fields or fields[0].startswith("#"):
            continue
        marker = None
        if fields[0].startswith("@"):
            marker = fields[0][1:]
            fields = fields[1:]
        if len(fields) >= 2 and (fields[0] in _HOST_KEY_ALGORITHMS or "-cert-" in fields[0]):
            keys.append(KnownKey(marker, fields[0], fields[1]))
            continue
        if len(fields) < 3 or not _host_matches(fields[0], names):
            continue
        keys.append(KnownKey(marker, fields[1], fields[2]))
    return keys


def _user_known_hosts() -> list[str]:
    path = Path(os.path.expanduser("~/.ssh/known_hosts"))
    try:
        return path.read_text(errors="replace").splitlines()
    except OSError:
        return []


def trusted_keys(target: SshTarget) -> list[KnownKey]:
    lines = list(target.known_hosts_lines)
    if target.use_user_known_hosts:
        lines += _user_known_hosts()
    return parse_known_hosts(lines, target)


def check_host_key(target: SshTarget, server_key: paramiko.PKey, known: list[KnownKey]) -> None:
    """Raise `HostKeyError` unless the server's key is one of the trusted keys."""
    key_type, key_b64 = server_key.get_name(), server_key.get_base64()
    presented = fingerprint(key_type, key_b64)
    if any(k.marker == "revoked" and k.key_b64 == key_b64 for k in known):
        raise HostKeyError(f"host key of {target.address} is revoked: {presented}")
    plain = [k for k in known if k.marker is None]
    if any(k.key_b64 == key_b64 for k in plain):
        return
    if plain:
        expected = ", ".join(fingerprint(k.key_type, k.key_b64) for k in plain)
        raise HostKeyError(
            f"HOST KEY MISMATCH for {target.address}: it presented {presented}, "
            f"but the trusted key is {expected} (a changed host, or someone in between)"
        )
    raise HostKeyError(
        f"host key of {target.address} is not known: it presented {presented}; kaic trusts "
        "only host keys published by the center or listed in ~/.ssh/known_hosts"
        + (" (host CA keys are not supported by this client)" if known else "")
    )


class SftpConnection:
    """One authenticated SSH transport with its main SFTP channel.

    `new_sftp()` opens another SFTP channel on the same transport (a paramiko SFTPClient is
    not safe to share between threads, so each worker gets its own); `exec()` runs a command
    on the host when it allows that (used for sha256sum).
    """

    def __init__(self, transport: paramiko.Transport, target: SshTarget):
        self.transport = transport
        self.target = target
        # The main SFTP channel opens in the background (three round trips): a sync opens
        # its workers' pipes meanwhile (`ahead.PipesAhead`), instead of after it.
        self._sftp: paramiko.SFTPClient | None = None
        self._sftp_error: BaseException | None = None
        self._sftp_ready = threading.Event()
        threading.Thread(target=self._open_main, name="kaic-sftp-main", daemon=True).start()

    def _open_main(self) -> None:
        try:
            self._sftp = self.new_sftp()
            if isinstance(self.transport, ClientTransport):  # (the host let the login in)
                self.transport.probe_round_trip()  # (answered while the sync goes on)
        except (paramiko.SSHException, OSError, EOFError) as exc:
            self._sftp_error = _disconnected(self.transport, self.target) or Unreachable(
                f"{self.target.address}: SFTP is not available: {exc}"
            )
        except BaseException as exc:  # (raised where the channel is asked for)
            self._sftp_error = exc
        finally:
            self._sftp_ready.set()

    @property
    def sftp(self) -> paramiko.SFTPClient:
        """The connection's main SFTP channel (waiting for it while it opens)."""
        self._sftp_ready.wait()
        if self._sftp is None:
            assert self._sftp_error is not None
            raise self._sftp_error
        return self._sftp

    def ready(self) -> None:
        """Wait until the main SFTP channel is open; raise why it could not be."""
        self.sftp  # noqa: B018  (the property waits and raises)

    def new_sftp(self) -> paramiko.SFTPClient:
        client = SftpClient.from_transport(self.transport, max_packet_size=MAX_PACKET_SIZE)
        if client is None:  # pragma: no cover - paramiko returns None only on odd failures
            raise Unreachable(f"{self.target.address}: could not open an SFTP channel")
        client.get_channel().settimeout(REPLY_TIMEOUT)  # type: ignore[union-attr]
        return client

    def exec(
        self, command: str, *, timeout: float = 600.0, channel: paramiko.Channel | None = None
    ) -> tuple[int, bytes, bytes]:
        """Run `command` on the host (on `channel`, a session opened ahead, if given):
        (exit status, stdout, stderr); exit -1 if refused. File names in `command` go as
        their bytes (`names.name_bytes`)."""
        if channel is None or channel.closed:
            try:
                channel = self.transport.open_session(timeout=timeout)
            except (paramiko.SSHException, OSError, EOFError):
                return -1, b"", b"exec channel refused"
        try:
            channel.settimeout(timeout)
            channel.exec_command(name_bytes(command))
            shutdown_write(channel)
            out, err = bytearray(), bytearray()
            while True:
                chunk = channel.recv(1 << 16)
                if not chunk:
                    break
                out += chunk
            while channel.recv_stderr_ready() or not channel.exit_status_ready():
                chunk = channel.recv_stderr(1 << 16)
                if not chunk:
                    break
                err += chunk
            status = channel.recv_exit_status()
            return status, bytes(out), bytes(err)
        except (paramiko.SSHException, OSError, EOFError) as exc:
            if not self.transport.is_active():
                raise Unreachable(f"connection to {self.target.address} lost: {exc}") from exc
            return -1, b"", str(exc).encode()
        finally:
            channel.close()

    def is_active(self) -> bool:
        return self.transport.is_active()

    def near(self) -> bool:
        """Whether the host answered a round trip in under `transport.NEAR_RTT_S`."""
        return isinstance(self.transport, ClientTransport) and self.transport.near()

    def close(self) -> None:
        """Close; never raises (the connection may already be gone)."""
        with contextlib.suppress(Exception):
            self.transport.close()  # (a main channel still opening fails at once)
        self._sftp_ready.wait(CONNECT_TIMEOUT)
        with contextlib.suppress(Exception):
            if self._sftp is not None:
                self._sftp.close()


def _disconnected(transport: paramiko.Transport, target: SshTarget) -> Unreachable | None:
    """The error to report when the server closed the connection and said why."""
    reason = getattr(transport, "disconnect_reason", None)
    if not reason:
        return None
    return Unreachable(
        f"{target.address} closed the connection: {reason}",
        hint="that is the staging host's reason; run the command again once it no longer applies",
    )


def _load_key(target: SshTarget) -> paramiko.PKey:
    try:
        key = paramiko.PKey.from_path(str(target.key_path))
    except (OSError, paramiko.SSHException, ValueError) as exc:
        raise AuthRequired(
            f"cannot load SSH key {target.key_path}: {exc}",
            hint="run `kaic login` again to get a fresh SSH identity",
        ) from exc
    if target.cert_path:
        try:
            key.load_certificate(str(target.cert_path))
        except (OSError, ValueError, paramiko.SSHException) as exc:
            raise AuthRequired(
                f"cannot load SSH certificate {target.cert_path}: {exc}",
                hint="run `kaic login` again to get a fresh SSH certificate",
            ) from exc
    return key


def _tune(transport: paramiko.Transport, known: list[KnownKey]) -> None:
    options = transport.get_security_options()
    offered = tuple(options.ciphers)
    options.ciphers = tuple(c for c in PREFERRED_CIPHERS if c in offered) + tuple(
        c for c in offered if c not in PREFERRED_CIPHERS
    )
    # Ask only for host key types we can check, like OpenSSH does with known_hosts.
    wanted: list[str] = []
    for k in known:
        if k.marker is None:
            wanted += [a for a in _HOST_KEY_ALGORITHMS.get(k.key_type, ()) if a not in wanted]
    supported = [a for a in wanted if a in options.key_types]
    if supported:
        options.key_types = tuple(supported)


def _debugging() -> bool:
    return os.environ.get("KAIC_DEBUG", "") not in ("", "0", "false", "no")


def _quiet_paramiko() -> None:
    """Keep paramiko's own noise off the terminal when a connection drops; kaic notices the
    loss itself (and resumes, or reports it). With KAIC_DEBUG set everything is shown.

    - Its log: without a handler anywhere, Python prints ERROR records to stderr — a
      transport thread's traceback ("Socket exception: Connection reset by peer").
    - Its prefetch thread (`SFTPFile.prefetch`, how a download keeps reads in flight) raises
      when the connection goes away under it, and Python prints that thread's traceback.
      The download waiting on those reads fails the same moment and the sync resumes, so
      only that thread's connection errors are dropped; anything else is printed as before.
    """
    if _debugging():
        return
    log = logging.getLogger("paramiko")
    if not log.handlers:
        log.addHandler(logging.NullHandler())
    if not getattr(threading.excepthook, "_kaic_quiet_prefetch", False):
        previous = threading.excepthook

        def hook(args: threading.ExceptHookArgs) -> None:
            lost = (EOFError, OSError, paramiko.SSHException)
            if not (isinstance(args.exc_value, lost) and _in_prefetch(args.exc_traceback)):
                previous(args)

        hook._kaic_quiet_prefetch = True  # type: ignore[attr-defined]
        threading.excepthook = hook


def _in_prefetch(tb: TracebackType | None) -> bool:
    """Whether a traceback runs through paramiko's `SFTPFile._prefetch_thread`."""
    while tb is not None:
        code = tb.tb_frame.f_code
        if code.co_name == "_prefetch_thread" and code.co_filename.endswith("sftp_file.py"):
            return True
        tb = tb.tb_next
    return False


def open_sftp(
    target: SshTarget, *, timeout: float = CONNECT_TIMEOUT, sftp_in_background: bool = False
) -> SftpConnection:
    """Connect, check the host key, log in with the key (+ certificate), open SFTP — and
    return once it is open, or raise why it could not be (a host that refuses it, or one
    that disconnects right after the login with its reason). With `sftp_in_background`,
    return right after the login: the main SFTP channel opens meanwhile, and the caller
    asks `SftpConnection.ready()` (a sync opens its workers' pipes in the meantime)."""
    paramiko.SFTPFile.MAX_REQUEST_SIZE = REQUEST_SIZE  # process-wide; see module docstring
    _quiet_paramiko()
    key = _load_key(target)
    known = trusted_keys(target)
    try:
        sock = socket.create_connection((target.host, target.port), timeout=timeout)
    except OSError as exc:
        raise Unreachable(
            f"cannot reach the staging host {target.address}: {exc}",
            hint="check your network (and VPN), then retry",
        ) from exc
    sock.settimeout(None)
    # Nagle's algorithm holds a small packet back until what went before it is
    # acknowledged, and the host's kernel delays its ACKs (up to 40 ms on Linux): a STAT
    # sent while channels are being opened waited a round trip for nothing. kaic gathers
    # its bulk writes itself (`packets`), so nothing is gained by Nagle.
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    transport = ClientTransport(
        sock, default_max_packet_size=MAX_PACKET_SIZE, packetizer_class=BufferedPacketizer
    )
    try:
        _tune(transport, known)
        try:
            transport.start_client(timeout=timeout)
        except (paramiko.SSHException, OSError, EOFError) as exc:
            raise Unreachable(f"SSH handshake with {target.address} failed: {exc}") from exc
        server_key = transport.get_remote_server_key()
        check_host_key(target, server_key, known)
        try:
            transport.auth_publickey(target.username, key)
        except paramiko.AuthenticationException as exc:
            raise _disconnected(transport, target) or AuthRequired(
                f"{target.address} refused the SSH login of {target.username!r}: {exc}",
                hint="your SSH certificate may have expired: run `kaic login` again",
            ) from exc
        except (paramiko.SSHException, OSError, EOFError) as exc:
            raise _disconnected(transport, target) or Unreachable(
                f"SSH login to {target.address} failed: {exc}"
            ) from exc
        transport.set_keepalive(30)
        conn = SftpConnection(transport, target)
        if not sftp_in_background:
            conn.ready()
        return conn
    except BaseException:
        transport.close()
        raise
