"""File names that are not UTF-8 (legal on Linux, where a name is bytes) are staged byte for
byte, against a real OpenSSH sshd: push, pull, resume, `--delete`, listing, both hash paths.

Python keeps such a name as a str with surrogateescape code points (`os.fsdecode`); kaic
turns it back into the same bytes at every boundary (local `os` calls, the SFTP wire, the
commands it runs on the host).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from kaic.staging.connect import SftpConnection, open_sftp
from kaic.staging.names import is_text, json_name, name_bytes, name_text
from kaic.staging.plan import part_name
from kaic.staging.remote_tree import list_remote
from kaic.staging.transfer import SyncOptions, pull, push
from kaic.text import visible
from tests.helpers import run_cli
from tests.staging.conftest import SshEnv

Remote = tuple[str, Path]

#: Latin-1 `café.txt`, a directory of two bytes that are never UTF-8, a big file's name with
#: a lone continuation byte (big files travel one by one, small ones over the pipe)
CAFE = os.fsdecode(b"caf\xe9.txt")
ODD_DIR = os.fsdecode(b"d\xff\xfe")
BIG = os.fsdecode(b"big\x80.bin")


def test_a_name_keeps_its_bytes_and_json_shows_them_as_visible_does() -> None:
    raw = b"caf\xe9 \xff.txt"
    name = name_text(raw)
    assert name == os.fsdecode(raw) and name_bytes(name) == raw == os.fsencode(name)
    assert not is_text(name) and is_text("café ✓")
    assert json_name(name) == "caf\\xe9 \\xff.txt" == visible(name)
    assert json_name("a\nb ✓") == "a\nb ✓"  # JSON escapes control characters itself


def _names(directory: Path) -> set[bytes]:
    return set(os.listdir(os.fsencode(directory)))


def _tree(root: Path) -> dict[str, bytes]:
    files = {
        CAFE: b"latin-1 name",
        os.fsdecode(b"d\xff\xfe/inner\xe9.bin"): os.urandom(3000),
        "plain.txt": b"plain",
        BIG: os.urandom(5 << 20),
    }
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    return files


@pytest.mark.parametrize("verify", [True, False])
def test_push_pull_and_delete_keep_the_bytes(
    ssh_env: SshEnv, remote_dir: Remote, tmp_path: Path, verify: bool
) -> None:
    name, view = remote_dir
    options = SyncOptions(verify=verify)
    src = tmp_path / "src"
    files = _tree(src)
    first = push(ssh_env.target(), [str(src)], name, options)
    assert _names(view) == {b"caf\xe9.txt", b"d\xff\xfe", b"plain.txt", b"big\x80.bin"}
    assert first.files_transferred == len(files) and not first.failures
    assert _names(view / ODD_DIR) == {b"inner\xe9.bin"}
    for rel, data in files.items():
        assert (view / rel).read_bytes() == data, ascii(rel)

    again = push(ssh_env.target(), [str(src)], name, options)  # the host's listing reads back
    assert again.files_transferred == 0 and again.files_skipped == len(files)

    back = tmp_path / "back"
    got = pull(ssh_env.target(), [name], str(back), options)
    assert not got.failures and got.files_transferred == len(files)
    for rel, data in files.items():
        assert (back / rel).read_bytes() == data, ascii(rel)

    # --delete, both ways: a non-UTF-8 name removed at the source goes at the destination
    (src / CAFE).unlink()
    gone = push(ssh_env.target(), [str(src)], name, SyncOptions(verify=verify, delete=True))
    assert gone.files_deleted == 1 and b"caf\xe9.txt" not in _names(view)
    (back / os.fsdecode(b"extra\xe9")).write_bytes(b"only here")
    pruned = pull(ssh_env.target(), [name], str(back), SyncOptions(verify=verify, delete=True))
    assert pruned.files_deleted == 2 and _names(back) == {
        b"d\xff\xfe",
        b"plain.txt",
        b"big\x80.bin",
    }


def test_resume_a_non_utf8_name_both_ways(
    ssh_env: SshEnv, remote_dir: Remote, tmp_path: Path
) -> None:
    src = tmp_path / "src"
    src.mkdir()
    data = os.urandom(6 << 20)
    (src / BIG).write_bytes(data)
    name, view = remote_dir
    view.mkdir()
    Path(part_name(str(view / BIG))).write_bytes(data[: 2 << 20])
    ssh_env.own(view)
    resumed = push(ssh_env.target(), [str(src)], name)
    assert not resumed.failures and resumed.bytes_transferred == len(data) - (2 << 20)
    assert (view / BIG).read_bytes() == data
    assert _names(view) == {b"big\x80.bin"}

    back = tmp_path / "back"
    back.mkdir()
    Path(part_name(str(back / BIG))).write_bytes(data[: 3 << 20])
    again = pull(ssh_env.target(), [name], str(back))
    assert not again.failures and again.bytes_transferred == len(data) - (3 << 20)
    assert (back / BIG).read_bytes() == data and _names(back) == {b"big\x80.bin"}


def test_without_exec_the_center_is_asked_only_for_names_it_can_carry(
    ssh_env: SshEnv, remote_dir: Remote, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The center's checksum API takes JSON, which carries no undecodable bytes: those
    files are verified by reading them back instead."""
    monkeypatch.setattr(SftpConnection, "exec", lambda self, command, **_kw: (-1, b"", b""))
    src = tmp_path / "src"
    src.mkdir()
    (src / CAFE).write_bytes(os.urandom(2000))
    (src / "plain.bin").write_bytes(os.urandom(2000))
    name, view = remote_dir
    asked: list[str] = []

    def checksums_fn(paths: list[str]) -> dict[str, str | None]:
        asked.extend(paths)
        for path in paths:
            path.encode()  # what the API client does: it must never see an unencodable name
        return dict.fromkeys(paths)

    result = push(ssh_env.target(), [str(src)], name, checksums_fn=checksums_fn)
    assert not result.failures and result.files_transferred == 2 and result.verified
    assert asked == [part_name(f"{name}/plain.bin")]
    assert (view / CAFE).read_bytes() == (src / CAFE).read_bytes()


