"""Interactive sessions in Slurm jobs: `srun --jobid=<id> --overlap` started on the center host
(which must be a Slurm client: `srun` installed, the cluster's `slurm.conf`, munge) as the
job's unix account, so Slurm runs the command as a step inside the job's allocation, on its
first node, with the job's limits.

- exec: `srun --pty` on a local pseudo-terminal for a tty session (srun forwards the
  terminal's size changes), pipes otherwise (stdout and stderr stay apart).
- forward: a relay step, `python3 -c RELAY PORT`, connects to `127.0.0.1:PORT` on the job's
  node and copies between the connection and its stdin/stdout, which srun carries to the
  center. Python rather than bash's `/dev/tcp`: a TCP half-close (EOF in one direction,
  which HTTP clients and `nc -N` rely on) needs `shutdown(SHUT_WR)`, which bash cannot do.
  The relay writes one byte (`ANNOUNCED`) once connected, or exits `RELAY_REFUSED` when the
  port refused; then the connection's bytes in frames (`RelayFrames`: a length, then the
  bytes; length 0 is EOF), since srun passes on a step's EOF only when the step ends. It
  runs under `srun --unbuffered` (see `srun_command`).
- ending a session: Slurm ends a step whose `srun` died, but to be sure each step is named
  after its session (`--job-name`) and cancelled by that name (`squeue --steps`, `scancel`)
  before the local `srun` is killed.
- srun's own words: even with `--quiet` srun reports a task that failed on its stderr (a
  tty's only stream): `srun: error: NODE: task 0: Exited with exit code 3`. The session's
  status says that already, and the command's stderr must stay the command's, so those lines
  are taken out (`SrunNoise`).
- nothing of the job's environment reaches what the center runs as root: `srun` gets it only
  after the drop to the job's account (`executors.interactive.as_account`), the step's
  lookup and cancel get none (a fixed environment and SLURM_CONF), and `srun`, `squeue` and
  `scancel` are found on a fixed PATH and then the center's own (`slurm_tool`), never on
  the job's.
- srun takes a numeric `--jobid` only: an array task (`12_3` to Slurm's queue) is reached by
  its own job id, which the executor learns from its polls.
"""

from __future__ import annotations

import logging
import os
import pwd
import re
import secrets
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

from kaic.center.executors.base import ExecutorError, LaunchSpec
from kaic.center.executors.forward_channel import RELAY_REFUSED
from kaic.center.executors.interactive import (
    ROOT_ENV,
    ROOT_PATH,
    SessionProcess,
    as_account,
    session_environment,
    spawn,
)
from kaic.center.executors.prepare import job_environment

logger = logging.getLogger("kaic.center.slurm")

#: what the relay step runs (argv[1]: the port); see the module's docstring
RELAY = f"""
import os, socket, struct, sys, threading
try:
    conn = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
except ConnectionRefusedError:
    sys.exit({RELAY_REFUSED})
except OSError as exc:
    sys.stderr.write("%s\\n" % exc)
    sys.exit(4)
conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
os.write(1, b"+")

def up():
    try:
        while True:
            data = os.read(0, 65536)
            if not data:
                break
            conn.sendall(data)
        conn.shutdown(socket.SHUT_WR)
    except OSError:
        os._exit(5)

sender = threading.Thread(target=up, daemon=True)
sender.start()
try:
    while True:
        data = conn.recv(65536)
        view = memoryview(struct.pack(">I", len(data)) + data)
        while view:
            view = view[os.write(1, view):]
        if not data:
            break
except OSError:
    os._exit(5)
sender.join()
"""
#: seconds the step lookup and cancel may take
_SLURM_COMMAND_SECONDS = 20


class SrunNoise:
    """Takes srun's own task reports (`srun: error: NODE: task N: …` lines) out of a step's
    output, as it streams: a line is held back only while it may still be one of them."""

    PREFIX = b"srun: error: "
    LINE = re.compile(rb"srun: error: [^\s:]+: tasks? [0-9,\-\[\]]+: [^\n]*\n")
    #: a held line longer than this is passed on whatever it turns out to be
    MAX_HELD = 4096

    def __init__(self) -> None:
        self.held = b""
        self.line_start = True

    def feed(self, data: bytes) -> bytes:
        """What of `data` (and of what was held) to pass on now."""
        buf, self.held = self.held + data, b""
        out = bytearray()
        i = 0
        while i < len(buf):
            if self.line_start and self.PREFIX.startswith(buf[i : i + len(self.PREFIX)]):
                end = buf.find(b"\n", i)
                if end == -1:
                    if len(buf) - i < self.MAX_HELD:
                        self.held = buf[i:]
                        return bytes(out)
                    out += buf[i:]
                    self.line_start = False
                    return bytes(out)
                line = buf[i : end + 1]
                if not self.LINE.fullmatch(line.replace(b"\r\n", b"\n")):
                    out += line
                i = end + 1
                continue
            end = buf.find(b"\n", i)
            if end == -1:
                out += buf[i:]
                self.line_start = False
                return bytes(out)
            out += buf[i : end + 1]
            i = end + 1
            self.line_start = True
        return bytes(out)

    def flush(self) -> bytes:
        """What is still held, at the end of the stream."""
        held, self.held = self.held, b""
        return held


def step_name() -> str:
    """A name for a session's step, unique enough to cancel it by."""
    return "kaic-session-" + secrets.token_hex(6)


