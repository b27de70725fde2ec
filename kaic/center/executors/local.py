"""The local executor: each job is a process group on this machine.

A job runs as `sh -c WRAPPER` in a new session (so its whole process tree can be
signalled at once), stdin from /dev/null, stdout/stderr appended to the job's log files.
The wrapper runs `bash script.sh` and, when it ends, writes the exit status to the job's
`exitcode` file atomically (tmp + rename). That file is what lets a restarted center
learn how a job ended while the center was down: the wrapper outlives the center because
it is in its own session and ignores the terminal signals the center may get.

A center running as root (`run_as_users`) keeps the job's environment away from everything
that runs as root: the wrapper gets a fixed environment (`ROOT_ENV`) and calls its
tools by absolute path, so neither the job's `PATH` nor `LD_PRELOAD`, `BASH_ENV`, … reach a
root process; the job's variables are handed over on a descriptor (fd 4: an unnamed file,
NUL-separated) and exported only by the bash that has already dropped to the job's account,
which closes it, enters the workdir (as the account: root never changes into a directory
the user names) and runs the script.

Interactive sessions (`exec`, `connect`): the job runs on this host, so a session's command
is started here directly with the job's environment, workdir and account (setpriv under
`run_as_users`, like the job), in a session of its own (`executors.interactive`); a
forwarded port is reached by connecting to 127.0.0.1 from the center itself.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pwd
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from kaic.center.containers.launch import job_script, local_tool
from kaic.center.executors.base import (
    Ended,
    Executor,
    ExecutorError,
    JobPaths,
    Launched,
    LaunchSpec,
    RunningJob,
    SessionTarget,
)
from kaic.center.executors.forward_channel import ForwardChannel, connect_loopback
from kaic.center.executors.interactive import (
    ROOT_ENV,
    SessionProcess,
    environment_fd,
    require_root_tool,
    session_environment,
    spawn,
    tools_missing,
)
from kaic.center.executors.prepare import job_account, job_environment, prepare_storage
from kaic.center.executors.rendezvous import one_node
from kaic.center.executors.sampler import METRICS_DIR
from kaic.center.executors.sampler import local_line as sampler_line
from kaic.models.interactive import ExecStart

logger = logging.getLogger("kaic.center.executor")

LOST_REASON = "the job's process was lost while the center was down"

# $1 = script, $2 = exitcode file. The traps keep the wrapper alive when the process group
# gets SIGTERM/SIGINT/SIGHUP (the job itself gets them with default handling: a handler,
# unlike an ignored signal, is reset on exec), so it can still record the job's status.
# `mv` is atomic: a reader sees no file or the whole status.
WRAPPER = (
    "trap : TERM INT HUP\n"
    'bash "$1"\n'
    "rc=$?\n"
    'echo "$rc" > "$2.tmp" && mv -f "$2.tmp" "$2"\n'
    'exit "$rc"\n'
)

# The same, for a center running as root that runs each job as its user's unix account
# ($3 = uid, $4 = gid, $5 = setpriv, $6 = mv, $7 = bash, $8 = workdir, all absolute): the
# wrapper stays root (the status file is the center's, not the user's), only bash drops to the
# account. The script is handed over as an open file (its directory is the center's, 0700),
# so the job cannot read other jobs' scripts; the job's environment comes on stdin (moved to
# fd 4, stdin becoming /dev/null) and is read only after the drop (`AS_USER_START`).
WRAPPER_AS_USER = (
    "trap : TERM INT HUP\n"
    '"$5" --reuid="$3" --regid="$4" --init-groups -- "$7" -c "$9" "$7" "$8" \\\n'
    '  3<"$1" 4<&0 </dev/null\n'
    "rc=$?\n"
    'echo "$rc" > "$2.tmp" && "$6" -f "$2.tmp" "$2"\n'
    'exit "$rc"\n'
)

# Run by bash as the job's account ($0 = bash, $1 = workdir; fd 4 = the job's environment,
# NAME=value entries each ended by NUL; fd 3 = the script; stdin = /dev/null): export the
# job's variables, close fd 4, enter the workdir, run the script. Only builtins and an absolute
# path, so the variables just exported (PATH, CDPATH, …) change nothing here. Anything else
# started as root for a user (an exec session) hands the environment over the same way.
AS_USER_START = (
    'while IFS= read -r -u 4 -d "" entry; do export -- "$entry" 2>/dev/null; done\n'
    "exec 4<&-\n"
    'cd -- "$1" || exit 126\n'
    'exec "$0" /dev/fd/3\n'
)


def proc_start_time(pid: int) -> int | None:
    """The start time of process `pid` (clock ticks after boot), or None if it is gone.

    Zombies count as gone: they have ended and only wait to be reaped.
    """
    try:
        text = Path(f"/proc/{pid}/stat").read_text(encoding="ascii", errors="replace")
    except OSError:
        return None
    # The command name (field 2) may contain spaces and parentheses: split after the last ')'.
    fields = text[text.rfind(")") + 2 :].split()
    if len(fields) < 20 or fields[0] in ("Z", "X"):
        return None
    try:
        return int(fields[19])
    except ValueError:
        return None


def process_alive(pid: int, start_time: int | None) -> bool:
    """Whether the process `pid` runs and is the one that started at `start_time`."""
    current = proc_start_time(pid)
    if current is None:
        return False
    return start_time is None or current == start_time


def read_exit_code(path: Path) -> int | None:
    """The status a job's wrapper wrote to `path`, or None when there is none (yet)."""
    try:
        return int(path.read_text(encoding="ascii").strip())
    except (OSError, ValueError):
        return None


