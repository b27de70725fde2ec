"""Staging throughput: kaic (paramiko) vs OpenSSH sftp, against one real sshd on 127.0.0.1.

    PYTHONPATH=. python benchmarks/bench_staging.py [--size-mib 1024] [--files 2000]
        [--small-only] [--rounds 1]

Needs root, sshd and ssh-keygen (see TEST_SERVICES.md). Measures a large file push and
pull against `sftp -c aes128-gcm@openssh.com`, and many small files pushed and pulled
against `sftp -r` put / get; prints MB/s, files/s and the ratios (goals: >= 0.9x large,
>= 2x small files). kaic runs with its defaults (2 connections, sha256 verification on)
and with --no-verify. `--rounds N` repeats the small-files part N times (the machine is
noisy) and reports each round; `--small-only` skips the large file.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kaic.staging.connect import SshTarget
from kaic.staging.transfer import SyncOptions, pull, push
from tests.sshd import STAGING_USER, ensure_unix_user, start_sshd


def keygen(*args: str) -> None:
    subprocess.run(["ssh-keygen", "-q", *args], check=True, capture_output=True)


def sftp_batch(port: int, key: Path, known: Path, commands: str, cwd: Path) -> float:
    started = time.monotonic()
    subprocess.run(
        [
            "sftp",
            "-q",
            "-b",
            "-",
            "-c",
            "aes128-gcm@openssh.com",
            "-i",
            str(key),
            "-o",
            f"CertificateFile={key}-cert.pub",
            "-o",
            f"UserKnownHostsFile={known}",
            "-o",
            "StrictHostKeyChecking=yes",
            "-P",
            str(port),
            f"{STAGING_USER}@127.0.0.1",
        ],
        input=commands.encode(),
        cwd=cwd,
        check=True,
        capture_output=True,
    )
    return time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--files", type=int, default=2000)
    parser.add_argument("--file-kib", type=int, default=16)
    parser.add_argument("--small-only", action="store_true", help="skip the large file")
    parser.add_argument("--rounds", type=int, default=1, help="repeat the small-files part")
    args = parser.parse_args()

    base = Path(tempfile.mkdtemp(prefix="kaic-bench-"))
    home = ensure_unix_user(STAGING_USER)
    remote = home / "kaic-bench"
    ca, key = base / "ca", base / "user"
    keygen("-t", "ed25519", "-N", "", "-f", str(ca))
    keygen("-t", "ed25519", "-N", "", "-f", str(key))
    keygen("-s", str(ca), "-I", "bench", "-n", STAGING_USER, "-V", "-5m:+2h", f"{key}.pub")
    sshd = start_sshd(base / "sshd", trusted_ca_pub=Path(f"{ca}.pub"), user=STAGING_USER)
    known = base / "known_hosts"
    known.write_text(sshd.known_hosts_line() + "\n")
    target = SshTarget(
        "127.0.0.1",
        sshd.port,
        STAGING_USER,
        key,
        Path(f"{key}-cert.pub"),
        [sshd.known_hosts_line()],
        use_user_known_hosts=False,
    )
    size = args.size_mib << 20
    results: dict[str, float] = {}
    try:
        small = base / "small"
        small.mkdir()
        for i in range(args.files):
            (small / f"f{i:05d}.bin").write_bytes(os.urandom(args.file_kib << 10))

        def fresh() -> None:
            shutil.rmtree(remote, ignore_errors=True)
            remote.mkdir()
            shutil.chown(remote, STAGING_USER, STAGING_USER)

        def mbps(seconds: float) -> float:
            return size / seconds / 1e6

        if not args.small_only:
            big = base / "big.bin"
            with big.open("wb") as f:
                for _ in range(args.size_mib):
                    f.write(os.urandom(1 << 20))
            # large file
            fresh()
            results["sftp put MB/s"] = mbps(
                sftp_batch(sshd.port, key, known, "put big.bin kaic-bench/big.bin\n", base)
            )
            (base / "got.bin").unlink(missing_ok=True)
            results["sftp get MB/s"] = mbps(
                sftp_batch(sshd.port, key, known, "get kaic-bench/big.bin got.bin\n", base)
            )
            for verify in (True, False):
                tag = "" if verify else " --no-verify"
                fresh()
                r = push(target, [str(big)], "kaic-bench/", SyncOptions(verify=verify))
                results[f"kaic push{tag} MB/s"] = mbps(r.seconds)
                out = base / "pulled"
                shutil.rmtree(out, ignore_errors=True)
                out.mkdir()
                r = pull(target, ["kaic-bench/big.bin"], str(out), SyncOptions(verify=verify))
                results[f"kaic pull{tag} MB/s"] = mbps(r.seconds)
            shutil.rmtree(base / "pulled", ignore_errors=True)
            big.unlink()

        # many small files: push, then pull what was pushed. Every run writes to a new
        # directory and nothing is deleted until the end: ext4 skips recently deleted inodes
        # when it allocates new ones, so a run right after deleting 2,000 files pays extra
        # for every file it creates (measured: up to 2x), which would favour whoever runs
        # first.
        fresh()
        runs = 0

        def new_dirs() -> tuple[str, Path]:
            nonlocal runs
            runs += 1
            return f"kaic-bench/small{runs}", base / f"got{runs}"

        for rnd in range(1, args.rounds + 1):
            sfx = f" #{rnd}" if args.rounds > 1 else ""
            dst, got = new_dirs()
            t = sftp_batch(sshd.port, key, known, f"put -r small {dst}\n", base)
            results[f"sftp -r put files/s{sfx}"] = args.files / t
            t = sftp_batch(sshd.port, key, known, f"get -r {dst} {got.name}\n", base)
            assert len(os.listdir(got)) == args.files
            results[f"sftp -r get files/s{sfx}"] = args.files / t
            for verify in (True, False):
                tag = "" if verify else " --no-verify"
                dst, got = new_dirs()
                r = push(target, [str(small)], dst, SyncOptions(verify=verify))
                assert r.files_transferred == args.files and not r.failures, r.summary()
                results[f"kaic push{tag} files/s{sfx}"] = args.files / r.seconds
                r = pull(target, [dst], str(got), SyncOptions(verify=verify))
                assert r.files_transferred == args.files and not r.failures, r.summary()
                results[f"kaic pull{tag} files/s{sfx}"] = args.files / r.seconds
    finally:
        sshd.stop()
        shutil.rmtree(remote, ignore_errors=True)
        shutil.rmtree(base, ignore_errors=True)

    for name, value in results.items():
        print(f"{name:32s} {value:10.1f}")
    print()
    if not args.small_only:
        for op, ref in (("push", "sftp put"), ("pull", "sftp get")):
            print(
                f"{op} 1 file  ratio (verified / --no-verify): "
                f"{results[f'kaic {op} MB/s'] / results[f'{ref} MB/s']:.2f}x / "
                f"{results[f'kaic {op} --no-verify MB/s'] / results[f'{ref} MB/s']:.2f}x"
                "  (goal >= 0.9x)"
            )
    for rnd in range(1, args.rounds + 1):
        sfx = f" #{rnd}" if args.rounds > 1 else ""
        for op, ref in (("push", "sftp -r put"), ("pull", "sftp -r get")):
            base_rate = results[f"{ref} files/s{sfx}"]
            print(
                f"{op} {args.files} files{sfx} ratio (verified / --no-verify): "
                f"{results[f'kaic {op} files/s{sfx}'] / base_rate:.2f}x / "
                f"{results[f'kaic {op} --no-verify files/s{sfx}'] / base_rate:.2f}x"
                "  (goal >= 2x)"
            )


if __name__ == "__main__":
    main()
