"""What verification costs on the embedded SFTP endpoint: one checksum request per file vs the
batched `POST /v1/files/checksums`, against a push without verification.

    PYTHONPATH=. python benchmarks/bench_verify.py [--files 1000] [--size-kib 16] [--rounds 3]

Starts a real center (`kaic center serve --sftp-port 0`) on 127.0.0.1 in a temporary state
directory, logs a user in through the API, and pushes the same tree of small files with
kaic's engine three ways, interleaved within each round (so drifting load hits all three
alike): `per-file` (the center's `GET /v1/files/checksum` once per file, as kaic did before
the batched route), `batched` (one `POST /v1/files/checksums` per batch of files: what kaic
does now) and `no-verify`. The endpoint has no exec, so the center's checksums are how a
push there is verified. Each run writes to a new remote directory; the load average is
printed with each run, and the medians per way at the end.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

PASSWORD = "correct horse battery staple"
WAYS = ("per-file", "batched", "no-verify")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=1000)
    parser.add_argument("--size-kib", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--parallel", type=int, default=2, help="connections (kaic's default)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="kaic-bench-verify-") as tmp:
        base = Path(tmp)
        os.environ["KAIC_CONFIG_DIR"] = str(base / "config")
        from tests.helpers import start_center

        center = start_center(base / "state", "--sftp-port", "0")
        try:
            center.add_user("bench", PASSWORD, unix_account="bench01")
            run(center.url, base, args)
        finally:
            center.stop()


def run(url: str, base: Path, args: argparse.Namespace) -> None:
    from kaic.auth.credentials import Credentials
    from kaic.auth.ssh import known_hosts_lines
    from kaic.client.api import CenterClient
    from kaic.client.auth import AuthAPI
    from kaic.client.staging import FileChecksumsClient, file_checksum, staging_info
    from kaic.flows.ssh_target import ensure_identity
    from kaic.staging.connect import SshTarget
    from kaic.staging.transfer import SyncOptions, push

    src = base / "src"
    src.mkdir()
    for i in range(args.files):
        (src / f"f{i:05d}.bin").write_bytes(os.urandom(args.size_kib * 1024))

    with CenterClient(url) as client:
        tokens = AuthAPI(client).login_password("bench", PASSWORD)
        client.set_credentials(Credentials(access_token=tokens.access_token, kind="session"))
        info = staging_info(client)
        identity = ensure_identity(client, "bench")
        target = SshTarget(
            info.host,
            info.port,
            info.username,
            identity.key_path,
            identity.cert_path,
            known_hosts_lines(info),
            use_user_known_hosts=False,
        )
        per_file: Callable[[str], str | None] = lambda path: file_checksum(client, path)  # noqa: E731
        ways: dict[str, dict[str, Any]] = {
            "per-file": {"checksum_fn": per_file},
            "batched": {"checksums_fn": FileChecksumsClient(client)},
            "no-verify": {},
        }
        print(
            f"{args.files} x {args.size_kib} KiB push to the embedded endpoint, "
            f"--parallel {args.parallel}, {args.rounds} round(s)"
        )
        seconds: dict[str, list[float]] = {way: [] for way in WAYS}
        for round_no in range(1, args.rounds + 1):
            for way in WAYS:
                options = SyncOptions(parallel=args.parallel, verify=way != "no-verify")
                load = os.getloadavg()[0]
                started = time.monotonic()
                result = push(target, [str(src)], f"r{round_no}-{way}", options, **ways[way])
                took = time.monotonic() - started
                if result.failures or result.files_transferred != args.files:
                    raise SystemExit(f"{way}: {len(result.failures)} file(s) failed")
                seconds[way].append(took)
                print(
                    f"round {round_no}  {way:<9}  {took:6.2f} s  "
                    f"{args.files / took:7.0f} files/s  (load {load:.2f})"
                )
    print()
    median = {way: statistics.median(values) for way, values in seconds.items()}
    for way in WAYS:
        print(f"median {way:<9}  {median[way]:6.2f} s  {args.files / median[way]:7.0f} files/s")
    for way in ("per-file", "batched"):
        share = (median[way] - median["no-verify"]) / median[way]
        print(f"verification's share of a verified push ({way}): {share:.0%}")
    print(f"batched vs per-file: {median['per-file'] / median['batched']:.2f}x faster")


if __name__ == "__main__":
    main()
