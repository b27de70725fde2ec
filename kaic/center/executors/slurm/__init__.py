"""The Slurm executor: the center as a gateway in front of a Slurm cluster (via slurmrestd).

- `options`: its registry entry (settings, `kaic center serve` options, how it is built);
- `executor`: the queue run through Slurm (submit, batched polling, cancel, recovery);
- `submit`: a `LaunchSpec` as a Slurm submission (directories, batch script, request);
- `api`: the slurmrestd client (its URLs, headers, submit document and errors);
- `records`: Slurm's job, node and partition records, read from either REST generation;
- `states`: Slurm's job states mapped to kaic's;
- `resources`: partitions and free GPUs from `/partitions` and `/nodes`;
- `health`: whether slurmrestd answers, and the backoff while it does not.
"""
