"""A real Slurm (22.05) with slurmrestd on 127.0.0.1, for the Slurm tests: one node, or
several on this one machine (multi-node jobs).

Follows design/TEST_SERVICES.md: everything lives in one temporary directory, munged,
slurmctld, slurmd (one per node) and slurmrestd are started by this module, their PIDs
recorded, and exactly those PIDs are stopped at the end. Two fake GPUs per node are
character devices.

Several nodes (`SlurmCluster(dir, nodes=2)`, "Two Slurm nodes on one machine" in
TEST_SERVICES.md): nodes `n1`, `n2`, … all at 127.0.0.1, each slurmd (`slurmd -N n1`) on its
own port with its own spool, pid and log file (`%n`), and its own two fake GPUs.

Run by hand: `python -m tests.slurm.cluster DIR [NODES]` brings a cluster up in DIR, prints
the URL and token, and stops it on Ctrl-C.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.helpers import ensure_account, free_port

BINARIES = ("munged", "slurmctld", "slurmd", "slurmrestd", "scontrol", "sinfo")
SBIN = ("/usr/sbin", "/usr/bin")
#: the unix account jobs run as in the tests (created when missing)
JOB_USER = "kaicslurm"

SLURM_CONF = """\
ClusterName=kaictest
SlurmctldHost=localhost(127.0.0.1)
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
SlurmUser=root
AuthType=auth/munge
AuthInfo=socket={dir}/munge/munge.socket
AuthAltTypes=auth/jwt
AuthAltParameters=jwt_key={dir}/jwt.key
CommunicationParameters=NoInAddrAny,NoCtldInAddrAny
StateSaveLocation={dir}/state
SlurmdSpoolDir={dir}/spool/%n
SlurmctldPidFile={dir}/slurmctld.pid
SlurmdPidFile={dir}/slurmd.%n.pid
SlurmctldLogFile={dir}/log/slurmctld.log
SlurmdLogFile={dir}/log/slurmd.%n.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=500
MpiDefault=none
MailProg=/bin/true
ReturnToService=2
SlurmdParameters=config_overrides
KillWait=2
MinJobAge=300
SchedulerParameters=sched_interval=2
GresTypes=gpu
{nodes}
PartitionName=debug Nodes={names} Default=YES MaxTime=INFINITE State=UP
"""

#: one node: the machine itself; several: `n1`, `n2`, … on 127.0.0.1, each on its own port
ONE_NODE = "NodeName=localhost NodeAddr=127.0.0.1 CPUs=8 RealMemory=4000 Gres=gpu:2 State=UNKNOWN"
NODE = (
    "NodeName={name} NodeHostname=localhost NodeAddr=127.0.0.1 Port={port} CPUs=4 "
    "RealMemory=2000 Gres=gpu:2 State=UNKNOWN"
)
GRES = "NodeName={name} Name=gpu File={dir}/gpu[{first}-{last}]"


def find_binary(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    for base in SBIN:
        candidate = Path(base) / name
        if candidate.exists():
            return str(candidate)
    return None


def missing_binaries() -> list[str]:
    return [name for name in BINARIES if find_binary(name) is None]


def ensure_job_user(name: str = JOB_USER) -> None:
    """Create the unix account jobs run as, if it is missing (needs root)."""
    ensure_account(name, home=True, shell="/bin/bash")


@dataclass
class SlurmCluster:
    """The running services; `stop()` ends exactly the processes `start()` started."""

    dir: Path
    #: how many nodes (1: `localhost`; more: `n1`, `n2`, …)
    nodes: int = 1
    #: lines appended to slurm.conf (a later setting wins: `MaxJobCount=20000` for a
    #: benchmark holding 10,000 jobs)
    extra_conf: str = ""
    url: str = ""
    token: str = ""
    env: dict[str, str] = field(default_factory=dict)
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    # -- helpers -------------------------------------------------------------------------

    def run(self, *args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            list(args), capture_output=True, text=True, env=self.env, timeout=timeout
        )

    def _spawn(self, name: str, argv: list[str], *, env: dict[str, str] | None = None) -> None:
        log = open(self.dir / "log" / f"{name}.out", "ab")  # noqa: SIM115 (child owns it)
        with log:
            self.procs[name] = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                env=env or self.env,
                start_new_session=True,
            )

    def logs(self) -> str:
        """The tails of all service logs (for failure messages)."""
        parts = []
        for path in sorted((self.dir / "log").glob("*")):
            with contextlib.suppress(OSError):
                parts.append(f"--- {path.name} ---\n{path.read_text(errors='replace')[-3000:]}")
        return "\n".join(parts)

    def _wait(self, what: str, check: object, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for name, proc in self.procs.items():
                if proc.poll() is not None:
                    raise RuntimeError(f"{name} exited {proc.returncode}\n{self.logs()}")
            if check():  # type: ignore[operator]
                return
            time.sleep(0.1)
        raise RuntimeError(f"timed out waiting for {what}\n{self.logs()}")

    @property
    def node_names(self) -> list[str]:
        return ["localhost"] if self.nodes == 1 else [f"n{i + 1}" for i in range(self.nodes)]

    # -- start / stop --------------------------------------------------------------------

    def _write_config(self, ctld_port: int, slurmd_port: int) -> None:
        d = self.dir
        names = self.node_names
        if self.nodes == 1:
            node_lines = ONE_NODE
        else:
            node_lines = "\n".join(NODE.format(name=n, port=free_port()) for n in names)
        (d / "slurm.conf").write_text(
            SLURM_CONF.format(
                dir=d,
                ctld_port=ctld_port,
                slurmd_port=slurmd_port,
                nodes=node_lines,
                names=",".join(names),
            )
            + self.extra_conf
        )
        gres = [
            GRES.format(name=n, dir=d, first=2 * i, last=2 * i + 1) for i, n in enumerate(names)
        ]
        (d / "gres.conf").write_text("AutoDetect=off\n" + "\n".join(gres) + "\n")
        for i in range(2 * self.nodes):
            dev = d / f"gpu{i}"
            if not dev.exists():  # /dev/null's and /dev/zero's numbers: harmless
                os.mknod(dev, 0o666 | 0o020000, os.makedev(1, 3 if i % 2 == 0 else 5))
            (d / "spool" / names[i // 2]).mkdir(parents=True, exist_ok=True)

    def start(self) -> SlurmCluster:
        d = self.dir
        for sub in ("state", "spool", "log", "munge"):
            (d / sub).mkdir(parents=True, exist_ok=True)
        os.chmod(d, 0o755)
        ctld_port, slurmd_port, rest_port = free_port(), free_port(), free_port()
        self._write_config(ctld_port, slurmd_port)
        key = d / "jwt.key"
        key.write_bytes(secrets.token_bytes(32))
        os.chmod(key, 0o600)
        self.env = {**os.environ, "SLURM_CONF": str(d / "slurm.conf")}

        # munged with its own key, socket and pid file in our dir
        munge_dir = d / "munge"
        munge_key = munge_dir / "munge.key"
        munge_key.write_bytes(secrets.token_bytes(128))
        shutil.chown(munge_dir, "munge", "munge")
        shutil.chown(munge_key, "munge", "munge")
        os.chmod(munge_key, 0o400)
        os.chmod(munge_dir, 0o755)
        socket_path = munge_dir / "munge.socket"
        self.env["MUNGE_SOCKET"] = str(socket_path)  # for munge's own tools
        munged = find_binary("munged") or "munged"
        # A private socket (slurm.conf `AuthInfo=socket=...`), so that several clusters —
        # parallel test runs, a benchmark beside the suite — never share one munged.
        self._spawn(
            "munged",
            [
                "setpriv",
                "--reuid=munge",
                "--regid=munge",
                "--init-groups",
                munged,
                "-F",
                "--key-file",
                str(munge_key),
                "--pid-file",
                str(munge_dir / "munged.pid"),
                "--log-file",
                str(munge_dir / "munged.log"),
                "--seed-file",
                str(munge_dir / "munged.seed"),
                "--socket",
                str(socket_path),
            ],
        )
        self._wait("munged", socket_path.exists)

        self._spawn("slurmctld", [find_binary("slurmctld") or "slurmctld", "-D", "-i"])
        for node in self.node_names:
            self._spawn(f"slurmd-{node}", [find_binary("slurmd") or "slurmd", "-D", "-N", node])

        def idle() -> bool:
            out = self.run("sinfo", "-h", "-N", "-o", "%T").stdout.split()
            return out == ["idle"] * self.nodes

        self._wait("the node to be idle", idle, timeout=45)
        self.url = f"http://127.0.0.1:{rest_port}"
        self.start_rest()
        made = self.run("scontrol", "token", "username=root", "lifespan=86400")
        if made.returncode != 0:
            raise RuntimeError(f"scontrol token failed: {made.stderr}")
        self.token = made.stdout.strip().split("=", 1)[1]
        ensure_job_user()
        return self

    def start_rest(self) -> None:
        """Start slurmrestd (also used to restart it after `stop_rest`)."""
        port = int(self.url.rsplit(":", 1)[1])
        self._spawn(
            "slurmrestd",
            [
                "setpriv",
                "--reuid=nobody",
                "--regid=nogroup",
                "--clear-groups",
                find_binary("slurmrestd") or "slurmrestd",
                "-a",
                "rest_auth/jwt",
                "-s",
                "openapi/v0.0.38,openapi/v0.0.37,openapi/v0.0.36",
                f"127.0.0.1:{port}",
            ],
            env={**self.env, "SLURM_JWT": "daemon"},
        )

        def listening() -> bool:
            with socket.socket() as sock:
                sock.settimeout(0.2)
                return sock.connect_ex(("127.0.0.1", port)) == 0

        self._wait("slurmrestd", listening)

    def stop_rest(self) -> None:
        self._stop("slurmrestd")

    def _stop(self, name: str) -> None:
        proc = self.procs.pop(name, None)
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)

    def stop(self) -> None:
        """Cancel what is left, then stop exactly the services this object started."""
        if "slurmctld" in self.procs and self.procs["slurmctld"].poll() is None:
            with contextlib.suppress(Exception):
                self.run("scancel", "--user", JOB_USER, timeout=10)
                self.run("scancel", "--user", "root", timeout=10)
        slurmds = [f"slurmd-{node}" for node in self.node_names]
        for name in ("slurmrestd", *slurmds, "slurmctld", "munged"):
            self._stop(name)
        for pid in self.leftover_job_processes():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def leftover_job_processes(self) -> list[int]:
        """Processes of this cluster's jobs still running (their `SLURM_CONF` is this
        cluster's). proctrack/linuxproc finds a job's processes by walking its process
        tree, so one whose parent died first (a cancel on a busy machine: the shell gets
        TERM before its `sleep`) is reparented to init and outlives the job; a site's
        proctrack/cgroup does not lose them."""
        mark = b"SLURM_CONF=" + os.fsencode(self.dir / "slurm.conf") + b"\0"
        found = []
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            try:
                environ = (proc / "environ").read_bytes() + b"\0"
            except OSError:
                continue
            if mark in environ and int(proc.name) != os.getpid():
                found.append(int(proc.name))
        return found


def main() -> None:
    target = Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/kaic-slurm").resolve()
    target.mkdir(parents=True, exist_ok=True)
    nodes = int(sys.argv[2]) if len(sys.argv) > 2 else 1
    cluster = SlurmCluster(target, nodes=nodes).start()
    print(f"url={cluster.url}\ntoken={cluster.token}\nSLURM_CONF={target}/slurm.conf", flush=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        signal.pause()
    except (KeyboardInterrupt, SystemExit):
        pass
    finally:
        cluster.stop()


if __name__ == "__main__":
    main()
