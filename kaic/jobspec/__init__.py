"""Job files (YAML) and `kaic submit` flags -> the `JobSubmit` wire model."""

from kaic.jobspec.jobfile import (
    JobFile,
    SubmitOverrides,
    Transfer,
    build_submit,
    file_error,
    load_job_file,
    parse_array,
)

__all__ = [
    "JobFile",
    "SubmitOverrides",
    "Transfer",
    "build_submit",
    "file_error",
    "load_job_file",
    "parse_array",
]
