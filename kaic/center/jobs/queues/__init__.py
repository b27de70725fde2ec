"""The scheduler's two queue policies, chosen once from `Executor.owns_queue`:

- `fifo.CenterQueue`: the center runs the queue itself (the local executor): FIFO per
  partition, GPUs handed out exclusively, time limits and cancels signalled by the center;
- `handover.HandOverQueue`: the executor owns the queue (Slurm): every job is handed over at
  once, with its dependencies; states, reasons and time limits come from the executor.
"""
