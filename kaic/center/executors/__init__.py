"""Executors: where the center's jobs really run (local processes; Slurm)."""
