"""A real OpenSSH sshd on a free 127.0.0.1 port, for staging tests (see TEST_SERVICES.md).

Plain functions, no fixtures, so any test module can use them::

    from tests.sshd import require_sshd, ensure_unix_user, start_sshd

    require_sshd()                      # skip, or fail when CI=true, without sshd / root
    ensure_unix_user(STAGING_USER)
    sshd = start_sshd(tmp_path / "sshd", trusted_ca_pub=ca_pub_file, user=STAGING_USER)
    try:
        ...  # connect to 127.0.0.1:sshd.port; trust only sshd.host_key_pub_line
    finally:
        sshd.stop()

The daemon trusts user certificates signed by `trusted_ca_pub` (principal = the unix
account) and nothing else: no authorized_keys, no passwords. It listens on 127.0.0.1 only
and is stopped by its own PID.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.helpers import ensure_account, free_port, unavailable

SSHD = "/usr/sbin/sshd"
#: a unix account the staging tests may create and log in as
STAGING_USER = "kaicstage"
_START_TIMEOUT = 10.0


def sshd_path() -> str | None:
    """The sshd binary, or None when OpenSSH server is not installed."""
    if os.access(SSHD, os.X_OK):
        return SSHD
    return shutil.which("sshd")


def require_sshd() -> str:
    """sshd's path; otherwise skip the test, or fail it when `CI=true`.

    Also needs root (sshd switches to the user; `useradd` creates it) and `ssh-keygen`.
    """
    missing: list[str] = []
    path = sshd_path()
    if path is None:
        missing.append("sshd (apt-get install openssh-server)")
    if shutil.which("ssh-keygen") is None or shutil.which("ssh") is None:
        missing.append("ssh / ssh-keygen (apt-get install openssh-client)")
    if os.geteuid() != 0:
        missing.append("root (sshd must switch to the test user)")
    if missing:
        unavailable("real-sshd test needs " + ", ".join(missing))
    assert path is not None
    return path


def ensure_unix_user(name: str = STAGING_USER) -> Path:
    """Create unix user `name` (with a home) if missing and unlock it; returns its home.

    With `UsePAM no` sshd refuses a locked account ("account is locked"), and `useradd`
    locks new accounts, hence `usermod -p '*'` (no password works, but not locked).
    """
    ensure_account(name, home=True, shell="/bin/sh")
    subprocess.run(["usermod", "-p", "*", name], check=True, capture_output=True)
    home = Path(pwd.getpwnam(name).pw_dir)
    if not home.is_dir():
        entry = pwd.getpwnam(name)
        home.mkdir(parents=True, mode=0o755)
        os.chown(home, entry.pw_uid, entry.pw_gid)
    return home


@dataclass
class RunningSshd:
    """A started sshd: where it listens and which host key it presents."""

    port: int
    pid: int
    #: the host's public key, `ssh-ed25519 AAAA…` (no comment)
    host_key_pub_line: str
    host_key_pub_path: Path
    config_path: Path
    log_path: Path
    user: str
    _process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def host(self) -> str:
        return "127.0.0.1"

    def known_hosts_line(self) -> str:
        """The host key as a known_hosts line for this host and port."""
        return f"[127.0.0.1]:{self.port} {self.host_key_pub_line}"

    def log(self) -> str:
        """What sshd wrote so far (its `-e` log), for failure messages."""
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def stop(self) -> None:
        """Stop exactly this sshd (SIGTERM, then SIGKILL after 5 s)."""
        process = self._process
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)


def _write_config(
    directory: Path,
    *,
    port: int,
    host_key: Path,
    trusted_ca_pub: Path,
    authorized_keys: Path | None,
    extra_config: tuple[str, ...],
) -> Path:
    lines = [
        f"Port {port}",
        "ListenAddress 127.0.0.1",
        f"HostKey {host_key}",
        f"PidFile {directory / 'sshd.pid'}",
        f"TrustedUserCAKeys {trusted_ca_pub}",
        f"AuthorizedKeysFile {authorized_keys if authorized_keys else 'none'}",
        "PubkeyAuthentication yes",
        "PasswordAuthentication no",
        "KbdInteractiveAuthentication no",
        "UsePAM no",
        "PermitRootLogin prohibit-password",
        # keys and configs live under /tmp
        "StrictModes no",
        "UseDNS no",
        "PrintMotd no",
        "X11Forwarding no",
        "AllowAgentForwarding no",
        "Subsystem sftp internal-sftp",
        "LogLevel VERBOSE",
        *extra_config,
    ]
    config = directory / "sshd_config"
    config.write_text("\n".join(lines) + "\n")
    return config


def _wait_for_banner(port: int, process: subprocess.Popen[bytes], deadline: float) -> bool:
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return False
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
                if sock.recv(64).startswith(b"SSH-2.0-"):
                    return True
        except OSError:
            pass
        time.sleep(0.05)
    return False


def start_sshd(
    tmp_dir: Path,
    *,
    trusted_ca_pub: Path,
    user: str,
    authorized_keys: Path | None = None,
    extra_config: tuple[str, ...] = (),
) -> RunningSshd:
    """Start `sshd -D -e` on a free 127.0.0.1 port, trusting certificates from `trusted_ca_pub`.

    `user` is created if missing (see `ensure_unix_user`). Returns once sshd answers with
    its banner; raises RuntimeError (with sshd's log) if it does not start. The caller
    stops it with `RunningSshd.stop()`.
    """
    binary = require_sshd()
    ensure_unix_user(user)
    # Privilege-separation directory, absent until the sshd service has run once.
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
    tmp_dir = Path(tmp_dir)
    tmp_dir.mkdir(parents=True, exist_ok=True)
    host_key = tmp_dir / "ssh_host_ed25519_key"
    if not host_key.exists():
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "", "-f", str(host_key)],
            check=True,
            capture_output=True,
        )
    host_key_pub = host_key.with_name(host_key.name + ".pub")
    key_type, key_data = host_key_pub.read_text().split()[:2]
    log_path = tmp_dir / "sshd.log"
    last_log = ""
    # A free port can be taken between choosing it and sshd binding it: try a few.
    for _attempt in range(5):
        port = free_port()
        config = _write_config(
            tmp_dir,
            port=port,
            host_key=host_key,
            trusted_ca_pub=Path(trusted_ca_pub),
            authorized_keys=authorized_keys,
            extra_config=extra_config,
        )
        with log_path.open("ab") as log:
            process = subprocess.Popen(
                [binary, "-D", "-e", "-f", str(config)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
            )
        if _wait_for_banner(port, process, time.monotonic() + _START_TIMEOUT):
            return RunningSshd(
                port=port,
                pid=process.pid,
                host_key_pub_line=f"{key_type} {key_data}",
                host_key_pub_path=host_key_pub,
                config_path=config,
                log_path=log_path,
                user=user,
                _process=process,
            )
        if process.poll() is None:
            process.kill()
        process.wait(timeout=5)
        last_log = log_path.read_text(errors="replace")
        if "Address already in use" not in last_log:
            break
    raise RuntimeError(f"sshd did not start; its log:\n{last_log[-4000:]}")
