"""Executors: where the center's jobs really run (local processes; Slurm).

- `base`: the interface between the scheduler and an executor (`Executor`, `LaunchSpec`, ...);
- `prepare`: what every executor shares to prepare a job (its account, never root; its
  directories, by one ownership rule; its environment);
- `registry` (with `entry`): the executors by name, their own settings and `kaic center
  serve` options, and how each is built;
- `local`: jobs as local process groups; `slurm/`: the queue run by Slurm through slurmrestd.

A new executor gets a folder like `slurm/` (its `options.py` is its registry entry), a line
in `registry.ENTRIES`, and a run of the conformance suite (`tests/center/conformance/`).
"""
