"""Remote listings with their READDIRs pipelined (`SftpClient.listdir_attr`): complete,
byte-exact names, the answers that come after the end of a listing dropped, and the client
still in step afterwards — against a real sshd."""

from __future__ import annotations

import os
from pathlib import Path

from paramiko.sftp import CMD_NAME, CMD_READDIR, CMD_STATUS

from kaic.staging.connect import open_sftp
from kaic.staging.sftp_client import READDIR_AHEAD, READDIR_MAX
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


def test_a_large_directorys_readdirs_grow_to_a_wider_window(
    ssh_env: SshEnv, remote_dir: tuple[str, Path]
) -> None:
    """A directory of 7,000 names (~70 answers): READDIRs on their way start at
    `READDIR_AHEAD` and grow by one with each answer up to `READDIR_MAX` (four round trips,
    not nine), and no more than that are sent past its end."""
    name, view = remote_dir
    view.mkdir()
    count = 7000
    for i in range(count):
        (view / f"n{i:05d}").write_bytes(b"")
    ssh_env.own(view)
    conn = open_sftp(ssh_env.target())
    try:
        sftp = conn.sftp
        sent: list[int] = []
        answered: list[int] = []
        real_request, real_reply = sftp._async_request, sftp._reply
        on_way = [0]

        def request(fileobj: object, t: int, *args: object) -> int:
            if t == CMD_READDIR:
                on_way[0] += 1
                sent.append(on_way[0])
            return real_request(fileobj, t, *args)  # type: ignore[no-any-return]

        def reply(replies: object, num: int) -> tuple[int, object]:
            got = real_reply(replies, num)
            if got[0] in (CMD_NAME, CMD_STATUS):
                on_way[0] -= 1
                answered.append(num)
            return got  # type: ignore[no-any-return]

        sftp._async_request = request  # type: ignore[method-assign]
        sftp._reply = reply  # type: ignore[method-assign]
        [listing] = sftp.listdir_many([name])
        assert isinstance(listing, list) and len(listing) == count
        assert {e.filename for e in listing} == {f"n{i:05d}" for i in range(count)}
        assert max(sent) == READDIR_MAX  # the window grew to its cap...
        assert len(sent) <= len(answered) + READDIR_MAX  # ...and no further past the end
        sftp._async_request = real_request  # type: ignore[method-assign]
        sftp._reply = real_reply  # type: ignore[method-assign]
        assert sftp.stat(f"{name}/n00000").st_size == 0  # still in step
    finally:
        conn.close()
