"""Multi-node jobs on Slurm: the part of the batch script that starts `run` once per node.

Slurm runs a batch script on the first node of the allocation only; per-node launch is the
executor's job. For `resources.nodes: N > 1` the batch script starts one srun step with one
task per node (`--nodes=N --ntasks=N --ntasks-per-node=1`), each task ("rank") running the
job's script with the rendezvous variables torchrun and friends take:

- `KAIC_NNODES` (N), `KAIC_NODE_RANK` (0 … N-1: Slurm's task id, which is also what `%t`
  names the rank's log files by), `KAIC_GPUS_PER_NODE`;
- `KAIC_NODELIST`: the allocation's node names, comma-separated (`scontrol show
  hostnames`, a local expansion with no call to slurmctld);
- `KAIC_MASTER_ADDR`: rank 0's address — the address of the node srun ran on
  (`SLURM_LAUNCH_NODE_IPADDR`), i.e. the batch host, which is where Slurm puts task 0; it is
  the address Slurm itself uses to reach that node, so the other nodes reach it too;
- `KAIC_MASTER_PORT`: fixed per job from its Slurm id (`executors.rendezvous`).

A job on one node runs its script inline, with the same variables for one rank
(`one_node`).

Each rank's output goes to its own files in the job's directory (`stdout.<rank>`,
`stderr.<rank>`, Slurm's `%t`); the batch script's own files keep what srun itself says.

Failure: `--kill-on-bad-exit=1` stops the other ranks as soon as one exits non-zero. srun
then exits with *its* code (often the killed ranks' 143), not the failing rank's: so the
first rank to fail records its rank and code in `failed_rank` (created exclusively: the
first writer wins, the ranks killed after it find the file taken), and the batch script
exits with that code.
"""

from __future__ import annotations

from kaic.center.executors.base import LaunchSpec
from kaic.center.executors.rendezvous import MASTER_PORT_BASE, MASTER_PORT_SPAN
from kaic.center.executors.sampler import rank_line

#: the batch script's KAIC_MASTER_PORT (`rendezvous.master_port` of the Slurm job id)
MASTER_PORT = f"$(( {MASTER_PORT_BASE} + ${{SLURM_JOB_ID:-0}} % {MASTER_PORT_SPAN} ))"
#: where Slurm's tools are looked for, after the job's own PATH (which the job may set to
#: anything: its conda environment, say); set in subshells only, the job's PATH stays its own
TOOLS_PATH = 'PATH="$PATH:/usr/local/bin:/usr/bin:/bin"'
#: in the job's directory: "<rank> <exit code>" of the first rank that failed
FAILED_RANK = "failed_rank"

# Run by bash as each rank ($1 = the job's directory). Only the rank's own variables are set
# here; the job's common ones come from the batch script's environment through srun.
RANK = (
    'export KAIC_NODE_RANK="$SLURM_PROCID" KAIC_GPUS="${CUDA_VISIBLE_DEVICES:-}"\n'
    'export KAIC_MASTER_ADDR="${SLURM_LAUNCH_NODE_IPADDR:-${KAIC_NODELIST%%,*}}"\n'
    '"$BASH" "$1/script.sh"\n'
    "rc=$?\n"
    'if [ "$rc" -ne 0 ]; then\n'
    f'  (set -C; echo "$KAIC_NODE_RANK $rc" > "$1/{FAILED_RANK}") 2>/dev/null\n'
    "fi\n"
    'exit "$rc"\n'
)


def one_node(spec: LaunchSpec) -> str:
    """The batch script's rendezvous variables for a job on one node: rank 0 of 1."""
    return (
        f"export KAIC_NNODES=1 KAIC_NODE_RANK=0 KAIC_GPUS_PER_NODE={spec.gpus}\n"
        'export KAIC_NODELIST="${SLURMD_NODENAME:-$(hostname)}" KAIC_MASTER_ADDR=127.0.0.1\n'
        f"export KAIC_MASTER_PORT={MASTER_PORT}\n"
    )


def _quote(text: str) -> str:
    return "'" + text.replace("'", "'\"'\"'") + "'"


def _job_dir(spec: LaunchSpec, *, pattern: bool) -> str:
    """The job's directory as shell text: an array task's is `<id>_<task>`, known only when
    the task runs. `pattern`: for srun's `--output`, where `%` starts a pattern."""
    if spec.array_tasks:
        base = str(spec.paths.dir.parent / f"{spec.job_id}_")
        suffix = "${SLURM_ARRAY_TASK_ID}"
    else:
        base, suffix = str(spec.paths.dir), ""
    if pattern:
        base = base.replace("%", "%%")
    return _quote(base) + (f'"{suffix}"' if suffix else "")


def launch_ranks(spec: LaunchSpec) -> str:
    """The end of the batch script of a job on `spec.nodes` nodes: run the job's script (in
    its directory, `script.sh`) once per node, and exit with the first failing rank's code."""
    n = spec.nodes
    return (
        "# kaic: run the job once per node, one rank each (see docs/slurm.md)\n"
        f"kaic_dir={_job_dir(spec, pattern=False)}\n"
        f"kaic_out={_job_dir(spec, pattern=True)}\n"
        f'rm -f "$kaic_dir/{FAILED_RANK}"\n'
        f"export KAIC_NNODES={n} KAIC_GPUS_PER_NODE={spec.gpus}\n"
        f"export KAIC_MASTER_PORT={MASTER_PORT}\n"
        f"KAIC_NODELIST=$({TOOLS_PATH}; "
        'scontrol show hostnames "$SLURM_JOB_NODELIST" 2>/dev/null | paste -sd, -)\n'
        'export KAIC_NODELIST="${KAIC_NODELIST:-$SLURM_JOB_NODELIST}"\n'
        f"kaic_srun=$({TOOLS_PATH}; command -v srun) || {{\n"
        '  echo "kaic: no srun on $HOSTNAME: a multi-node job starts its ranks with it" >&2\n'
        "  exit 127\n"
        "}\n"
        f'"$kaic_srun" --nodes={n} --ntasks={n} --ntasks-per-node=1 --kill-on-bad-exit=1 '
        "--input=none \\\n"
        '  --output="$kaic_out/stdout.%t" --error="$kaic_out/stderr.%t" \\\n'
        f'  "$BASH" -c {_quote(rank_line(spec) + RANK)} kaic-rank "$kaic_dir"\n'
        "kaic_rc=$?\n"
        f'if [ -s "$kaic_dir/{FAILED_RANK}" ]; then\n'
        f'  read -r kaic_rank kaic_code < "$kaic_dir/{FAILED_RANK}"\n'
        '  echo "kaic: rank $kaic_rank exited with code $kaic_code; the other ranks were '
        'stopped" >&2\n'
        '  exit "$kaic_code"\n'
        "fi\n"
        'exit "$kaic_rc"\n'
    )
