"""Remote listings with their READDIRs pipelined (`SftpClient.listdir_attr`): complete,
byte-exact names, the answers that come after the end of a listing dropped, and the client
still in step afterwards — against a real sshd."""

from __future__ import annotations

import os
from pathlib import Path

from kaic.staging.connect import open_sftp
from kaic.staging.sftp_client import READDIR_AHEAD
from tests.staging.conftest import SshEnv


def test_a_large_directory_is_listed_whole_and_the_client_stays_in_step(
    ssh_env: SshEnv, remote_dir: tuple[str, Path]
) -> None:
    name, view = remote_dir
    view.mkdir()
    # more names than READDIR_AHEAD answers hold (~100 each): the pipeline refills
    count = READDIR_AHEAD * 100 + 250
    expected = {f"f{i:05d}" for i in range(count)} | {"caf\udce9.txt"}
    for entry in expected:
        (view / entry).write_bytes(b"x")
    (view / "sub").mkdir()
    ssh_env.own(view)
    conn = open_sftp(ssh_env.target())
    try:
        sftp = conn.sftp
        for _ in range(3):  # again and again: late answers of the last listing are dropped
            entries = sftp.listdir_attr(name)
            names = [e.filename for e in entries]
            assert len(names) == len(set(names)) == count + 2
            assert set(names) == expected | {"sub"}
            assert sftp.listdir_attr(f"{name}/sub") == []
            assert sftp.stat(f"{name}/f00000").st_size == 1
        assert sorted(os.fsencode(n) for n in names)[0] == b"caf\xe9.txt"
    finally:
        conn.close()
