"""Staging against OpenSSH and rsync, on loopback or through a slow network (a latency proxy).

    sudo PYTHONPATH=. .venv/bin/python benchmarks/bench_wan.py --rtt-ms 30      # a far host
    sudo PYTHONPATH=. .venv/bin/python benchmarks/bench_wan.py --rtt-ms 0       # loopback
        [--size-mib 1024] [--files 2000] [--file-kib 16] [--dirs 1] [--rounds 3]
        [--only large|small] [--rate-mbit N] [--kaic-args "--parallel 4"]
        [--baseline /tmp/kaic-main]   # another kaic tree, measured in the same rounds
        [--local-dir /dev/shm] [--remote-dir /dev/shm]   # either side's files on tmpfs

Needs root, sshd, sftp, ssh-keygen and rsync (`apt-get install -y rsync`). It starts its own
sshd on 127.0.0.1 (certificate login, as a center's staging host), and with `--rtt-ms` > 0
the latency proxy of `tests/staging/faults.py` in a process of its own (RTT/2 each way,
optionally `--rate-mbit` each way); every client goes through the same proxy to the same
sshd, with the same cipher (aes128-gcm) and key. `--local-dir /dev/shm` puts this machine's
side of the files (a push's sources, a pull's destinations) on tmpfs, `--remote-dir
/dev/shm` the host's: the same for every tool, and without the erratic cost of creating
files on this machine's ext4 (docs/staging.md, "Where a pull's CPU goes on this machine").

Every tool runs as a fresh process, timed from outside (wall clock from start to exit, its
login included) — kaic as `python -m kaic data push|pull` with `KAIC_SSH_*`, like a user
would run it, its bytecode written first as `pip install` writes it (each tree measured):

- large file (`--size-mib`): `sftp` put / get; `kaic data push|pull` verified (the default)
  and `--no-verify`; and the honest peer of a verified transfer, "sftp, then the fastest
  sha256 on both ends": the sftp time plus the time `openssl dgst -sha256` takes on the
  source and on the copy, run at once (they would run on two machines). Each phase of a
  round (pushes, pulls) starts with an untimed `sftp` transfer: the first writer after a
  GiB was freed pays for this machine's memory, and that must not always be one tool.
- small files (`--files` x `--file-kib`, in one directory or spread over `--dirs`
  directories — a tree: each directory is a listing and a MKDIR): `sftp -r` put / get,
  `rsync -a` over ssh (which checks a whole-file checksum of every file it sends),
  `kaic data push|pull` verified and `--no-verify`.
- `--baseline TREE`: kaic from another source tree (`git archive main | tar -x -C TREE`),
  verified, as `base push|pull` in the same rounds: before / after a change, interleaved.

Within a round the tools run one after the other, the order reversed every other round
(A, B, C / C, B, A), each into a directory of its own that is deleted only at the end
(ext4 allocates inodes slower right after a mass delete). The load average is printed
before each measurement, and per tool the median over rounds with the ratios to sftp
(and rsync) of the same rounds, and the client's CPU seconds (user + sys of the process).
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.sshd import STAGING_USER, RunningSshd, ensure_unix_user, start_sshd

CIPHER = "aes128-gcm@openssh.com"
REPO = Path(__file__).resolve().parents[1]


@dataclass
class Run:
    seconds: float
    cpu: float


@dataclass
class Bench:
    base: Path
    sshd: RunningSshd
    key: Path
    known: Path
    port: int
    remote_home: Path
    kaic_args: list[str]
    #: another kaic source tree to measure beside this one (`--baseline`)
    baseline: Path | None = None
    results: dict[str, list[Run]] = field(default_factory=dict)

    # -- running a tool ----------------------------------------------------------------
    def timed(
        self, name: str, argv: list[str], *, stdin: bytes = b"", env: dict[str, str] | None = None
    ) -> Run:
        load = os.getloadavg()[0]
        seconds, usage, code, output = run_process(argv, stdin=stdin, env=env, cwd=self.base)
        if code != 0:
            raise SystemExit(f"{name} failed ({code}): {shlex.join(argv)}\n{output}")
        run = Run(seconds, usage)
        self.results.setdefault(name, []).append(run)
        print(f"  load {load:4.2f}  {name:28s} {seconds:7.2f} s  cpu {usage:6.2f} s", flush=True)
        return run

    def ssh_options(self) -> list[str]:
        return [
            "-c",
            CIPHER,
            "-i",
            str(self.key),
            "-o",
            f"CertificateFile={self.key}-cert.pub",
            "-o",
            f"UserKnownHostsFile={self.known}",
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            "BatchMode=yes",
        ]

    def sftp(self, name: str, commands: str) -> Run:
        argv = ["sftp", "-q", "-b", "-", *self.ssh_options(), "-P", str(self.port)]
        return self.timed(name, [*argv, f"{STAGING_USER}@127.0.0.1"], stdin=commands.encode())

    def rsync(self, name: str, src: str, dst: str) -> Run:
        ssh = shlex.join(["ssh", "-p", str(self.port), *self.ssh_options()])
        return self.timed(name, ["rsync", "-a", "-e", ssh, src, dst])

    def remote(self, path: str) -> str:
        return f"{STAGING_USER}@127.0.0.1:{path}"

    def kaic(self, name: str, *args: str, tree: Path = REPO) -> Run:
        env = dict(os.environ)
        env.update(
            PYTHONPATH=str(tree),
            HOME=str(self.base / "home"),
            KAIC_SSH_HOST="127.0.0.1",
            KAIC_SSH_PORT=str(self.port),
            KAIC_SSH_USER=STAGING_USER,
            KAIC_SSH_KEY=str(self.key),
            KAIC_SSH_CERT=f"{self.key}-cert.pub",
            KAIC_SSH_KNOWN_HOSTS=str(self.known),
            KAIC_CONFIG_DIR=str(self.base / "config"),
            KAIC_STATE_DIR=str(self.base / "state"),
        )
        argv = [sys.executable, "-m", "kaic", "data", *args, "--json", *self.kaic_args]
        return self.timed(name, argv, env=env)

    def hash_both(self, name: str, local: Path, remote: Path, sftp_run: Run) -> None:
        """`openssl dgst -sha256` of both copies at once; recorded as the sftp time plus the
        hashing's wall time."""
        load = os.getloadavg()[0]
        started = time.monotonic()
        procs = [
            subprocess.Popen(["openssl", "dgst", "-sha256", str(p)], stdout=subprocess.PIPE)
            for p in (local, remote)
        ]
        digests, cpu = set(), 0.0
        for proc in procs:
            assert proc.stdout is not None
            digests.add(proc.stdout.read().split()[-1])
            cpu += wait_cpu(proc)
        seconds = time.monotonic() - started
        assert len(digests) == 1, digests
        run = Run(sftp_run.seconds + seconds, sftp_run.cpu + cpu)
        self.results.setdefault(name, []).append(run)
        print(
            f"  load {load:4.2f}  {name:28s} {run.seconds:7.2f} s  (sftp + {seconds:.2f} s "
            "of hashing)",
            flush=True,
        )


