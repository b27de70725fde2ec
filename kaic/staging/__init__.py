"""Data staging over SSH/SFTP: connecting, planning a sync, and resumable verified transfers.

Modules:

- `connect`: `SshTarget` and `open_sftp` (paramiko, host keys checked without trust on first
  use, certificate login, throughput tuning); `sftp_client`: paramiko's SFTP client with
  names as bytes (`names`: the one rule for names that are not UTF-8).
- `ignore`: a small gitignore-syntax matcher for `.kaicignore` and `--exclude`.
- `plan`: what a sync must do (pure; works on any `Side`, local or remote).
- `transfer`: `sync` (`push` / `pull`) — resumable, sha256-verified, parallel; run by
  `engine` with `workers`, writing through a `destination` (`upload` or `download`), with
  small files over `pipeline`; `options` holds what a sync is asked and reports.
- `remote_fs`: the remote `Side`, plus `ls` / `rm` on center storage.

Only this package imports paramiko, in the modules that talk SSH (`plan`, `ignore`, `names`
and `options` are pure); the CLI imports them inside its commands, never at start.
"""
