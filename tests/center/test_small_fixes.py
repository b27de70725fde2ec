"""Two small ones a review found: the storage rule's descriptor check fails closed, and an
explicit SFTP port of a local center is kept."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from kaic.center.settings import CenterSettings
from kaic.center.storage import Outside, StorageRoot


def test_an_unconfirmable_descriptor_is_refused(tmp_path: Path) -> None:
    """`check_fd` passed a descriptor /proc said nothing about (it only may where there is
    no /proc at all)."""
    if not os.path.isdir("/proc/self/fd"):
        pytest.skip("no /proc here: the check cannot be made (by design)")
    root = StorageRoot(tmp_path)
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    root.check_fd(fd)  # inside: confirmed
    os.close(fd)
    with pytest.raises(Outside, match="could not be confirmed inside your storage"):
        root.check_fd(fd)  # closed: /proc has no entry for it


def test_a_local_centers_explicit_sftp_port_is_kept(tmp_path: Path) -> None:
    """The local center's default (port 0) hung off the wrong `if` and overrode a given port."""
    assert CenterSettings(state_dir=tmp_path, local_user="me", sftp_port=2222).sftp_port == 2222
    assert CenterSettings(state_dir=tmp_path, local_user="me").sftp_port == 0
    assert CenterSettings(state_dir=tmp_path).sftp_port is None
    external = CenterSettings(state_dir=tmp_path, local_user="me", staging_host="127.0.0.1")
    assert external.sftp_port is None
