"""Settings of one reference-center instance."""

from __future__ import annotations

import ipaddress
import os
import pwd
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from kaic.center.executors.registry import entry as executor_entry
from kaic.center.jobs.partitions import PartitionConfig

__all__ = ["CenterSettings", "PartitionConfig", "utc_now"]

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def utc_now() -> datetime:
    """The current time as an aware UTC datetime (the default clock)."""
    return datetime.now(timezone.utc)


@dataclass
class CenterSettings:
    """Everything a center instance needs; tests build their own and inject a clock."""

    state_dir: Path
    #: where to listen: loopback, or any address when clients reach the center over TLS
    #: (`tls_cert`/`tls_key`, or `behind_tls_proxy`); see `kaic.center.listen.listen_address`
    host: str = "127.0.0.1"
    port: int = 8750
    #: serve HTTPS with this certificate (chain) and key, PEM files; None = plain http
    tls_cert: Path | None = None
    tls_key: Path | None = None
    #: the operator's statement that a TLS proxy stands in front of this plain-http center
    behind_tls_proxy: bool = False
    #: where jobs run: an executor of the registry (`kaic.center.executors.registry`)
    executor: str = "local"
    #: that executor's own settings (its entry's `settings_type`, e.g. `SlurmSettings`);
    #: None = its defaults
    executor_settings: Any = None
    gpus: int = 0
    gpu_type: str | None = None
    #: seconds an access token from a password or refresh grant stays valid
    access_token_ttl: int = 900
    #: seconds a refresh token stays valid (each rotation starts a new period)
    refresh_token_ttl: int = 30 * 86400
    #: failed logins of one account within `login_window` before a lockout
    login_max_failures: int = 5
    #: failed logins from one client address (IPv6: one /64) within `login_window` before
    #: that address is locked against password-only logins: many users may share an
    #: address (a NAT), so it is higher, and a password with a valid one-time code passes
    login_address_max_failures: int = 25
    login_window: int = 300
    #: seconds a locked key is refused with 429
    login_lockout: int = 60
    #: reverse proxies (CIDRs or addresses) whose `X-Forwarded-For` names the client; from
    #: any other TCP peer the header is ignored
    trusted_proxies: list[str] = field(default_factory=list)
    #: `trusted_proxies` parsed (set from it)
    trusted_proxy_networks: tuple[IPNetwork, ...] = field(init=False, repr=False, default=())
    #: set for the embedded local center: this user is created and gets a `local` token
    local_user: str | None = None
    #: the partitions; empty = one default partition `local` with `gpus` GPUs of `gpu_type`
    partitions: list[PartitionConfig] = field(default_factory=list)
    #: interactive sessions open at once: exec sessions (`kaic exec`, `shell`) per job and
    #: per user, and forwarded connections (`kaic forward`: a browser opens many) per job
    #: and per user
    exec_sessions_per_job: int = 16
    exec_sessions_per_user: int = 64
    forwards_per_job: int = 128
    forwards_per_user: int = 256
    #: seconds between SIGTERM and SIGKILL when a job is cancelled or hits its time limit
    kill_grace: float = 10.0
    #: the scheduler wakes at least this often (seconds) to poll jobs and time limits
    job_poll_interval: float = 0.2
    #: seconds between two samples of a job's metrics sampler (`kaic.gpu.sampler`, started
    #: with every job on each of its nodes); 0 = no sampler
    metrics_interval: float = 5.0
    #: the Python that runs the sampler, by absolute path (it must import kaic and, for
    #: GPUs, nvidia-ml-py, and be executable by the jobs' accounts on the nodes); None =
    #: the center's own interpreter
    metrics_python: str | None = None
    #: seconds an SSH user certificate from `POST /v1/ssh/certificates` stays valid (at most)
    ssh_cert_validity: int = 12 * 3600
    #: the SSH/SFTP host serving users' storage (an external sshd); None = none, or the
    #: embedded endpoint when `sftp_port` is set
    staging_host: str | None = None
    staging_port: int = 22
    #: the staging host's public host keys, OpenSSH lines (`ssh-ed25519 AAAA…`)
    staging_host_keys: list[str] = field(default_factory=list)
    #: the embedded SFTP endpoint's port on 127.0.0.1 (0 = any free port); None = off.
    #: The local center turns it on (port 0) unless an external `staging_host` is given.
    sftp_port: int | None = None
    #: connections the embedded SFTP endpoint serves at once, all users together
    sftp_max_connections: int = 64
    #: logged-in connections one user may hold on the embedded endpoint (each has its own
    #: worker process when files are served as users); None = max(4, sftp_max_connections
    #: // 4), so one user cannot take every slot
    sftp_max_connections_per_user: int | None = None
    #: users' storage root on the staging host, a template with `{user}` and `{unix_account}`
    #: (e.g. `/home/{unix_account}`); None = the center's own `state_dir/storage/{user}`
    storage_root: str | None = None
    #: the local executor runs each job as its user's unix account (needs root and a
    #: `storage_root` outside the state dir); off = jobs run as the center's own account
    run_as_users: bool = False
    #: the operator accepts that, without `run_as_users`, every user's jobs run as the
    #: center's own account (and can read each other's files, the database, the CA key)
    single_account_ok: bool = False
    now: Callable[[], datetime] = field(default=utc_now, repr=False)

    def __post_init__(self) -> None:
        self.state_dir = Path(self.state_dir)
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError(
                "serving TLS needs both a certificate and its key (--tls-cert, --tls-key)"
            )
        self.tls_cert = Path(self.tls_cert) if self.tls_cert is not None else None
        self.tls_key = Path(self.tls_key) if self.tls_key is not None else None
        self.trusted_proxy_networks = tuple(
            parse_trusted_proxy(value) for value in self.trusted_proxies
        )
        if self.storage_root is not None:
            check_storage_root_template(self.storage_root)
        if not 0 < self.staging_port < 65536:
            raise ValueError(f"staging port {self.staging_port} is not a TCP port")
        executor = executor_entry(self.executor)
        self.executor_settings = executor.settings(self.executor_settings)
        if self.run_as_users:
            if executor.run_as_user_refusal is not None:
                raise ValueError(executor.run_as_user_refusal)
            if self.storage_root is None:
                raise ValueError(
                    "running jobs as their users needs a storage root outside the center's "
                    "state dir (e.g. /home/{unix_account})"
                )
        if self.sftp_port is not None:
            if self.staging_host is not None:
                raise ValueError(
                    "the embedded SFTP endpoint (sftp port) and an external staging host are "
                    "alternatives: give one of them"
                )
            if not 0 <= self.sftp_port < 65536:
                raise ValueError(f"SFTP port {self.sftp_port} is not a TCP port")
        elif self.local_user is not None and self.staging_host is None:
            # The local center serves its users' storage itself.
            self.sftp_port = 0
        if not 0 <= self.metrics_interval <= 3600:
            raise ValueError("the metrics interval must be between 0 (off) and 3600 seconds")
        if self.metrics_python is not None and not os.path.isabs(self.metrics_python):
            raise ValueError(
                f"the metrics sampler's Python must be an absolute path: {self.metrics_python!r}"
            )
        if self.sftp_max_connections < 1:
            raise ValueError("the SFTP endpoint's connection limit must be at least 1")
        if self.sftp_max_connections_per_user is not None and not (
            1 <= self.sftp_max_connections_per_user <= self.sftp_max_connections
        ):
            raise ValueError(
                "the SFTP endpoint's connections per user must be between 1 and its "
                f"connection limit ({self.sftp_max_connections})"
            )
        for name in (
            "exec_sessions_per_job",
            "exec_sessions_per_user",
            "forwards_per_job",
            "forwards_per_user",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{name.replace('_', ' ')} must be at least 1")
        if self.ssh_cert_validity < 60:
            raise ValueError("ssh_cert_validity must be at least 60 seconds")

    @property
    def serves_tls(self) -> bool:
        """Whether the center itself serves HTTPS."""
        return self.tls_cert is not None

    @property
    def sftp_connections_per_user(self) -> int:
        """The embedded endpoint's per-user connection cap (see the field)."""
        if self.sftp_max_connections_per_user is not None:
            return self.sftp_max_connections_per_user
        return max(4, self.sftp_max_connections // 4)

    @property
    def acts_as_users(self) -> bool:
        """Whether the center touches users' files as their unix accounts (SFTP, checksums):
        whenever it runs their jobs as those accounts — `run_as_users`, or a center running
        as root whose executor runs every job as its user (any but the local executor, which
        otherwise runs jobs as the center's own account). The one predicate for all of them:
        a root Slurm gateway must not serve every user's files as root."""
        if self.run_as_users:
            return True
        return self.executor != "local" and os.geteuid() == 0

    def ensure_storage_root(self, user: str, unix_account: str) -> Path:
        """`storage_root_for`, created when it is the center's own storage (as a job's home
        would be); a configured root is the site's to create.

        A center acting as users creates it as a job's home is (the ownership rule of
        `kaic.center.executors.prepare`, never through a link): the account's, so that what
        runs as the account can use it. An account that does not exist here, or a home that
        belongs to someone else, leaves it as it is: what runs as the account then fails on
        its own."""
        root = self.storage_root_for(user, unix_account)
        if self.storage_root is not None:
            return root
        if not self.acts_as_users:
            root.mkdir(mode=0o700, parents=True, exist_ok=True)
            return root
        from kaic.center.executors.base import ExecutorError
        from kaic.center.executors.prepare import prepare_storage

        try:
            owner = pwd.getpwnam(unix_account)
        except KeyError:
            return root
        if owner.pw_uid == 0:
            return root
        own = self.state_dir / "storage"
        try:
            prepare_storage(root, root, owner, own_storage=own)
        except ExecutorError:
            return root
        for parent in (self.state_dir, own):  # passable (not listable) on the way to it
            mode = parent.stat().st_mode & 0o777
            if mode & 0o011 != 0o011:
                parent.chmod(mode | 0o011)
        return root

    def storage_root_for(self, user: str, unix_account: str) -> Path:
        """The storage root (home) of `user` on the staging host."""
        if self.storage_root is None:
            return self.state_dir / "storage" / user
        return Path(self.storage_root.format(user=user, unix_account=unix_account))


def parse_trusted_proxy(value: str) -> IPNetwork:
    """A trusted proxy given as a CIDR (`10.0.0.0/8`) or a single address; ValueError with
    the fix otherwise."""
    try:
        return ipaddress.ip_network(value.strip(), strict=True)
    except ValueError as exc:
        raise ValueError(
            f"trusted proxy {value!r} is not an address or a CIDR such as 10.0.0.0/8 ({exc})"
        ) from None


def check_storage_root_template(template: str) -> str:
    """`template` if it is an absolute path using only `{user}` / `{unix_account}`."""
    import string

    if not template.startswith("/"):
        raise ValueError(f"storage root {template!r} must be an absolute path")
    for _text, name, spec, conversion in string.Formatter().parse(template):
        if name is None:
            continue
        if name not in ("user", "unix_account") or spec or conversion:
            raise ValueError(
                f"storage root {template!r}: unknown placeholder {{{name}}} "
                "(use {user} or {unix_account})"
            )
    return template
