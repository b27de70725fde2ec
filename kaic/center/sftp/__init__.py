"""The reference center's embedded SFTP endpoint (loopback only).

- `certs`: checks the OpenSSH user certificates the center's user CA issues.
- `fs`: one user's storage root as an SFTP file system, every path confined to it.
- `server`: the SSH server (paramiko) accepting certificate logins and the `sftp` subsystem.

paramiko is imported only here and in the modules below, never on the CLI's start path.
"""

from kaic.center.sftp.server import EmbeddedSftp

__all__ = ["EmbeddedSftp"]
