"""Job metrics on the center: reading what the samplers (`kaic.gpu.sampler`, a process of
its own started with every job) write into each job's directory — the center never imports
NVML.

Modules:

- ``files``    the sample files' format and reading them defensively (size caps, links not
               followed, malformed lines skipped)
- ``summary``  samples as the API shows them, a summary per GPU, a job's efficiency
- ``latest``   the latest sample of each running job, followed in memory
- ``service``  `MetricsService`, behind `routers/metrics.py` and the ledger's end listener
"""