def wait_cpu(proc: subprocess.Popen[bytes]) -> float:
    """Wait for `proc`; its CPU seconds (user + sys, from the kernel's accounting)."""
    _pid, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return usage.ru_utime + usage.ru_stime


def run_process(
    argv: list[str], *, stdin: bytes, env: dict[str, str] | None, cwd: Path
) -> tuple[float, float, int, str]:
    """Run `argv` to its end: (wall seconds, CPU seconds, exit code, its output)."""
    with tempfile.TemporaryFile() as out:
        started = time.monotonic()
        proc = subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=out, stderr=out, cwd=cwd, env=env
        )
        assert proc.stdin is not None
        proc.stdin.write(stdin)
        proc.stdin.close()
        cpu = wait_cpu(proc)
        seconds = time.monotonic() - started
        out.seek(0)
        return seconds, cpu, proc.returncode, out.read().decode(errors="replace")[-4000:]


def compile_tree(tree: Path) -> None:
    """Write the bytecode of a tree's `kaic/` (as `pip install` does), so that each kaic run
    pays what an installed kaic pays, not compiling its sources (which it does on every run
    where `PYTHONDONTWRITEBYTECODE` is set, the `.pyc` files missing: ~70 ms)."""
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(tree / "kaic")], check=True)


def keygen(*args: str) -> None:
    subprocess.run(["ssh-keygen", "-q", *args], check=True, capture_output=True)


