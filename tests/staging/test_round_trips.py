"""What a sync waits for, against a real sshd: round trips counted by the latency proxy
(`LatencyProxy.turns`) or, where the proxy's count moves with timing, by the client's own
waits for replies (`_Waits`), and the channels the workers find already open.

A round trip is 30 ms to a far host: a tree listed directory by directory, or a pipe opened
only once the plan is made, is time the user waits for nothing. These tests count, they do
not time (benchmarks/bench_wan.py measures the time).
"""

from __future__ import annotations

import filecmp
import socket
import threading
from pathlib import Path
from typing import Any

import paramiko
import pytest

from kaic.staging import engine
from kaic.staging.connect import SftpConnection, open_sftp
from kaic.staging.ignore import IGNORE_FILE
from kaic.staging.pipeline import SftpPipe
from kaic.staging.plan import LocalSide, plan_sync
from kaic.staging.remote_fs import RemoteSide
from kaic.staging.transfer import SyncOptions, pull, push
from kaic.staging.transport import ClientTransport
from tests.staging.conftest import SshEnv
from tests.staging.faults import LatencyProxy

Remote = tuple[str, Path]


@pytest.fixture(autouse=True)
def _no_probes(monkeypatch: pytest.MonkeyPatch) -> None:
    """The connections' round-trip probes (`ClientTransport.probe_round_trip`) left out:
    they go beside whatever else is sent, and count a turn or not by timing."""
    monkeypatch.setattr(ClientTransport, "probe_round_trip", lambda self, times=2: None)


#: directories of the test tree: 6 at the top, 10 below each
TOP, BELOW = 6, 10


def _deep_tree(root: Path) -> Path:
    for i in range(TOP):
        for j in range(BELOW):
            leaf = root / f"d{i}" / f"e{j}"
            leaf.mkdir(parents=True)
            (leaf / "f.txt").write_text(f"{i}/{j}\n")
    return root


