"""Staging throughput: kaic (paramiko) vs OpenSSH sftp, against one real sshd on 127.0.0.1.

    PYTHONPATH=. python benchmarks/bench_staging.py [--size-mib 1024] [--files 2000]

Needs root, sshd and ssh-keygen (see TEST_SERVICES.md). Measures a large file push and
pull against `sftp -c aes128-gcm@openssh.com`, and many small files pushed against
`sftp -r`; prints MB/s, files/s and the ratios (goals: >= 0.9x large, >= 2x small files).
kaic runs with its defaults (2 connections, sha256 verification on) and with --no-verify.
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
        big = base / "big.bin"
        with big.open("wb") as f:
            for _ in range(args.size_mib):
                f.write(os.urandom(1 << 20))
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

        # many small files
        fresh()
        t = sftp_batch(sshd.port, key, known, "put -r small kaic-bench/small\n", base)
        results["sftp -r put files/s"] = args.files / t
        for verify in (True, False):
            tag = "" if verify else " --no-verify"
            fresh()
            r = push(target, [str(small)], "kaic-bench/small", SyncOptions(verify=verify))
            assert r.files_transferred == args.files, r.summary()
            results[f"kaic push{tag} files/s"] = args.files / r.seconds
    finally:
        sshd.stop()
        shutil.rmtree(remote, ignore_errors=True)
        shutil.rmtree(base, ignore_errors=True)

    for name, value in results.items():
        print(f"{name:32s} {value:10.1f}")
    print()
    print(
        f"push 1 file  ratio (verified / --no-verify): "
        f"{results['kaic push MB/s'] / results['sftp put MB/s']:.2f}x / "
        f"{results['kaic push --no-verify MB/s'] / results['sftp put MB/s']:.2f}x  (goal >= 0.9x)"
    )
    print(
        f"pull 1 file  ratio (verified / --no-verify): "
        f"{results['kaic pull MB/s'] / results['sftp get MB/s']:.2f}x / "
        f"{results['kaic pull --no-verify MB/s'] / results['sftp get MB/s']:.2f}x  (goal >= 0.9x)"
    )
    print(
        f"push {args.files} files ratio (verified / --no-verify): "
        f"{results['kaic push files/s'] / results['sftp -r put files/s']:.2f}x / "
        f"{results['kaic push --no-verify files/s'] / results['sftp -r put files/s']:.2f}x"
        "  (goal >= 2x)"
    )


if __name__ == "__main__":
    main()
