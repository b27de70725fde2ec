"""Job files (ARCHITECTURE.md "Job file") and `kaic submit` flags -> the `JobSubmit` wire model.

`load_job_file` reads and checks a YAML job file (`jobfile`), keeping the line of every key
so that each problem is reported as ``job.yaml:7: resources.gpus: must be a whole number >= 0
(got 'eight')``. `build_submit` lays the flags of `kaic submit` over the file (`submit`) and
validates the result with the wire model. The keys and the flags are the model's (`keys`):
each field of `JobSubmit` is a key, its `JobKey` names its flag. Everything wrong raises
`UsageError` (exit 2) before anything is sent.
"""

from kaic.jobspec.jobfile import JobFile, Transfer, load_job_file
from kaic.jobspec.keys import parse_array
from kaic.jobspec.submit import SubmitOverrides, build_submit, file_error

__all__ = [
    "JobFile",
    "SubmitOverrides",
    "Transfer",
    "build_submit",
    "file_error",
    "load_job_file",
    "parse_array",
]
