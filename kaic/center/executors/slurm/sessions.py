"""Interactive sessions into a Slurm job: `kaic exec`, `kaic shell` and `kaic forward` run
a step of the job (`srun --jobid --overlap`, `slurm/interactive.py`) started on the center
host as the job's account, never as the center's own.

`SlurmSessions` is mixed into `SlurmExecutor`, which knows the job's account (`_owner`),
where srun and slurm.conf are (`base_path`, `slurm_conf`) and an array task's own Slurm job
id as its polls saw it (`_task_job_id`).
"""

from __future__ import annotations

import os
import pwd

from kaic.center.executors.base import ExecutorError, LaunchSpec, SessionTarget
from kaic.center.executors.forward_channel import ForwardChannel, RelayFrames
from kaic.center.executors.interactive import SessionProcess, tools_missing
from kaic.center.executors.slurm.interactive import RELAY, find_srun, start_step
from kaic.models.interactive import ExecStart


class SlurmSessions:
    """`exec` and `connect` for the Slurm executor (see the module doc)."""

    base_path: str | None
    slurm_conf: str | None

    def _owner(self, spec: LaunchSpec) -> pwd.struct_passwd | None:
        raise NotImplementedError

    def _task_job_id(self, job_id: str) -> int | None:
        raise NotImplementedError

    def interactive_refusal(self) -> str | None:
        if os.geteuid() != 0:
            # srun must start as the job's account, never as the center's own with the
            # user's environment (the center's account holds the database and the CA key)
            return "interactive access to Slurm jobs needs a center running as root"
        missing = tools_missing()
        if missing:
            return f"interactive access is unavailable: {missing}"
        try:
            find_srun()
        except ExecutorError as exc:
            return str(exc)
        return None

    def _step(
        self,
        target: SessionTarget,
        argv: list[str],
        extra_env: dict[str, str],
        *,
        tty: bool,
        rows: int | None = None,
        cols: int | None = None,
        unbuffered: bool = False,
    ) -> SessionProcess:
        """`argv` as a step of the job (`start_step`), srun started as the job's account."""
        return start_step(
            target.spec,
            self._slurm_job_id(target),
            argv,
            extra_env,
            account=self._owner(target.spec),
            base_path=self.base_path,
            slurm_conf=self.slurm_conf,
            tty=tty,
            rows=rows,
            cols=cols,
            unbuffered=unbuffered,
        )

    def _slurm_job_id(self, target: SessionTarget) -> str:
        """The numeric job id srun takes: a plain job's own, an array task's as seen by
        the polls (`12_3` is not one)."""
        if target.external_id.isdigit():
            return target.external_id
        task_job_id = self._task_job_id(target.spec.job_id)
        if task_job_id is not None:
            return str(task_job_id)
        raise ExecutorError(
            f"the Slurm job id of {target.spec.job_id} ({target.external_id or 'none'}) is "
            "not known yet; try again in a moment"
        )

    def exec(self, target: SessionTarget, start: ExecStart) -> SessionProcess:
        return self._step(
            target,
            list(start.argv),
            dict(start.env),
            tty=start.tty,
            rows=start.rows,
            cols=start.cols,
        )

    def connect(self, target: SessionTarget, port: int) -> ForwardChannel:
        relay = self._step(
            target, ["python3", "-c", RELAY, str(port)], {}, tty=False, unbuffered=True
        )
        assert relay.stdin is not None
        return ForwardChannel(
            read_fd=relay.stdout,
            write_fd=relay.stdin,
            process=relay,
            announces=True,
            frames=RelayFrames(),
        )
