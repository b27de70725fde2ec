"""The Slurm executor: the center as a gateway in front of a Slurm cluster (via slurmrestd).

`executor` runs the queue through Slurm, `api` is the slurmrestd adapter (the one module that
knows slurmrestd's paths and field names), `states` maps Slurm's job states to kaic's.
"""
