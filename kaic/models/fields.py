"""How a job field is written outside the wire: declared once, on the model's field.

A field of `JobSubmit` (or of a model inside it, like `Resources`) may carry `JobKey`
metadata: the key a job file uses for it when that is not the field's name
(`time_limit_seconds` is `time_limit`), and the `kaic submit` flag that sets it. Pydantic
ignores the metadata, so the wire and the OpenAPI document do not change. `job_fields`
lists a model's fields with it, so the job-file keys and the flag overrides of
`kaic.jobspec` are derived from the model instead of being listed again. A field marked
`WireOnly` (`kind`: `kaic alloc` sets it) is neither a job-file key nor a flag.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel
from pydantic.fields import FieldInfo


@dataclass(frozen=True)
class JobKey:
    """Field metadata: `key` in a job file (default: the field's name), and `flag`, the
    `kaic submit` option that sets the field (None: a job file sets it, no flag does)."""

    key: str | None = None
    flag: str | None = None


@dataclass(frozen=True)
class WireOnly:
    """Field metadata: the field is part of the wire model only, set by a command of its own
    (`kind`: `kaic alloc`), never by a job file or a `kaic submit` flag."""


@dataclass(frozen=True)
class JobField:
    """One field as a job file and `kaic submit` see it: its `name` in the model, its `key`
    in the job file's mapping (`time_limit`) and its dotted `path` from the top of the file
    (`resources.gpus`), the `flag` that sets it (`--gpu-type`, `-- COMMAND`) if any,
    pydantic's `info` about it (annotation, default, constraints), and for a nested model
    (`resources`) its own `fields`."""

    name: str
    key: str
    path: str
    flag: str | None
    info: FieldInfo
    fields: tuple[JobField, ...] = ()

    @property
    def option(self) -> str | None:
        """The flag as a Python name (`--gpu-type` -> `gpu_type`, `-- COMMAND` -> `command`)."""
        if self.flag is None:
            return None
        return self.flag.strip("- ").lower().replace("-", "_")

    def constraint(self, name: str) -> Any:
        """A constraint of the field (`ge`, `le`, ...), None if it has none."""
        return next((getattr(m, name) for m in self.info.metadata if hasattr(m, name)), None)


def job_fields(model: type[BaseModel], prefix: str = "") -> tuple[JobField, ...]:
    """The fields of `model` in declaration order, each with its `JobKey` (nested models'
    fields under `fields`, their paths prefixed: `resources.gpus`); `WireOnly` fields are
    left out."""
    found = []
    for name, info in model.model_fields.items():
        if any(isinstance(m, WireOnly) for m in info.metadata):
            continue
        meta = next((m for m in info.metadata if isinstance(m, JobKey)), JobKey())
        key = meta.key or name
        path = f"{prefix}{key}"
        nested = info.annotation
        inner = (
            job_fields(nested, f"{path}.")
            if isinstance(nested, type) and issubclass(nested, BaseModel)
            else ()
        )
        found.append(JobField(name, key, path, meta.flag, info, inner))
    return tuple(found)
