"""Data staging over SSH/SFTP: connecting, planning a sync, and resumable verified transfers.

Modules:

- `connect`: `SshTarget` and `open_sftp` (paramiko, host keys checked without trust on first
  use, certificate login, throughput tuning).
- `ignore`: a small gitignore-syntax matcher for `.kaicignore` and `--exclude`.
- `plan`: what a sync must do (pure; works on any `Side`, local or remote).
- `transfer`: `push` / `pull` — resumable, sha256-verified, parallel.
- `remote_fs`: the remote `Side`, plus `ls` / `rm` on center storage.

Only this package imports paramiko, and only in `connect`, `transfer` and `remote_fs`; the
CLI imports those inside its commands.
"""
