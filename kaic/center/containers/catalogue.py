"""The operator's image catalogue (`kaic center serve --images PATH`).

PATH is a YAML file listing images, or a directory holding one YAML file per image
(`*.yaml` / `*.yml`; the file's stem is the default name). An entry:

```yaml
name: pytorch                 # what a job's `image:` names (`pytorch` or `pytorch:24.10`)
tag: "24.10"
description: PyTorch 2.5, CUDA 12.6, NCCL 2.23
rootfs: /srv/images/pytorch-24.10       # one of: an unpacked root filesystem,
# sif: /srv/images/pytorch-24.10.sif    # an Apptainer SIF file,
# squashfs: /srv/images/pytorch.sqsh    # a squashfs file (enroot),
# uri: nvcr.io#nvidia/pytorch:24.10-py3 # a registry reference enroot pulls (pyxis)
```

The catalogue is read afresh on every use (a few small files), so an operator's edit takes
effect without a restart; sizes of root filesystems are walked once per directory and
modification time and remembered.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from pathlib import Path

import yaml

from kaic.models.images import ImageFormat, ImageInfo

#: an entry's keys that say where the image is, and the format each means
LOCATION_KEYS: dict[str, ImageFormat] = {
    "rootfs": "rootfs",
    "sif": "sif",
    "squashfs": "squashfs",
    "uri": "registry",
}
#: how a job's `image:` that names a path on the user's storage starts (`~/images/x`)
PATH_STARTS = ("~", "/", ".")
_KNOWN_KEYS = {"name", "tag", "description", "size_bytes", *LOCATION_KEYS}


class CatalogueError(ValueError):
    """The catalogue cannot be read; the message names the file and what is wrong."""


@dataclass(frozen=True)
class CatalogueEntry:
    """One image of the catalogue and where it is."""

    name: str
    format: ImageFormat
    #: a path on the nodes (rootfs, sif) or a registry reference (registry)
    location: str
    tag: str | None = None
    description: str | None = None
    size_bytes: int | None = None

    @property
    def reference(self) -> str:
        """`NAME:TAG`, or `NAME` for an untagged image."""
        return f"{self.name}:{self.tag}" if self.tag else self.name


def _entry(raw: object, source: Path, default_name: str | None) -> CatalogueEntry:
    if not isinstance(raw, dict):
        raise CatalogueError(f"{source}: an image entry must be a mapping")
    unknown = sorted(set(raw) - _KNOWN_KEYS)
    if unknown:
        raise CatalogueError(f"{source}: unknown key(s) {', '.join(map(str, unknown))}")
    locations = [key for key in LOCATION_KEYS if raw.get(key)]
    if len(locations) != 1:
        raise CatalogueError(f"{source}: an image needs exactly one of " + ", ".join(LOCATION_KEYS))
    key = locations[0]
    name = raw.get("name", default_name)
    if not isinstance(name, str) or not name or ":" in name or name[0] in PATH_STARTS:
        # A name may hold `/` (`nvidia/pytorch`); what starts like a path is a path image.
        raise CatalogueError(
            f"{source}: an image needs a name without ':' that does not start with "
            + " or ".join(repr(c) for c in PATH_STARTS)
        )
    location = str(raw[key])
    if key != "uri" and not os.path.isabs(location):
        raise CatalogueError(f"{source}: {key} must be an absolute path")
    tag = raw.get("tag")
    size = raw.get("size_bytes")
    return CatalogueEntry(
        name=name,
        format=LOCATION_KEYS[key],
        location=location,
        tag=str(tag) if tag is not None else None,
        description=str(raw["description"]) if raw.get("description") else None,
        size_bytes=int(size) if isinstance(size, int) else None,
    )


def _load_yaml(path: Path) -> object:
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise CatalogueError(f"{path}: {exc}") from None


def load_catalogue(path: Path | None) -> list[CatalogueEntry]:
    """The entries of the catalogue at `path` (none without one); CatalogueError when it
    cannot be read or an entry is malformed, or two entries share a reference."""
    if path is None:
        return []
    entries: list[CatalogueEntry] = []
    if path.is_dir():
        for item in sorted(path.iterdir()):
            if item.suffix in (".yaml", ".yml") and item.is_file():
                entries.append(_entry(_load_yaml(item), item, item.stem))
    else:
        raw = _load_yaml(path)
        if not isinstance(raw, list):
            raise CatalogueError(f"{path}: the catalogue file must be a list of images")
        entries.extend(_entry(item, path, None) for item in raw)
    seen: set[str] = set()
    for entry in entries:
        if entry.reference in seen:
            raise CatalogueError(f"{path}: image {entry.reference!r} is listed twice")
        seen.add(entry.reference)
    return entries


def find(entries: list[CatalogueEntry], ref: str) -> CatalogueEntry | None:
    """The entry a job's `image:` names: an exact `NAME:TAG`, else the only entry `NAME`."""
    exact = [e for e in entries if e.reference == ref]
    if exact:
        return exact[0]
    named = [e for e in entries if e.name == ref]
    return named[0] if len(named) == 1 else None


_sizes: dict[tuple[str, int], int] = {}
_sizes_lock = threading.Lock()


def tree_size(path: str) -> int | None:
    """Bytes under `path` (a file's size, or a directory walked without following links);
    None when it cannot be read. Directories are walked once per modification time."""
    try:
        stat = os.lstat(path)
    except OSError:
        return None
    if not os.path.isdir(path):
        return stat.st_size
    key = (path, stat.st_mtime_ns)
    with _sizes_lock:
        if key in _sizes:
            return _sizes[key]
    total = 0
    for root, dirs, files in os.walk(path):
        for name in [*files, *dirs]:
            try:
                total += os.lstat(os.path.join(root, name)).st_blocks * 512
            except OSError:
                continue
    with _sizes_lock:
        _sizes[key] = total
    return total


def image_info(entry: CatalogueEntry) -> ImageInfo:
    """What `GET /v1/images` shows of an entry (never where it is on the nodes)."""
    size = entry.size_bytes
    if size is None and entry.format != "registry":
        size = tree_size(entry.location)
    return ImageInfo(
        name=entry.name,
        tag=entry.tag,
        format=entry.format,
        size_bytes=size,
        description=entry.description,
    )