def start_proxy(
    target_port: int, rtt_ms: float, rate_mbit: float | None
) -> tuple[subprocess.Popen[str], int]:
    argv = [
        sys.executable,
        "-m",
        "tests.staging.faults",
        "--target-port",
        str(target_port),
        "--rtt-ms",
        str(rtt_ms),
    ]
    if rate_mbit:
        argv += ["--rate-mbit", str(rate_mbit)]
    proc = subprocess.Popen(
        argv,
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert proc.stdout is not None
    line = proc.stdout.readline().split()
    if line[:1] != ["port"]:
        raise SystemExit(f"latency proxy did not start: {line}")
    return proc, int(line[1])


def median(runs: list[Run]) -> float:
    return statistics.median(r.seconds for r in runs)


def report(
    results: dict[str, list[Run]], units: Callable[[float], str], pairs: list[tuple[str, str]]
) -> None:
    for name, runs in results.items():
        each = ", ".join(f"{r.seconds:.2f}" for r in runs)
        cpu = statistics.median(r.cpu for r in runs)
        mid = median(runs)
        print(f"{name:28s} median {mid:7.2f} s = {units(mid)}  [{each}]  cpu {cpu:.2f} s")
    for a, b in pairs:
        if a in results and b in results:
            per_round = [
                ra.seconds / rb.seconds for ra, rb in zip(results[a], results[b], strict=False)
            ]
            ratio = median(results[a]) / median(results[b])
            rounds = ", ".join(f"{x:.2f}" for x in per_round)
            paired = statistics.median(per_round)
            print(f"{b} / {a}: {ratio:.2f}x  (per round: {rounds}; their median {paired:.2f}x)")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rtt-ms", type=float, default=30.0, help="0: straight to sshd")
    parser.add_argument("--rate-mbit", type=float, default=None)
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--files", type=int, default=2000)
    parser.add_argument("--file-kib", type=int, default=16)
    parser.add_argument("--dirs", type=int, default=1, help="spread the files over N dirs")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--only", choices=("large", "small"), default=None)
    parser.add_argument("--kaic-args", default="", help="extra kaic data options")
    parser.add_argument("--skip", default="", help="comma list of tools to leave out")
    parser.add_argument("--baseline", type=Path, default=None, help="another kaic tree")
    parser.add_argument(
        "--local-dir",
        default=None,
        help="where this machine's files go (e.g. /dev/shm: no disk noise; default: /tmp)",
    )
    parser.add_argument(
        "--remote-dir",
        default=None,
        help="where the host's files go (e.g. /dev/shm; default: the staging user's home)",
    )
    args = parser.parse_args()

    base = Path(tempfile.mkdtemp(prefix="kaic-wan-", dir=args.local_dir))
    os.chmod(base, 0o755)
    home = ensure_unix_user(STAGING_USER)
    remote = home / "kaic-wan"
    if remote.is_symlink():
        remote.unlink()
    shutil.rmtree(remote, ignore_errors=True)
    held = remote
    if args.remote_dir:  # the host's side elsewhere (a tmpfs): the staging path links there
        held = Path(tempfile.mkdtemp(prefix="kaic-wan-host-", dir=args.remote_dir))
        remote.symlink_to(held)
    else:
        remote.mkdir()
    shutil.chown(held, STAGING_USER, STAGING_USER)
    ca, key = base / "ca", base / "user"
    keygen("-t", "ed25519", "-N", "", "-f", str(ca))
    keygen("-t", "ed25519", "-N", "", "-f", str(key))
    keygen("-s", str(ca), "-I", "bench", "-n", STAGING_USER, "-V", "-5m:+8h", f"{key}.pub")
    sshd = start_sshd(base / "sshd", trusted_ca_pub=Path(f"{ca}.pub"), user=STAGING_USER)
    proxy: subprocess.Popen[str] | None = None
    port = sshd.port
    if args.rtt_ms > 0:
        proxy, port = start_proxy(sshd.port, args.rtt_ms, args.rate_mbit)
    known = base / "known_hosts"
    known.write_text(f"{sshd.known_hosts_line()}\n[127.0.0.1]:{port} {sshd.host_key_pub_line}\n")
    bench = Bench(base, sshd, key, known, port, home, shlex.split(args.kaic_args), args.baseline)
    for tree in (REPO, args.baseline):
        if tree is not None:
            compile_tree(tree)
    skip = set(filter(None, args.skip.split(",")))
    where = f"through a {args.rtt_ms:g} ms RTT proxy" if proxy else "on loopback"
    if args.rate_mbit:
        where += f" capped at {args.rate_mbit:g} Mbit/s"
    where += f", local files in {base}, the host's in {held}"
    print(f"# {where}, {os.cpu_count()} CPUs, load {os.getloadavg()}", flush=True)
    try:
        if args.only in (None, "large"):
            large(bench, args, remote, skip)
        if args.only in (None, "small"):
            small(bench, args, remote, skip)
    finally:
        if proxy is not None:
            proxy.send_signal(signal.SIGTERM)
            proxy.wait(10)
        sshd.stop()
        shutil.rmtree(held, ignore_errors=True)
        if remote.is_symlink():
            remote.unlink()
        shutil.rmtree(base, ignore_errors=True)


def interleaved(rnd: int, steps: list[tuple[str, Callable[[], None]]], skip: set[str]) -> None:
    """Run the steps not skipped, in order on even rounds and reversed on odd ones."""
    for tool, step in steps if rnd % 2 == 0 else steps[::-1]:
        if tool not in skip:
            step()


def tagged(verb: str, extra: tuple[str, ...]) -> str:
    return " ".join(("kaic", verb, *extra))


def large(bench: Bench, args: argparse.Namespace, remote: Path, skip: set[str]) -> None:
    size = args.size_mib << 20
    big = bench.base / "big.bin"
    with big.open("wb") as f:
        for _ in range(args.size_mib):
            f.write(os.urandom(1 << 20))
    there, got = remote / "big.bin", bench.base / "got"

    def put() -> None:
        run = bench.sftp("sftp put", "put big.bin kaic-wan/big.bin\n")
        if "peer" not in skip:
            bench.hash_both("sftp put + sha256", big, there, run)
        there.unlink()

    def kaic_push(*extra: str) -> None:
        bench.kaic(tagged("push", extra), "push", str(big), "kaic-wan/", *extra)
        there.unlink()

    def base_push() -> None:
        assert bench.baseline is not None
        bench.kaic("base push", "push", str(big), "kaic-wan/", tree=bench.baseline)
        there.unlink()

    def get() -> None:
        got.mkdir()
        run = bench.sftp("sftp get", "get kaic-wan/big.bin got/big.bin\n")
        if "peer" not in skip:
            bench.hash_both("sftp get + sha256", there, got / "big.bin", run)
        shutil.rmtree(got)

    def kaic_pull(*extra: str) -> None:
        got.mkdir()
        bench.kaic(tagged("pull", extra), "pull", "kaic-wan/big.bin", f"{got}/", *extra)
        shutil.rmtree(got)

    def base_pull() -> None:
        assert bench.baseline is not None
        got.mkdir()
        bench.kaic("base pull", "pull", "kaic-wan/big.bin", f"{got}/", tree=bench.baseline)
        shutil.rmtree(got)

    def warm_up(command: str) -> None:
        """An untimed sftp transfer before a round's timed ones: on this machine the first
        writer after a GiB was freed and another written pays for the memory (an sftp get
        right after the source was copied: 5.2 s, at the end of the same round: 2.6 s)."""
        got.mkdir(exist_ok=True)
        bench.sftp("(warm-up, not counted)", command)
        bench.results.pop("(warm-up, not counted)", None)
        shutil.rmtree(got)
        if command.startswith("put"):
            there.unlink()

    if bench.baseline is None:
        skip = skip | {"base"}

    bench.results = {}
    print(f"# {args.size_mib} MiB file", flush=True)
    for rnd in range(args.rounds):
        print(f"round {rnd + 1}", flush=True)
        warm_up("put big.bin kaic-wan/big.bin\n")
        pushes: list[tuple[str, Callable[[], None]]] = [
            ("sftp", put),
            ("kaic", kaic_push),
            ("kaic-nv", partial(kaic_push, "--no-verify")),
            ("base", base_push),
        ]
        interleaved(rnd, pushes, skip)
        shutil.copyfile(big, there)
        shutil.chown(there, STAGING_USER, STAGING_USER)
        warm_up("get kaic-wan/big.bin got/big.bin\n")
        pulls: list[tuple[str, Callable[[], None]]] = [
            ("sftp", get),
            ("kaic", kaic_pull),
            ("kaic-nv", partial(kaic_pull, "--no-verify")),
            ("base", base_pull),
        ]
        interleaved(rnd, pulls, skip)
        there.unlink()
    big.unlink()
    print(f"# {args.size_mib} MiB, medians (MB/s = {size / 1e6:.0f} MB / seconds)")
    report(
        bench.results,
        lambda s: f"{size / s / 1e6:6.1f} MB/s",
        [
            ("sftp put", "kaic push"),
            ("sftp put", "kaic push --no-verify"),
            ("sftp put + sha256", "kaic push"),
            ("base push", "kaic push"),
            ("sftp get", "kaic pull"),
            ("sftp get", "kaic pull --no-verify"),
            ("sftp get + sha256", "kaic pull"),
            ("base pull", "kaic pull"),
        ],
    )


class SmallDirs:
    """Fresh directory names for the small-files runs (none reused, none deleted early)."""

    def __init__(self, bench: Bench):
        self.bench = bench
        self.n = 0
        #: the remote directories pushed this round (the pulls fetch the first one)
        self.pushed: list[str] = []

    def remote(self) -> str:
        self.n += 1
        name = f"kaic-wan/s{self.n}"
        self.pushed.append(name)
        return name

    def local(self) -> Path:
        self.n += 1
        return self.bench.base / f"g{self.n}"


def small(bench: Bench, args: argparse.Namespace, remote: Path, skip: set[str]) -> None:
    src = bench.base / "small"
    src.mkdir()
    for i in range(args.files):
        where = src / f"d{i % args.dirs:04d}" if args.dirs > 1 else src
        where.mkdir(exist_ok=True)
        (where / f"f{i:05d}.bin").write_bytes(os.urandom(args.file_kib << 10))
    dirs = SmallDirs(bench)

    def put() -> None:
        bench.sftp("sftp -r put", f"put -r small {dirs.remote()}\n")

    def rsync_push() -> None:
        bench.rsync("rsync -a push", f"{src}/", bench.remote(dirs.remote() + "/"))

    def kaic_push(*extra: str) -> None:
        bench.kaic(tagged("push", extra), "push", str(src), dirs.remote(), *extra)

    def base_push() -> None:
        assert bench.baseline is not None
        bench.kaic("base push", "push", str(src), dirs.remote(), tree=bench.baseline)

    def check(dst: Path) -> None:
        assert sum(len(files) for _d, _s, files in os.walk(dst)) == args.files, dst

    def get() -> None:
        dst = dirs.local()
        bench.sftp("sftp -r get", f"get -r {dirs.pushed[0]} {dst.name}\n")
        check(dst)

    def rsync_pull() -> None:
        dst = dirs.local()
        bench.rsync("rsync -a pull", bench.remote(dirs.pushed[0] + "/"), f"{dst}/")
        check(dst)

    def kaic_pull(*extra: str) -> None:
        dst = dirs.local()
        bench.kaic(tagged("pull", extra), "pull", dirs.pushed[0], str(dst), *extra)
        check(dst)

    def base_pull() -> None:
        assert bench.baseline is not None
        dst = dirs.local()
        bench.kaic("base pull", "pull", dirs.pushed[0], str(dst), tree=bench.baseline)
        check(dst)

    if bench.baseline is None:
        skip = skip | {"base"}

    bench.results = {}
    spread = f" in {args.dirs} directories" if args.dirs > 1 else ""
    print(f"# {args.files} x {args.file_kib} KiB files{spread}", flush=True)
    for rnd in range(args.rounds):
        print(f"round {rnd + 1}", flush=True)
        dirs.pushed = []
        pushes: list[tuple[str, Callable[[], None]]] = [
            ("sftp", put),
            ("rsync", rsync_push),
            ("kaic", kaic_push),
            ("kaic-nv", partial(kaic_push, "--no-verify")),
            ("base", base_push),
        ]
        interleaved(rnd, pushes, skip)
        for dst in dirs.pushed:
            check(bench.remote_home / dst)
        pulls: list[tuple[str, Callable[[], None]]] = [
            ("sftp", get),
            ("rsync", rsync_pull),
            ("kaic", kaic_pull),
            ("kaic-nv", partial(kaic_pull, "--no-verify")),
            ("base", base_pull),
        ]
        interleaved(rnd, pulls, skip)
    print(f"# {args.files} x {args.file_kib} KiB files, medians")
    report(
        bench.results,
        lambda s: f"{args.files / s:7.0f} files/s",
        [
            ("sftp -r put", "kaic push"),
            ("sftp -r put", "kaic push --no-verify"),
            ("rsync -a push", "kaic push"),
            ("base push", "kaic push"),
            ("sftp -r get", "kaic pull"),
            ("sftp -r get", "kaic pull --no-verify"),
            ("rsync -a pull", "kaic pull"),
            ("base pull", "kaic pull"),
        ],
    )


if __name__ == "__main__":
    main()
