"""What serving SFTP as the user costs: the embedded endpoint in process vs through a worker.

    sudo PYTHONPATH=. python benchmarks/bench_sftp_relay.py [--size-mib 1024] [--rounds 2]
        [--client sftp|kaic]

Starts two embedded SFTP endpoints in this process over one storage root: A serves in
process (a single-user center), B as a `--run-as-user` center does — a worker process per
connection running as the account, this process relaying the bytes. Then pushes a file of
`--size-mib` MiB to each and pulls it back, interleaved A, B, A, B for `--rounds` rounds,
and prints MB/s with the load average before each transfer (the machine may be shared),
plus the time to open a session (`pwd`: login, and on B the worker's start).

The client runs in its own process: OpenSSH `sftp -c aes128-gcm@openssh.com` by default
(the fastest client, so the server side is what limits), or `kaic data push/pull
--no-verify --parallel 1` with a `KAIC_SSH_*` target. Needs root (to switch accounts) and
the OpenSSH client; uses the test suite's unix account `kaicstage`.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kaic.center.settings import CenterSettings
from kaic.center.sftp import EmbeddedSftp
from kaic.center.ssh_ca import UserCA
from kaic.center.store import Store
from tests.sshd import STAGING_USER, ensure_unix_user

MIB = 1 << 20


@dataclass
class Client:
    """How to reach one endpoint: its port, the key + certificate, the pinned host key."""

    port: int
    key: Path
    known_hosts: Path
    workdir: Path
    kind: str

    def _sftp(self, commands: str) -> None:
        subprocess.run(
            [
                "sftp",
                "-q",
                "-F",
                "/dev/null",
                "-b",
                "-",
                "-c",
                "aes128-gcm@openssh.com",
                "-i",
                str(self.key),
                "-o",
                f"CertificateFile={self.key}-cert.pub",
                "-o",
                f"UserKnownHostsFile={self.known_hosts}",
                "-o",
                "StrictHostKeyChecking=yes",
                "-o",
                "BatchMode=yes",
                "-P",
                str(self.port),
                f"{STAGING_USER}@127.0.0.1",
            ],
            input=commands.encode(),
            cwd=self.workdir,
            check=True,
            capture_output=True,
        )

    def _kaic(self, *args: str) -> None:
        env = dict(
            os.environ,
            KAIC_SSH_HOST="127.0.0.1",
            KAIC_SSH_PORT=str(self.port),
            KAIC_SSH_USER=STAGING_USER,
            KAIC_SSH_KEY=str(self.key),
            KAIC_SSH_CERT=f"{self.key}-cert.pub",
            KAIC_SSH_KNOWN_HOSTS=str(self.known_hosts),
        )
        command = [sys.executable, "-m", "kaic", "data", *args, "--no-verify", "--parallel", "1"]
        subprocess.run(command, cwd=self.workdir, env=env, check=True, capture_output=True)

    def push(self, local: str, remote: str) -> None:
        if self.kind == "kaic":
            self._kaic("push", local, remote)
        else:
            self._sftp(f"put {local} {remote}\n")

    def pull(self, remote: str, local: str) -> None:
        if self.kind == "kaic":
            self._kaic("pull", remote, local)
        else:
            self._sftp(f"get {remote} {local}\n")

    def session(self) -> None:
        self._sftp("pwd\n")


def timed(action: object) -> float:
    started = time.monotonic()
    action()  # type: ignore[operator]
    return time.monotonic() - started


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load {one:.2f} {five:.2f} {fifteen:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--client", choices=("sftp", "kaic"), default="sftp")
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("needs root: serving as the user switches to its account")

    base = Path(tempfile.mkdtemp(prefix="kaic-bench-relay-", dir="/var/tmp"))
    base.chmod(0o755)
    ensure_unix_user(STAGING_USER)
    import pwd

    account = pwd.getpwnam(STAGING_USER)
    homes = base / "homes"
    homes.mkdir(mode=0o755)
    home = homes / STAGING_USER
    home.mkdir(mode=0o700)
    os.chown(home, account.pw_uid, account.pw_gid)
    state = base / "state"
    endpoints: dict[str, EmbeddedSftp] = {}
    store = Store(state)
    try:
        store.create_user("bench", unix_account=STAGING_USER)
        ca = UserCA(state)
        for name, as_users in (("A in-process", False), ("B worker", True)):
            settings = CenterSettings(
                state_dir=state,
                sftp_port=0,
                storage_root=f"{homes}/{{unix_account}}",
                run_as_users=as_users,
            )
            endpoints[name] = EmbeddedSftp(settings, store, ca)
            endpoints[name].start()

        key = base / "id_ed25519"
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)],
            check=True,
            capture_output=True,
        )
        cert = ca.sign_user_key(
            key.with_name("id_ed25519.pub").read_text(),
            user="bench",
            principal=STAGING_USER,
            now=datetime.now(timezone.utc),
            validity_seconds=6 * 3600,
        )
        key.with_name("id_ed25519-cert.pub").write_text(cert.certificate + "\n")
        work = base / "local"
        work.mkdir()
        payload = work / "payload.bin"
        with payload.open("wb") as out:
            for _ in range(args.size_mib):
                out.write(os.urandom(MIB))
        clients: dict[str, Client] = {}
        for name, endpoint in endpoints.items():
            assert endpoint.port is not None
            known = base / f"known_hosts-{endpoint.port}"
            known.write_text(f"[127.0.0.1]:{endpoint.port} {endpoint.host_key_line}\n")
            clients[name] = Client(endpoint.port, key, known, work, args.client)

        size_mb = args.size_mib * MIB / 1e6
        results: dict[tuple[str, str], list[float]] = {}
        print(
            f"{args.size_mib} MiB, client {args.client}, {os.cpu_count()} CPUs, "
            f"{args.rounds} round(s), A/B interleaved"
        )
        for round_no in range(1, args.rounds + 1):
            for name, client in clients.items():
                opened = timed(client.session)
                results.setdefault((name, "session s"), []).append(opened)
                before = load()
                seconds = timed(lambda c=client: c.push("payload.bin", "payload.bin"))
                up = size_mb / seconds
                results.setdefault((name, "push MB/s"), []).append(up)
                (work / "back.bin").unlink(missing_ok=True)
                mid = load()
                seconds = timed(lambda c=client: c.pull("payload.bin", "back.bin"))
                down = size_mb / seconds
                results.setdefault((name, "pull MB/s"), []).append(down)
                owner = (home / "payload.bin").stat().st_uid
                print(
                    f"round {round_no} {name:13} session {opened:5.2f} s  push {up:6.1f} MB/s "
                    f"({before})  pull {down:6.1f} MB/s ({mid})  file uid {owner}"
                )
                (home / "payload.bin").unlink()
        print("medians:")
        for name in clients:
            row = "  ".join(
                f"{what} {statistics.median(results[(name, what)]):.2f}"
                for what in ("session s", "push MB/s", "pull MB/s")
            )
            print(f"  {name:13} {row}")
        a, b = "A in-process", "B worker"
        for what in ("push MB/s", "pull MB/s"):
            ratio = statistics.median(results[(b, what)]) / statistics.median(results[(a, what)])
            print(f"  worker / in-process {what.split()[0]}: {ratio:.2f}x")
    finally:
        for endpoint in endpoints.values():
            endpoint.stop()
        store.close()
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