def _killpg(pgid: int | None, sig: int) -> None:
    if pgid is None or pgid <= 1:
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


@dataclass
class _Tracked:
    job_id: str
    paths: JobPaths
    launched: Launched
    #: set for jobs this executor started; None for re-attached ones
    popen: subprocess.Popen[bytes] | None
    #: monotonic time at which a cancelled job gets SIGKILL
    kill_at: float | None = None


class LocalExecutor(Executor):
    """Runs jobs as local process groups (the embedded local center)."""

    name = "local"
    max_nodes = 1
    supports_images = True
    runs_on_center_host = True

    def __init__(
        self,
        *,
        kill_grace: float = 10.0,
        base_path: str | None = None,
        run_as_users: bool = False,
        refusal: Callable[[str], str | None] | None = None,
    ) -> None:
        self.kill_grace = kill_grace
        self.base_path = base_path
        #: run each job as its user's unix account (the center runs as root)
        self.run_as_users = run_as_users
        #: why a user's job may not start (as the center's own account), checked at every
        #: start; None = no check (see `kaic.center.executors.own_account`)
        self.refusal = refusal
        self._jobs: dict[str, _Tracked] = {}

    def start(self, spec: LaunchSpec) -> Launched:
        paths = spec.paths
        reason = self.refusal(spec.user) if self.refusal is not None else None
        if reason is not None:
            raise ExecutorError(reason)
        try:
            account = job_account(spec) if self.run_as_users else None
            paths.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            # The launch change for images: the job's script, or a launcher running it in
            # its image (`kaic.center.containers.launch`).
            script = job_script(spec, tool=local_tool(spec, account))
            paths.script.write_text(script, encoding="utf-8")
            paths.exitcode.unlink(missing_ok=True)
            prepare_storage(spec.home, spec.workdir, account, own_storage=spec.own_storage)
            env = job_environment(spec, login=spec.user, base_path=self.base_path)
            env.update(one_node(spec, socket.gethostname()))  # one machine: rank 0 of 1
            sampler = self._sampler_line(spec, account)
            if account is None:
                popen = self._spawn(spec, argv=self._argv(sampler + WRAPPER, paths), env=env)
            else:
                paths.dir.chmod(0o700)
                paths.script.chmod(0o644)  # readable through the open file only
                argv = [
                    *self._argv(sampler + WRAPPER_AS_USER, paths),
                    str(account.pw_uid),
                    str(account.pw_gid),
                    require_root_tool("setpriv"),
                    require_root_tool("mv"),
                    require_root_tool("bash"),
                    str(spec.workdir),
                    AS_USER_START,
                ]
                handover = environment_fd(env)
                try:
                    popen = self._spawn(spec, argv=argv, env=None, stdin=handover)
                finally:
                    os.close(handover)
        except (OSError, ValueError) as exc:
            # ValueError: a NUL byte in an environment value or a path (the API refuses
            # them; a job stored before it did still fails alone, with this reason).
            raise ExecutorError(f"could not start the job: {exc}") from exc
        launched = Launched(
            external_id=str(popen.pid),
            pid=popen.pid,
            pgid=popen.pid,  # a new session's leader leads its process group too
            start_time=proc_start_time(popen.pid),
            nodes=(socket.gethostname(),),
        )
        self._jobs[spec.job_id] = _Tracked(spec.job_id, paths, launched, popen)
        return launched

    @staticmethod
    def _sampler_line(spec: LaunchSpec, account: pwd.struct_passwd | None) -> str:
        """The wrapper's first line, starting the job's metrics sampler (`executors.sampler`)
        into `metrics/` of the job's directory (the account's); "" when off or impossible."""
        if spec.metrics_interval <= 0:
            return ""
        metrics_dir = spec.paths.dir / METRICS_DIR
        try:
            metrics_dir.mkdir(mode=0o755, exist_ok=True)
            if account is not None:
                os.lchown(metrics_dir, account.pw_uid, account.pw_gid)
        except OSError as exc:
            logger.warning("job %s: no metrics sampler: %s", spec.job_id, exc)
            return ""
        return sampler_line(spec, metrics_dir, as_user=account is not None)

    @staticmethod
    def _argv(wrapper: str, paths: JobPaths) -> list[str]:
        return ["/bin/sh", "-c", wrapper, "kaic-job", str(paths.script), str(paths.exitcode)]

    @staticmethod
    def _spawn(
        spec: LaunchSpec, *, argv: list[str], env: dict[str, str] | None, stdin: int | None = None
    ) -> subprocess.Popen[bytes]:
        """Start the wrapper in a new session, its output appended to the job's logs.

        `env` None: the wrapper runs as root for a job run as its account — the fixed
        `ROOT_ENV`, in `/`, `stdin` carrying the job's environment. Otherwise the
        job's own environment, in its workdir, stdin from /dev/null."""
        paths = spec.paths
        with open(paths.stdout, "ab") as stdout, open(paths.stderr, "ab") as stderr:
            return subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL if stdin is None else stdin,
                stdout=stdout,
                stderr=stderr,
                cwd=spec.workdir if env is not None else "/",
                env=env if env is not None else dict(ROOT_ENV),
                start_new_session=True,
                close_fds=True,
            )

    def _check(self, tracked: _Tracked) -> Ended | None:
        """The job's end if it has ended, else None."""
        if tracked.popen is not None:
            rc = tracked.popen.poll()
            if rc is None:
                return None
            code = read_exit_code(tracked.paths.exitcode)
            sig = -rc if rc < 0 else None
            if code is None:
                # Killed (SIGKILL) before the wrapper could write the status.
                code = 128 + sig if sig is not None else rc
            return Ended(tracked.job_id, code, signal=sig)
        code = read_exit_code(tracked.paths.exitcode)
        if code is not None:
            return Ended(tracked.job_id, code)
        launched = tracked.launched
        if launched.pid is not None and process_alive(launched.pid, launched.start_time):
            return None
        # Gone: it may have written its status between the two looks.
        code = read_exit_code(tracked.paths.exitcode)
        if code is not None:
            return Ended(tracked.job_id, code)
        if launched.pid is not None:
            # Still our child (a center restarted inside the same process): reap it.
            with contextlib.suppress(ChildProcessError, OSError):
                _, status = os.waitpid(launched.pid, os.WNOHANG)
                if os.WIFSIGNALED(status):
                    sig = os.WTERMSIG(status)
                    return Ended(tracked.job_id, 128 + sig, signal=sig)
        return Ended(tracked.job_id, None, lost=True, reason="the job's process disappeared")

    def poll(self) -> list[Ended]:
        ended: list[Ended] = []
        now = time.monotonic()
        for job_id, tracked in list(self._jobs.items()):
            result = self._check(tracked)
            if result is not None:
                del self._jobs[job_id]
                # Slurm semantics: nothing of a job outlives it (background children too).
                _killpg(tracked.launched.pgid, signal.SIGKILL)
                ended.append(result)
            elif tracked.kill_at is not None and now >= tracked.kill_at:
                tracked.kill_at = None
                _killpg(tracked.launched.pgid, signal.SIGKILL)
        return ended

    def cancel(self, job_id: str) -> None:
        tracked = self._jobs.get(job_id)
        if tracked is None or tracked.kill_at is not None:
            return
        if self.kill_grace <= 0:
            _killpg(tracked.launched.pgid, signal.SIGKILL)
            return
        _killpg(tracked.launched.pgid, signal.SIGTERM)
        tracked.kill_at = time.monotonic() + self.kill_grace

    def recover(self, jobs: Sequence[RunningJob]) -> list[Ended]:
        ended: list[Ended] = []
        for job in jobs:
            code = read_exit_code(job.paths.exitcode)
            if code is not None:
                ended.append(Ended(job.job_id, code))
                continue
            pid = job.launched.pid
            if pid is not None and process_alive(pid, job.launched.start_time):
                self._jobs[job.job_id] = _Tracked(job.job_id, job.paths, job.launched, None)
                continue
            code = read_exit_code(job.paths.exitcode)
            if code is not None:
                ended.append(Ended(job.job_id, code))
            else:
                ended.append(Ended(job.job_id, None, lost=True, reason=LOST_REASON))
        return ended

    def shutdown(self, *, kill_jobs: bool) -> None:
        if kill_jobs:
            for tracked in self._jobs.values():
                _killpg(tracked.launched.pgid, signal.SIGKILL)
            for tracked in self._jobs.values():
                if tracked.popen is not None:
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        tracked.popen.wait(timeout=5)
        self._jobs.clear()

    def running(self) -> list[str]:
        """Ids of the jobs being monitored (for tests and diagnostics)."""
        return list(self._jobs)

    # -- interactive access --------------------------------------------------------------

    def interactive_refusal(self) -> str | None:
        missing = tools_missing()
        return f"interactive access is unavailable: {missing}" if missing else None

    def exec(self, target: SessionTarget, start: ExecStart) -> SessionProcess:
        spec = target.spec
        account = job_account(spec) if self.run_as_users else None
        job_env = job_environment(spec, login=spec.user, base_path=self.base_path)
        return spawn(
            start.argv,
            env=session_environment(job_env, start.env, tty=start.tty),
            cwd=spec.workdir,
            tty=start.tty,
            rows=start.rows,
            cols=start.cols,
            account=account,
        )

    def connect(self, target: SessionTarget, port: int) -> ForwardChannel:
        return connect_loopback(port)