def srun_command(
    srun: str,
    job: str,
    argv: Sequence[str],
    *,
    tty: bool,
    name: str,
    workdir: Path,
    unbuffered: bool = False,
) -> list[str]:
    """The `srun` that runs `argv` as a step of job `job` (its first node, one task).

    `unbuffered` (`srun -u`): without it slurmstepd passes a task's output on line by line,
    holding back what follows the last newline; a relay's bytes (its `ANNOUNCED` byte, a
    stream's tail) must go at once. The task's stdout is then a pseudo-terminal Slurm keeps
    raw (bytes pass unchanged, stderr stays apart), which is why exec without a tty does
    not use it: a command would see a terminal it did not ask for."""
    return [
        srun,
        f"--jobid={job}",
        "--overlap",
        "--nodes=1",
        "--ntasks=1",
        "--quiet",
        f"--job-name={name}",
        f"--chdir={workdir}",
        *(["--pty"] if tty else []),
        *(["--unbuffered"] if unbuffered else []),
        "--",
        *argv,
    ]


class StepCanceller:
    """Cancels a session's step by its name (the local `srun` being killed may not), as the
    job's `account` when given; `env` is the Slurm tools' whole environment (SLURM_CONF:
    `slurm_environment(ROOT_ENV, ...)`), never the job's."""

    def __init__(
        self,
        job: str,
        name: str,
        *,
        env: Mapping[str, str],
        account: pwd.struct_passwd | None,
    ) -> None:
        self.job = job
        self.name = name
        self.env = dict(env)
        self.account = account

    def _run(self, *argv: str) -> subprocess.CompletedProcess[str]:
        command, popen_env, env_fd = as_account(argv, self.env, self.account)
        try:
            return subprocess.run(
                command,
                capture_output=True,
                text=True,
                env=popen_env,
                pass_fds=() if env_fd is None else (env_fd,),
                timeout=_SLURM_COMMAND_SECONDS,
                check=False,
            )
        finally:
            if env_fd is not None:
                os.close(env_fd)

    def __call__(self) -> None:
        try:
            squeue, scancel = slurm_tool("squeue"), slurm_tool("scancel")
            listed = self._run(
                squeue, "--noheader", "--steps", f"--jobs={self.job}", "--format=%i %j"
            )
            steps = [
                line.split()[0]
                for line in listed.stdout.splitlines()
                if len(line.split()) == 2 and line.split()[1] == self.name
            ]
            for step in steps:
                self._run(scancel, "--quiet", step)
        except (OSError, subprocess.SubprocessError, ExecutorError) as exc:
            logger.warning("could not cancel step %s of job %s: %s", self.name, self.job, exc)


def slurm_environment(base: Mapping[str, str], slurm_conf: str | None) -> dict[str, str]:
    """`base` with SLURM_CONF as the executor has it (its setting, else the center's own)."""
    env = dict(base)
    conf = slurm_conf or os.environ.get("SLURM_CONF")
    if conf:
        env["SLURM_CONF"] = conf
    return env


def slurm_tool(name: str) -> str:
    """The absolute path of Slurm's `name` on ROOT_PATH, then on the center's own PATH (a
    Slurm in /opt/slurm/bin), never on a job's; ExecutorError naming what the center host
    lacks."""
    center_path = os.environ.get("PATH") or ""
    found = shutil.which(name, path=f"{ROOT_PATH}:{center_path}" if center_path else ROOT_PATH)
    if found is None:
        raise ExecutorError(
            f"{name} not found on the center host: interactive access to Slurm jobs needs the "
            "center host to be a Slurm client (srun, the cluster's slurm.conf, munge)"
        )
    return found


def find_srun() -> str:
    """`srun`'s path (`slurm_tool`)."""
    return slurm_tool("srun")


def step_environment(slurm_conf: str | None) -> dict[str, str]:
    """The whole environment of a step's lookup and cancel: fixed, with SLURM_CONF."""
    return slurm_environment(ROOT_ENV, slurm_conf)


def start_step(
    spec: LaunchSpec,
    slurm_id: str,
    argv: list[str],
    extra_env: dict[str, str],
    *,
    account: pwd.struct_passwd | None,
    base_path: str | None,
    slurm_conf: str | None,
    tty: bool,
    rows: int | None = None,
    cols: int | None = None,
    unbuffered: bool = False,
) -> SessionProcess:
    """`argv` as a step of Slurm job `slurm_id`: srun started here as `account`, with the
    job's environment (which Slurm gives the step); what runs as root before the drop gets
    none of it (`spawn`). `unbuffered`: see `srun_command`."""
    login = spec.unix_account or spec.user
    base = job_environment(spec, login=login, base_path=base_path, gpus=False)
    env = slurm_environment(session_environment(base, extra_env, tty=tty), slurm_conf)
    name = step_name()
    command = srun_command(
        find_srun(), slurm_id, argv, tty=tty, name=name, workdir=spec.workdir, unbuffered=unbuffered
    )
    canceller = StepCanceller(slurm_id, name, env=step_environment(slurm_conf), account=account)
    return spawn(
        command,
        env=env,
        cwd=spec.workdir,
        tty=tty,
        rows=rows,
        cols=cols,
        account=account,
        on_kill=canceller,
        noise=SrunNoise,
    )