def test_a_tree_of_new_directories_is_made_and_listed_in_a_few_round_trips(
    ssh_env: SshEnv, remote_dir: Remote, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """66 new directories: pushed, they were 66 MKDIRs one after another; pulled, 67
    listings one after another (an OPENDIR, READDIRs and a CLOSE each). Now the MKDIRs go
    in one round trip and a level of the tree is listed at once. (Round trips counted up
    to the files' transfer: the files stream in a sliding window, and the proxy counts a
    turn each time the client sends after a reply, overlapping or not.)"""
    name, view = remote_dir
    src = _deep_tree(tmp_path / "tree")
    options = SyncOptions(parallel=1, channels=1)
    back = tmp_path / "back"
    before_files: list[int] = []
    real_run_workers = engine.run_workers

    def counted(*args: Any, **kwargs: Any) -> None:
        before_files.append(sum(proxy.turns_now()))
        real_run_workers(*args, **kwargs)

    monkeypatch.setattr(engine, "run_workers", counted)
    with LatencyProxy(ssh_env.sshd.port, rtt_ms=20) as proxy:
        target = ssh_env.target(port=proxy.port)
        result = push(target, [str(src)], f"{name}/tree", options)
        assert result.files_transferred == TOP * BELOW
        pulled = pull(target, [f"{name}/tree"], str(back), options)
        assert pulled.files_transferred == TOP * BELOW
    for base in (view / "tree", back):
        assert not filecmp.dircmp(src, base).diff_files
        assert sorted(p.relative_to(base) for p in base.rglob("*")) == sorted(
            p.relative_to(src) for p in src.rglob("*")
        )
    directories = TOP + TOP * BELOW
    # (a login and the channels take ~8 of them; measured 14 and 16 in all)
    push_before_files, pull_before_files = before_files
    assert push_before_files < directories // 3, before_files
    assert pull_before_files < directories // 3, before_files
    assert proxy.turns[1] < directories // 2, proxy.turns  # the whole pull


def test_listing_many_directories_keeps_each_ones_entries_and_errors(
    ssh_env: SshEnv, remote_dir: Remote
) -> None:
    name, view = remote_dir
    for i in range(3):
        (view / f"d{i}").mkdir(parents=True)
        for j in range(150 * i):  # 0, 150 and 300 entries: several READDIRs each
            (view / f"d{i}" / f"{j:04d}").write_bytes(b"")
    (view / "file").write_bytes(b"x")
    ssh_env.own(view)
    conn = open_sftp(ssh_env.target())
    try:
        sftp = conn.sftp
        paths = [f"{name}/d0", f"{name}/missing", f"{name}/d1", f"{name}/file", f"{name}/d2"]
        listings = sftp.listdir_many(paths)  # type: ignore[attr-defined]
        assert [len(x) if isinstance(x, list) else type(x) for x in listings] == [
            0,
            FileNotFoundError,
            150,
            FileNotFoundError,  # (a file: OpenSSH says "no such file" for ENOTDIR)
            300,
        ]
        assert sorted(a.filename for a in listings[4]) == [f"{j:04d}" for j in range(300)]
        made = sftp.mkdir_many([f"{name}/n1", f"{name}/n1/n2", f"{name}/d0", f"{name}/x/y"])  # type: ignore[attr-defined]
        assert [type(e) if e is not None else None for e in made] == [
            None,
            None,
            OSError,  # exists
            FileNotFoundError,  # no parent
        ]
        assert (view / "n1" / "n2").is_dir()
    finally:
        conn.close()


def test_workers_take_pipes_opened_ahead_and_a_push_hashes_on_a_channel_opened_ahead(
    ssh_env: SshEnv, remote_dir: Remote, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The workers' pipes are opened while the sync is planned (each connection's right
    after its login), not by the workers once it is; a batch's hashing exec finds its
    channel open."""
    name, view = remote_dir
    src = tmp_path / "src"
    src.mkdir()
    for i in range(30):
        (src / f"f{i}").write_bytes(bytes([i]) * 1000)
    opened_by: list[str] = []
    real_init = SftpPipe.__init__

    def counted(self: SftpPipe, *args: object, **kwargs: object) -> None:
        opened_by.append(threading.current_thread().name)
        real_init(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(SftpPipe, "__init__", counted)
    channels: list[bool] = []
    real_exec = SftpConnection.exec

    def exec_spy(self: SftpConnection, command: str, **kwargs: object) -> tuple[int, bytes, bytes]:
        channels.append(kwargs.get("channel") is not None)
        return real_exec(self, command, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(SftpConnection, "exec", exec_spy)
    options = SyncOptions(parallel=2, channels=2)
    result = push(ssh_env.target(), [str(src)], f"{name}/src", options)
    assert result.verified and result.files_transferred == 30
    assert not filecmp.dircmp(src, view / "src").diff_files
    assert len(opened_by) == 4, opened_by  # 2 per connection
    assert set(opened_by) == {"kaic-open-ahead"}, opened_by
    assert channels and all(channels), channels


def test_the_connection_does_not_hold_small_packets_back(ssh_env: SshEnv) -> None:
    """Nagle's algorithm off (TCP_NODELAY): a request sent while another is unanswered
    goes at once, instead of waiting for an ACK the host's kernel may delay by 40 ms."""
    conn = open_sftp(ssh_env.target())
    try:
        sock = conn.transport.sock
        assert isinstance(sock, socket.socket)
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
    finally:
        conn.close()


class _Waits:
    """Round trips an SFTP client waited through, counted in the code, not by the proxy's
    clock: a read of a reply after requests were sent is one wait, however many requests
    went before it and however many replies it takes. (The proxy's count also sees
    replies to requests nobody waits for, a CLOSE say, land before or after the next
    request: on a busy machine that moved it by one or two.)"""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.count = 0
        self._sent = False
        send = paramiko.SFTPClient._send_packet  # type: ignore[attr-defined]
        read = paramiko.SFTPClient._read_response  # type: ignore[attr-defined]

        def sending(client: paramiko.SFTPClient, *args: Any, **kwargs: Any) -> Any:
            self._sent = True
            return send(client, *args, **kwargs)

        def reading(client: paramiko.SFTPClient, *args: Any, **kwargs: Any) -> Any:
            if self._sent:
                self.count += 1
                self._sent = False
            return read(client, *args, **kwargs)

        monkeypatch.setattr(paramiko.SFTPClient, "_send_packet", sending)
        monkeypatch.setattr(paramiko.SFTPClient, "_read_response", reading)


def test_planning_glances_at_a_remote_directory_in_one_round_trip(
    ssh_env: SshEnv, remote_dir: Remote, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Planning a pull asked three questions in a row of its source: is it a directory,
    has it a .kaicignore, what is in it. One round trip now asks all three (and the
    directory handle it opened is the one listed); the .kaicignore still applies."""
    name, view = remote_dir
    (view / "sub").mkdir(parents=True)
    for f in ("a.txt", "b.log", "sub/c.txt"):
        (view / f).write_text(f)
    ssh_env.own(view)
    waits: dict[tuple[bool, bool], int] = {}
    for look_ahead in (False, True):
        for ignore in (False, True):
            if ignore:
                (view / ".kaicignore").write_text("*.log\n")
            conn = open_sftp(ssh_env.target())
            try:
                remote = RemoteSide(conn)
                remote.look_ahead = look_ahead
                remote.look_for = IGNORE_FILE
                with monkeypatch.context() as patched:
                    counter = _Waits(patched)
                    plan = plan_sync(remote, [name], LocalSide(), str(tmp_path / "dst"))
                waits[look_ahead, ignore] = counter.count
                remote.forget_glances()
            finally:
                conn.close()
            sent = sorted(t.src.removeprefix(f"{name}/") for t in plan.transfers)
            if ignore:
                assert sent == [".kaicignore", "a.txt", "sub/c.txt"]
                (view / ".kaicignore").unlink()
            else:
                assert sent == ["a.txt", "b.log", "sub/c.txt"]
    # The three questions were three waits; glancing asks them in one. (A .kaicignore that
    # is there is still read after: the glance only learns that it can be opened.)
    assert waits[True, False] <= waits[False, False] - 2, waits
    assert waits[True, True] <= waits[False, True] - 1, waits
