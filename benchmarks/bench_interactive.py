"""Interactive access, measured beside OpenSSH on the same machine, interleaved:

1. keystroke echo latency: one key typed into `kaic shell` (bash in a job of the local
   center, through the center's exec WebSocket) vs `ssh -tt` to a local sshd running bash —
   from the key written to the terminal to its echo read back; p50 / p99;
2. throughput of one TCP connection reading from a server in the job: directly on loopback,
   through `kaic forward`, and through `ssh -L`; MB/s; the ratio kaic / ssh -L (first bar:
   >= 0.5x);
3. the time to open a session: `kaic exec JOB -- true` vs `ssh HOST true` (wall clock).

Rounds alternate the methods (A, B, A, B ...) and print the load average before each, since
the machine may be shared. Needs root (sshd runs as a test account, `kaicstage`) and the
OpenSSH server and client.

Usage: sudo python benchmarks/bench_interactive.py [--rounds 3] [--keys 200] [--mib 512]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import pty
import select
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.center.jobs_support import kill_job_processes  # noqa: E402
from tests.helpers import RunningCenter, free_port, start_center  # noqa: E402
from tests.sshd import STAGING_USER, RunningSshd, start_sshd  # noqa: E402

#: a job-side server: sends `total` bytes (a random MiB over and over) to each connection
SOURCE = textwrap.dedent(
    """
    import os, socket, sys, threading
    port, ready = int(sys.argv[1]), sys.argv[2]
    block = os.urandom(1 << 20)
    sock = socket.create_server(("127.0.0.1", port))
    open(ready, "w").close()

    def send(conn):
        with conn:
            total = int(conn.recv(64).decode())
            view = memoryview(block)
            while total > 0:
                n = min(total, len(block))
                conn.sendall(view[:n])
                total -= n

    while True:
        conn, _ = sock.accept()
        threading.Thread(target=send, args=(conn,), daemon=True).start()
    """
)


def load() -> str:
    return "load {:.2f} {:.2f} {:.2f}".format(*os.getloadavg())


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def kaic_cmd() -> list[str]:
    exe = shutil.which("kaic")
    return [exe] if exe else [sys.executable, "-m", "kaic"]


class Bench:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("KAIC_")}
        self.env.update(
            KAIC_CONFIG_DIR=str(tmp / "config"),
            KAIC_STATE_DIR=str(tmp / "state"),
            PYTHONPATH=str(REPO),
            TERM="xterm",
        )
        self.key = tmp / "id_ed25519"
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(self.key)], check=True
        )
        keys = tmp / "authorized_keys"
        keys.write_text(self.key.with_suffix(".pub").read_text())
        keys.chmod(0o644)
        ca = tmp / "unused_ca"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(ca)], check=True)
        self.sshd: RunningSshd = start_sshd(
            tmp / "sshd",
            trusted_ca_pub=ca.with_suffix(".pub"),
            user=STAGING_USER,
            authorized_keys=keys,
            extra_config=("AllowTcpForwarding yes", "PermitTTY yes"),
        )
        self.known = tmp / "known_hosts"
        self.known.write_text(self.sshd.known_hosts_line() + "\n")

    def tls_center(self) -> tuple[RunningCenter, dict[str, str]]:
        """A second center serving HTTPS itself (a self-signed certificate for 127.0.0.1),
        alice logged in to it: the environment of a kaic talking to it."""
        tls = self.tmp / "tls"
        tls.mkdir()
        cert, key = tls / "cert.pem", tls / "key.pem"
        subprocess.run(
            [
                "openssl",
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-keyout",
                str(key),
                "-out",
                str(cert),
                "-days",
                "1",
                "-subj",
                "/CN=127.0.0.1",
                "-addext",
                "subjectAltName=IP:127.0.0.1",
            ],
            check=True,
            capture_output=True,
        )
        key.chmod(0o600)
        center = start_center(tls / "state", "--tls-cert", str(cert), "--tls-key", str(key))
        password = "bench-password-" + os.urandom(6).hex()
        center.add_user("alice", password)
        center.add_project("bench", 1000, ["alice"])
        env = {**self.env, "KAIC_CONFIG_DIR": str(tls / "config")}
        subprocess.run(
            [
                *kaic_cmd(),
                "login",
                "--center",
                center.url,
                "--ca-bundle",
                str(cert),
                "--username",
                "alice",
                "--password-stdin",
                "--insecure-storage",
            ],
            input=password + "\n",
            env=env,
            text=True,
            check=True,
            capture_output=True,
        )
        return center, env

    def kaic(self, *args: str, **kw: object) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*kaic_cmd(), *args],
            text=True,
            capture_output=True,
            **{"env": self.env, **kw},  # type: ignore[call-overload]
        )

    def ssh_args(self, *extra: str) -> list[str]:
        return [
            "ssh",
            "-F",
            "/dev/null",
            "-i",
            str(self.key),
            "-o",
            f"UserKnownHostsFile={self.known}",
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            "BatchMode=yes",
            "-p",
            str(self.sshd.port),
            *extra,
            f"{STAGING_USER}@127.0.0.1",
        ]

    def job(self, *command: str, env: dict[str, str] | None = None) -> str:
        env = env or self.env
        job_id = self.kaic("submit", "--", *command, check=True, env=env).stdout.strip()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            doc = json.loads(self.kaic("show", job_id, "--json", check=True, env=env).stdout)
            if doc["state"] == "RUNNING":
                return job_id
            time.sleep(0.1)
        raise RuntimeError(f"job {job_id} did not start")

    def close(self) -> None:
        self.sshd.stop()
        self.kaic("center", "stop")
        # A job outlives its center (by design): end the bench's own jobs, in both centers.
        kill_job_processes(self.tmp / "state" / "center")
        kill_job_processes(self.tmp / "tls" / "state")


# -- 1. keystroke echo ---------------------------------------------------------------------


class Typist:
    """A program on a pseudo-terminal, typed into one key at a time."""

    def __init__(self, argv: list[str], env: dict[str, str]) -> None:
        self.pid, self.fd = pty.fork()
        if self.pid == 0:
            os.execvpe(argv[0], argv, env)
        self.seen = b""

    def read_until(self, pattern: bytes, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while pattern not in self.seen:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{pattern!r} never came: {self.seen[-400:]!r}")
            ready, _, _ = select.select([self.fd], [], [], 0.5)
            if ready:
                self.seen += os.read(self.fd, 65536)

    def echo_latencies(self, keys: int) -> list[float]:
        lags = []
        for i in range(keys):
            if i and i % 40 == 0:
                os.write(self.fd, b"\x15")  # Ctrl-U: a fresh line now and then
                time.sleep(0.05)
                with contextlib.suppress(OSError):
                    while select.select([self.fd], [], [], 0.05)[0]:
                        os.read(self.fd, 65536)
            t0 = time.perf_counter()
            os.write(self.fd, b"x")
            got = b""
            while b"x" not in got:
                select.select([self.fd], [], [], 5)
                got += os.read(self.fd, 65536)
            lags.append(time.perf_counter() - t0)
        return lags

    def close(self) -> None:
        os.write(self.fd, b"\x15exit\r")
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            done, _ = os.waitpid(self.pid, os.WNOHANG)
            if done:
                break
            with contextlib.suppress(OSError):
                if select.select([self.fd], [], [], 0.1)[0]:
                    os.read(self.fd, 65536)
        else:
            os.kill(self.pid, 9)
            os.waitpid(self.pid, 0)
        os.close(self.fd)


def echo_round(bench: Bench, method: str, job_id: str, keys: int) -> list[float]:
    # The same shell both ways: bash without rc files, with a prompt its echo cannot fake.
    prompt = "PS1='rea''dy> ' exec bash --norc --noprofile -i"
    if method == "kaic shell":
        typist = Typist([*kaic_cmd(), "shell", job_id], bench.env)
    else:
        typist = Typist([*bench.ssh_args("-tt"), "bash", "--norc", "--noprofile", "-i"], bench.env)
    try:
        os.write(typist.fd, prompt.encode() + b"\r")
        typist.read_until(b"ready> ")
        return typist.echo_latencies(keys)
    finally:
        typist.close()


# -- 2. throughput ---------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of one process (all its threads) so far."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def descendants(pid: int) -> list[int]:
    """The processes below `pid` (sshd's per-connection children)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError):
                parents[int(entry.name)] = int(
                    (entry / "stat").read_text().rsplit(")", 1)[1].split()[1]
                )
    found, frontier = [], [pid]
    while frontier:
        parent = frontier.pop()
        children = [p for p, pp in parents.items() if pp == parent]
        found += children
        frontier += children
    return found


class Tunnel:
    """A forward's local port, and the processes whose CPU time it costs, by part
    (the client side, the server side)."""

    def __init__(self, port: int, parts: dict[str, list[int]]) -> None:
        self.port = port
        self.parts = parts

    def cpu(self) -> dict[str, float]:
        return {part: sum(map(cpu_seconds, pids)) for part, pids in self.parts.items()}


def read_all(port: int, total: int) -> float:
    """MB/s of reading `total` bytes from the server behind 127.0.0.1:`port`."""
    with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
        buf = bytearray(1 << 20)
        view = memoryview(buf)
        t0 = time.perf_counter()
        sock.sendall(str(total).encode())
        got = 0
        while got < total:
            n = sock.recv_into(view)
            if not n:
                raise RuntimeError(f"stream ended after {got} of {total} bytes")
            got += n
        return total / (time.perf_counter() - t0) / 1e6


@contextlib.contextmanager
def kaic_forward(
    bench: Bench, job_id: str, port: int, center_pid: int, env: dict[str, str] | None = None
) -> Iterator[Tunnel]:
    local = free_port()
    proc = subprocess.Popen(
        [*kaic_cmd(), "forward", job_id, f"{port}:{local}"],
        env=env or bench.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    assert proc.stdout is not None
    proc.stdout.readline()  # the URL: listening
    try:
        yield Tunnel(local, {"kaic forward": [proc.pid], "center": [center_pid]})
    finally:
        proc.terminate()
        proc.wait()


@contextlib.contextmanager
def ssh_forward(bench: Bench, port: int) -> Iterator[Tunnel]:
    local = free_port()
    proc = subprocess.Popen(
        bench.ssh_args("-N", "-L", f"{local}:127.0.0.1:{port}"),
        stdin=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", local), 1):
            break
        time.sleep(0.05)
    try:
        yield Tunnel(local, {"ssh": [proc.pid], "sshd": descendants(bench.sshd.pid)})
    finally:
        proc.terminate()
        proc.wait()


# -- 3. opening a session --------------------------------------------------------------------


def open_times(bench: Bench, job_id: str, n: int = 5) -> tuple[float, float]:
    kaic_t, ssh_t = [], []
    for _ in range(n):
        t0 = time.perf_counter()
        subprocess.run(
            [*kaic_cmd(), "exec", job_id, "--", "true"],
            env=bench.env,
            check=True,
            stderr=subprocess.DEVNULL,
        )
        kaic_t.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        subprocess.run([*bench.ssh_args(), "true"], env=bench.env, check=True)
        ssh_t.append(time.perf_counter() - t0)
    return statistics.median(kaic_t), statistics.median(ssh_t)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--keys", type=int, default=200)
    parser.add_argument("--mib", type=int, default=512)
    parser.add_argument("--skip-echo", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        os.chmod(tmp, 0o755)
        bench = Bench(tmp)
        try:
            subprocess.run([*kaic_cmd(), "center", "start"], env=bench.env, check=True)
            holder = bench.job("sleep", "3600")
            script, ready, port = tmp / "source.py", tmp / "ready", free_port()
            script.write_text(SOURCE)
            source = bench.job(sys.executable, str(script), str(port), str(ready))
            deadline = time.monotonic() + 30
            while not ready.exists() and time.monotonic() < deadline:
                time.sleep(0.05)
            print(f"kaic {bench.kaic('--version').stdout.strip()}; {os.cpu_count()} CPUs; {load()}")

            if not args.skip_echo:
                lags: dict[str, list[float]] = {"kaic shell": [], "ssh -tt": []}
                for r in range(args.rounds):
                    for method in lags:
                        print(f"echo round {r + 1} {method:<10} ({load()})", flush=True)
                        lags[method] += echo_round(bench, method, holder, args.keys)
                for method, values in lags.items():
                    ms = [v * 1000 for v in values]
                    print(
                        f"keystroke echo {method:<10}: p50 {statistics.median(ms):6.2f} ms  "
                        f"p99 {percentile(ms, 0.99):6.2f} ms  ({len(ms)} keys)"
                    )

            total = args.mib * 1024 * 1024
            local_pid = json.loads((tmp / "state" / "center" / "center.json").read_text())["pid"]
            tls_center, tls_env = bench.tls_center()
            tls_ready = tmp / "tls-ready"
            tls_port = free_port()
            tls_source = bench.job(
                sys.executable, str(script), str(tls_port), str(tls_ready), env=tls_env
            )
            deadline = time.monotonic() + 30
            while not tls_ready.exists() and time.monotonic() < deadline:
                time.sleep(0.05)
            names = ("direct", "kaic forward", "kaic forward (TLS)", "ssh -L")
            rates: dict[str, list[float]] = {name: [] for name in names}
            cpu: dict[str, dict[str, float]] = {name: {} for name in names}
            with contextlib.ExitStack() as stack:
                tunnels = {
                    "direct": Tunnel(port, {}),
                    "kaic forward": stack.enter_context(
                        kaic_forward(bench, source, port, int(local_pid))
                    ),
                    "kaic forward (TLS)": stack.enter_context(
                        kaic_forward(bench, tls_source, tls_port, tls_center.pid, tls_env)
                    ),
                    "ssh -L": stack.enter_context(ssh_forward(bench, port)),
                }
                for tunnel in tunnels.values():
                    read_all(tunnel.port, 1 << 20)  # warm: every tunnel up
                for r in range(args.rounds):
                    for method, tunnel in tunnels.items():
                        print(f"throughput round {r + 1} {method:<18} ({load()})", flush=True)
                        before = tunnel.cpu()
                        rates[method].append(read_all(tunnel.port, total))
                        for part, used in tunnel.cpu().items():
                            spent = cpu[method].get(part, 0.0) + used - before[part]
                            cpu[method][part] = spent
            tls_center.stop()
            gib = total * args.rounds / (1 << 30)
            for method, values in rates.items():
                cost = "".join(f"; {part} {spent / gib:.2f}" for part, spent in cpu[method].items())
                cost = f" — CPU-s per GiB{cost}" if cost else ""
                print(
                    f"throughput {method:<18}: median {statistics.median(values):7.1f} MB/s  "
                    f"(runs: {', '.join(f'{v:.0f}' for v in values)}){cost}"
                )
            ssh = statistics.median(rates["ssh -L"])
            for method in ("kaic forward", "kaic forward (TLS)"):
                ratio = statistics.median(rates[method]) / ssh
                print(f"{method} / ssh -L: {ratio:.2f}x (first bar: >= 0.5x)")
            kaic_open, ssh_open = open_times(bench, holder)
            print(f"open a session: kaic exec -- true {kaic_open:.3f} s, ssh true {ssh_open:.3f} s")
        finally:
            bench.close()


if __name__ == "__main__":
    main()
