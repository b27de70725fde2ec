"""`python -m kaic.center`: run a center in the foreground (used to start it in the background).

The CLI's `kaic center serve|start` is the user-facing way; this entry point needs no CLI
layer, so tests and the background starter can run the server directly.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from kaic.center.accounts import SharedCenterAccount
from kaic.center.server import serve
from kaic.center.settings import CenterSettings
from kaic.center.ssh_ca import read_host_key_files


def main(argv: list[str] | None = None) -> None:
    """Parse arguments and serve until SIGTERM/SIGINT."""
    parser = argparse.ArgumentParser(prog="python -m kaic.center", description=__doc__)
    # Absolute from here on: jobs run in other directories.
    parser.add_argument("--state-dir", type=lambda p: Path(p).absolute(), required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8750)
    parser.add_argument("--executor", default="local")
    parser.add_argument("--gpus", type=int, default=0)
    parser.add_argument("--gpu-type", default=None)
    parser.add_argument("--local-user", default=None, help="run as the embedded local center")
    parser.add_argument("--ready-file", type=Path, default=None)
    parser.add_argument("--staging-host", default=None)
    parser.add_argument("--staging-port", type=int, default=22)
    parser.add_argument(
        "--staging-host-key", type=Path, action="append", default=[], metavar="FILE"
    )
    parser.add_argument(
        "--sftp-port",
        type=int,
        default=None,
        help="embedded SFTP endpoint on 127.0.0.1 (0 = free port; on by default for --local-user)",
    )
    parser.add_argument("--storage-root", default=None, metavar="TEMPLATE")
    args = parser.parse_args(argv)
    try:
        settings = _settings(args)
    except ValueError as exc:
        parser.error(str(exc))
    try:
        serve(settings, ready_file=args.ready_file)
    except SharedCenterAccount as exc:
        parser.error(f"{exc}; {exc.hint}")


def _settings(args: argparse.Namespace) -> CenterSettings:
    return CenterSettings(
        state_dir=args.state_dir,
        host=args.host,
        port=args.port,
        executor=args.executor,
        gpus=args.gpus,
        gpu_type=args.gpu_type,
        local_user=args.local_user,
        staging_host=args.staging_host,
        staging_port=args.staging_port,
        staging_host_keys=read_host_key_files(args.staging_host_key),
        sftp_port=args.sftp_port,
        storage_root=args.storage_root,
    )


if __name__ == "__main__":
    main()
