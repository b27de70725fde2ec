"""The reference center's embedded SFTP endpoint (loopback only).

- `certs`: checks the OpenSSH user certificates the center's user CA issues.
- `fs`: one user's storage root as an SFTP file system, every path confined to it by the
  storage root's one rule (`kaic.center.storage`).
- `subsystem`: the SFTP protocol (paramiko's server, hardened; streamed listings).
- `server`: the SSH server (paramiko) accepting certificate logins and the `sftp` subsystem;
  `gate`: the policy of one connection (login, admission, sessions); `transport`: each
  connection's SSH transport, hardened.
- `relay` / `worker`: serving a connection as the user's unix account (`--run-as-user`):
  a worker process that has dropped to the account, the center relaying its bytes.

paramiko is imported only here and in the modules below, never on the CLI's start path.
`EmbeddedSftp` is imported lazily: the worker process imports `fs` and `subsystem` through
this package and must not load the center (settings, database) with them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from kaic.center.sftp.server import EmbeddedSftp

__all__ = ["EmbeddedSftp"]


def __getattr__(name: str) -> Any:
    if name == "EmbeddedSftp":
        from kaic.center.sftp.server import EmbeddedSftp

        return EmbeddedSftp
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