def test_listing_shows_the_name_and_json_escapes_its_bytes(
    ssh_env: SshEnv, remote_dir: Remote
) -> None:
    name, view = remote_dir
    view.mkdir()
    (view / CAFE).write_bytes(b"x")
    ssh_env.own(view)
    conn = open_sftp(ssh_env.target())
    try:
        entries = list_remote(conn.sftp, name)
        single = list_remote(conn.sftp, f"{name}/{CAFE}")
    finally:
        conn.close()
    assert [e.name for e in entries] == [CAFE] and single[0].name == CAFE
    doc = entries[0].to_json()
    assert doc["name"] == "caf\\xe9.txt" and doc["path"] == f"{name}/caf\\xe9.txt"
    json.dumps(doc, ensure_ascii=False).encode()  # valid Unicode: any JSON encoder takes it


def test_kaic_data_push_ls_pull_rm(ssh_vars: None, remote_dir: Remote, tmp_path: Path) -> None:
    """The same through the CLI: argv carries the bytes in, output shows them escaped."""
    name, view = remote_dir
    src = tmp_path / "src"
    src.mkdir()
    (src / CAFE).write_bytes(b"caf\xc3\xa9")
    pushed = json.loads(run_cli("data", "push", str(src), name, "--json").stdout)
    assert pushed["files_transferred"] == 1 and _names(view) == {b"caf\xe9.txt"}

    listing = json.loads(run_cli("data", "ls", name, "--json").stdout)
    assert [e["name"] for e in listing] == ["caf\\xe9.txt"]
    assert run_cli("data", "ls", name).stdout.split() == ["caf\\xe9.txt"]

    out = tmp_path / "out"
    run_cli("data", "pull", f"{name}/{CAFE}", str(out) + "/")
    assert _names(out) == {b"caf\xe9.txt"}
    run_cli("data", "rm", f"{name}/{CAFE}")
    assert _names(view) == set()
