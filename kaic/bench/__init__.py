"""`kaic bench`: validate the GPUs of a node (health through NVML, micro-benchmarks, verdicts).

Layers, each importable without the others' heavy dependencies:

- ``specs``     the one spec table, name→SKU matcher, efficiency and threshold tables
- ``nvml``      the NVML seam (``NvmlApi``), inventory and run-time sampling
- ``health``    NVML health checks; ``kernel_log`` reads and parses ``NVRM: Xid`` lines
- ``backends``  the ``BenchBackend`` protocol and selection (torch, cupy, numpy on CPU)
- ``runner``    orchestrates one run; ``verdict`` turns measurements into PASS/WARN/FAIL
- ``report``    the JSON document of BENCH.md and the human rendering
"""
