"""The pipelined path for small files (kaic/staging/pipeline.py), against a real sshd."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from kaic.staging import download, pipeline, upload, workers
from kaic.staging.connect import REQUEST_SIZE, SftpConnection, open_sftp
from kaic.staging.pipeline import SftpPipe
from kaic.staging.small_files import Download, Upload, download_many, upload_many
from kaic.staging.transfer import SyncOptions, pull, push
from tests.staging.conftest import SshEnv

Remote = tuple[str, Path]


@pytest.fixture
def conn(ssh_env: SshEnv) -> Iterator[SftpConnection]:
    c = open_sftp(ssh_env.target())
    try:
        yield c
    finally:
        c.close()


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """Counts the pipelined batches the engine sends (to prove the fast path ran)."""
    counts = {"upload": 0, "download": 0}

    def counting_upload(*args, **kwargs):  # type: ignore[no-untyped-def]
        counts["upload"] += 1
        return upload_many(*args, **kwargs)

    def counting_download(*args, **kwargs):  # type: ignore[no-untyped-def]
        counts["download"] += 1
        return download_many(*args, **kwargs)

    monkeypatch.setattr(upload, "upload_many", counting_upload)
    monkeypatch.setattr(download, "download_many", counting_download)
    return counts


def _small_tree(root: Path) -> dict[str, bytes]:
    files = {
        "empty": b"",
        "one": b"x",
        "ünïcödé ✓.txt": "grüße".encode(),
        'sp ace\'s "q".bin': os.urandom(3000),
        "sub/deep/n.bin": os.urandom(70_000),
        "exact.bin": os.urandom(REQUEST_SIZE),
        "two-writes.bin": os.urandom(REQUEST_SIZE + 1),
    }
    files.update({f"many/f{i:03d}": os.urandom(i * 37) for i in range(150)})
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    os.chmod(root / "one", 0o640)
    os.chmod(root / "sub/deep/n.bin", 0o755)
    os.utime(root / "one", (1_500_000_000, 1_500_000_000))
    return files


@pytest.mark.parametrize("verify", [True, False])
def test_small_files_round_trip(
    ssh_env: SshEnv, remote_dir: Remote, tmp_path: Path, calls: dict[str, int], verify: bool
) -> None:
    src = tmp_path / "src"
    files = _small_tree(src)
    name, view = remote_dir
    options = SyncOptions(verify=verify)
    first = push(ssh_env.target(), [str(src)], name, options)
    assert not first.failures and first.files_transferred == len(files)
    assert calls["upload"] >= 1
    for rel, data in files.items():
        assert (view / rel).read_bytes() == data, rel
        assert int((view / rel).stat().st_mtime) == int((src / rel).stat().st_mtime), rel
    assert (view / "one").stat().st_mode & 0o777 == 0o640
    assert (view / "sub/deep/n.bin").stat().st_mode & 0o777 == 0o755
    assert not list(view.rglob("*.kaic-part"))

    # mtimes were set on the part files: nothing to send the second time
    again = push(ssh_env.target(), [str(src)], name, options)
    assert again.files_transferred == 0 and again.files_skipped == len(files)

    back = tmp_path / "back"
    got = pull(ssh_env.target(), [name], str(back), options)
    assert not got.failures and got.files_transferred == len(files)
    assert calls["download"] >= 1
    for rel, data in files.items():
        assert (back / rel).read_bytes() == data, rel
        assert int((back / rel).stat().st_mtime) == int((src / rel).stat().st_mtime), rel
    assert (back / "one").stat().st_mode & 0o777 == 0o640
    assert not list(back.rglob("*.kaic-part"))
    assert pull(ssh_env.target(), [name], str(back), options).files_transferred == 0


def test_push_one_failure_in_a_batch_leaves_the_others(
    ssh_env: SshEnv, remote_dir: Remote, tmp_path: Path, calls: dict[str, int]
) -> None:
    src = tmp_path / "src"
    for i in range(20):
        (src / "ok").mkdir(parents=True, exist_ok=True)
        (src / "ok" / f"f{i}").write_bytes(os.urandom(100 + i))
    (src / "ro").mkdir()
    (src / "ro" / "blocked").write_bytes(b"nope")
    name, view = remote_dir
    (view / "ro").mkdir(parents=True)
    ssh_env.own(view)
    os.chmod(view / "ro", 0o555)  # the test user cannot create files there
    try:
        result = push(ssh_env.target(), [str(src)], name)
    finally:
        os.chmod(view / "ro", 0o755)
    assert list(result.failures) == [f"{name}/ro/blocked"]
    assert "ermission" in result.failures[f"{name}/ro/blocked"]
    assert result.files_transferred == 20 and calls["upload"] >= 1
    for i in range(20):
        assert (view / "ok" / f"f{i}").read_bytes() == (src / "ok" / f"f{i}").read_bytes()
    assert not (view / "ro" / "blocked").exists()
    assert not list(view.rglob("*.kaic-part"))


def test_pull_one_failure_in_a_batch_leaves_the_others(
    ssh_env: SshEnv, remote_dir: Remote, tmp_path: Path, calls: dict[str, int]
) -> None:
    name, view = remote_dir
    view.mkdir()
    for i in range(10):
        (view / f"f{i}").write_bytes(os.urandom(500 * i))
    (view / "secret").write_bytes(b"x")
    ssh_env.own(view)
    os.chmod(view / "secret", 0)  # unreadable for the test user
    out = tmp_path / "out"
    result = pull(ssh_env.target(), [name], str(out))
    assert list(result.failures) == [str(out / "secret")]
    assert result.files_transferred == 10 and calls["download"] >= 1
    for i in range(10):
        assert (out / f"f{i}").read_bytes() == (view / f"f{i}").read_bytes()
    assert not (out / "secret").exists() and not list(out.glob("*.kaic-part"))


def test_without_exec_the_pipelined_path_reads_back(
    ssh_env: SshEnv,
    remote_dir: Remote,
    tmp_path: Path,
    calls: dict[str, int],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(SftpConnection, "exec", lambda self, command, **_kw: (-1, b"", b""))
    src = tmp_path / "src"
    src.mkdir()
    for i in range(5):
        (src / f"f{i}").write_bytes(os.urandom(1000 * i))
    name, _view = remote_dir
    result = push(ssh_env.target(), [str(src)], name)
    assert result.files_transferred == 5 and not result.failures and result.verified
    back = tmp_path / "back"
    got = pull(ssh_env.target(), [name], str(back))
    assert got.files_transferred == 5 and not got.failures
    for i in range(5):
        assert (back / f"f{i}").read_bytes() == (src / f"f{i}").read_bytes()
    assert calls["upload"] >= 1 and calls["download"] >= 1


def test_pipeline_can_be_turned_off(
    ssh_env: SshEnv, remote_dir: Remote, tmp_path: Path, calls: dict[str, int]
) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "a").write_bytes(b"a")
    name, view = remote_dir
    result = push(ssh_env.target(), [str(src)], name, SyncOptions(pipeline=False))
    assert result.files_transferred == 1 and calls["upload"] == 0
    assert (view / "a").read_bytes() == b"a"


# -- SftpPipe itself -----------------------------------------------------------------------


def test_pipe_upload_batch_with_a_bad_path_in_the_middle(
    conn: SftpConnection, remote_dir: Remote, tmp_path: Path, ssh_env: SshEnv
) -> None:
    name, view = remote_dir
    view.mkdir()
    (view / "plainfile").write_bytes(b"")
    ssh_env.own(view)
    sources = []
    for i in range(3):
        sources.append(tmp_path / f"s{i}")
        sources[-1].write_bytes(os.urandom(5000 + i))
    ups = [
        Upload(str(sources[0]), f"{name}/.a.part", 0o600, 1_000_000_000),
        Upload(str(sources[1]), f"{name}/plainfile/.b.part", 0o644, 1_000_000_000),
        Upload(str(tmp_path / "missing-local"), f"{name}/.c.part", 0o644, 1),
        Upload(str(sources[2]), f"{name}/.d.part", 0o644, 1_000_000_001),
    ]
    sent: list[int] = []
    pipe = SftpPipe(conn.transport)
    try:
        upload_many(pipe, ups, 1024, sent.append)  # several WRITEs per file
        assert ups[0].digest == hashlib.sha256(sources[0].read_bytes()).hexdigest()
        assert ups[3].digest == hashlib.sha256(sources[2].read_bytes()).hexdigest()
        assert ups[1].digest is None and isinstance(ups[1].error, OSError)
        assert ups[2].digest is None and isinstance(ups[2].error, FileNotFoundError)
        assert sum(sent) == 5000 + 5002
        st = (view / ".d.part").stat()
        assert int(st.st_mtime) == 1_000_000_001 and st.st_mode & 0o777 == 0o644
        errors = pipe.rename_many(
            [(f"{name}/.a.part", f"{name}/a"), (f"{name}/.nothing", f"{name}/b")]
        )
        assert errors[0] is None and isinstance(errors[1], FileNotFoundError)
        assert (view / "a").read_bytes() == sources[0].read_bytes()
        pipe.remove_many([f"{name}/.c.part", f"{name}/.d.part", f"{name}/.gone"])
        assert not (view / ".c.part").exists() and not (view / ".d.part").exists()
    finally:
        pipe.close()


def test_pipe_download_notices_size_changes(
    conn: SftpConnection, remote_dir: Remote, ssh_env: SshEnv
) -> None:
    name, view = remote_dir
    view.mkdir()
    data = os.urandom(10_000)
    (view / "f").write_bytes(data)
    (view / "empty").write_bytes(b"")
    two = os.urandom(8192)  # two whole requests of 4096: the last READ asks 4097
    (view / "two").write_bytes(two)
    ssh_env.own(view)
    downs = [
        Download(f"{name}/f", 10_000),
        Download(f"{name}/f", 9_999),  # grew since planning
        Download(f"{name}/f", 10_001),  # shrank
        Download(f"{name}/empty", 0),
        Download(f"{name}/absent", 5),
        Download(f"{name}/two", 8192),
        Download(f"{name}/two", 4096),  # grew by a whole request
        Download(f"{name}/two", 8191),  # grew by one byte
        Download(f"{name}/f", 0),  # was empty
    ]
    got: list[int] = []
    pipe = SftpPipe(conn.transport)
    try:
        download_many(pipe, downs, 4096, got.append)
    finally:
        pipe.close()
    assert downs[0].data == data and not downs[0].retry
    assert downs[1].retry and downs[1].data is None
    assert downs[2].retry and downs[2].data is None
    assert downs[3].data == b"" and not downs[3].retry
    assert isinstance(downs[4].error, FileNotFoundError) and downs[4].data is None
    assert downs[5].data == two and not downs[5].retry
    assert all(d.retry and d.data is None for d in downs[6:]), downs[6:]
    assert sum(got) == 10_000 + 8192


def _counting_sends(pipe: SftpPipe) -> tuple[dict[str, int], list[int]]:
    """Counts what `pipe` sends: OPENs, CLOSEs, requests and channel writes; and after each
    request, how many files are held open (OPENs sent less CLOSEs sent)."""
    sent = {"open": 0, "close": 0, "requests": 0, "writes": 0}
    held: list[int] = []
    real_send = pipe._send

    def counting(data: bytes | bytearray) -> None:
        pos = 0
        while pos + 5 <= len(data):
            n, kind = int.from_bytes(data[pos : pos + 4], "big"), data[pos + 4]
            sent["open"] += kind == pipeline.FXP_OPEN
            sent["close"] += kind == pipeline.FXP_CLOSE
            sent["requests"] += 1
            held.append(sent["open"] - sent["close"])
            pos += 4 + n
        sent["writes"] += 1
        real_send(data)

    pipe._send = counting  # type: ignore[method-assign]
    return sent, held


def test_pipe_download_slides_a_window_of_open_files(
    conn: SftpConnection, remote_dir: Remote, ssh_env: SshEnv
) -> None:
    """30 files through a window of 4: never more than 4 open (OPENs sent less CLOSEs
    sent), every file right, and each handed over as it completes — the first long before
    the last is opened (a batch cut in chunks of the window wrote none until its chunk was
    in). Requests go out gathered: fewer channel writes than requests."""
    name, view = remote_dir
    view.mkdir()
    files = {f"f{i:02d}": os.urandom(i * 997) for i in range(30)}
    for rel, data in files.items():
        (view / rel).write_bytes(data)
    ssh_env.own(view)
    pipe = SftpPipe(conn.transport)
    sent, held = _counting_sends(pipe)
    downs = [Download(f"{name}/{rel}", len(data)) for rel, data in files.items()]
    done: list[tuple[str, int]] = []
    try:
        download_many(
            pipe,
            downs,
            4096,
            lambda _n: None,
            window=lambda: (4, 7),
            on_done=lambda d: done.append((d.src, sent["open"])),
        )
    finally:
        pipe.close()
    assert max(held) <= 4, held
    assert [d.data for d in downs] == list(files.values())
    assert all(d.generation == 7 and not d.retry for d in downs)
    assert sorted(src for src, _ in done) == sorted(d.src for d in downs)
    assert done[0][1] < 30, done  # the first file was done before the last was opened
    assert sent["writes"] < sent["requests"] / 2, sent


def test_pipe_upload_slides_a_window_of_open_files(
    conn: SftpConnection, remote_dir: Remote, ssh_env: SshEnv, tmp_path: Path
) -> None:
    """The same for a push: 30 files (some of several WRITEs) through a window of 4, mode
    and mtime set on each, a file that cannot be read failing alone."""
    name, view = remote_dir
    view.mkdir()
    ssh_env.own(view)
    files = {f"f{i:02d}": os.urandom(i * 997) for i in range(30)}
    for rel, data in files.items():
        (tmp_path / rel).write_bytes(data)
    ups = [Upload(str(tmp_path / rel), f"{name}/{rel}", 0o640, 1_600_000_000) for rel in files]
    ups.append(Upload(str(tmp_path / "missing"), f"{name}/missing", 0o644, 1_600_000_000))
    pipe = SftpPipe(conn.transport)
    sent, held = _counting_sends(pipe)
    done: list[tuple[str, int]] = []
    try:
        upload_many(
            pipe,
            ups,
            4096,
            lambda _n: None,
            window=lambda: (4, 2),
            on_done=lambda u: done.append((u.part, sent["open"])),
        )
    finally:
        pipe.close()
    assert max(held) <= 4, held
    for up, (rel, data) in zip(ups, files.items(), strict=False):
        assert up.error is None and up.stat_set and up.generation == 2, up
        assert up.digest == hashlib.sha256(data).hexdigest()
        assert (view / rel).read_bytes() == data
        assert (view / rel).stat().st_mode & 0o777 == 0o640
        assert int((view / rel).stat().st_mtime) == 1_600_000_000
    assert isinstance(ups[-1].error, FileNotFoundError) and ups[-1].digest is None
    assert len(done) == len(ups) and done[0][1] < len(ups), done
    assert sent["writes"] < sent["requests"] / 2, sent


def test_pipe_raises_pipe_closed_when_the_connection_goes(conn: SftpConnection) -> None:
    pipe = SftpPipe(conn.transport)
    conn.transport.close()
    with pytest.raises(pipeline.PipeClosed):
        pipe.open_many(["x"], pipeline.FXF_READ)
    assert isinstance(pipeline.PipeClosed(), EOFError)


def test_fast_exec_commands_keep_the_connection(conn: SftpConnection) -> None:
    """paramiko could send EOF after answering the server's CLOSE of a finished command;
    sshd then drops the whole connection ("ieof packet referred to nonexistent channel")."""
    import threading

    failures: list[object] = []

    def run() -> None:
        for _ in range(60):
            status, _out, _err = conn.exec("true")
            if status != 0:
                failures.append(status)

    threads = [threading.Thread(target=run) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert conn.is_active() and not failures


def test_servers_without_fsetstat_or_posix_rename(
    ssh_env: SshEnv,
    remote_dir: Remote,
    tmp_path: Path,
    calls: dict[str, int],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """OpenSSH answers unknown requests with OP_UNSUPPORTED, as a server without FSETSTAT
    or posix-rename would: mode/mtime are then set by path and files renamed one by one."""
    # FSETSTAT sent as an EXTENDED request named after the handle: OP_UNSUPPORTED
    monkeypatch.setattr(pipeline, "FXP_FSETSTAT", pipeline.FXP_EXTENDED)
    monkeypatch.setattr(pipeline, "POSIX_RENAME", "no-such-extension@kaic")
    src = tmp_path / "src"
    src.mkdir()
    for i in range(5):
        (src / f"f{i}").write_bytes(os.urandom(100 * i))
        os.utime(src / f"f{i}", (1_600_000_000 + i, 1_600_000_000 + i))
    name, view = remote_dir
    result = push(ssh_env.target(), [str(src)], name)
    assert result.files_transferred == 5 and not result.failures and calls["upload"] >= 1
    for i in range(5):
        assert (view / f"f{i}").read_bytes() == (src / f"f{i}").read_bytes()
        assert int((view / f"f{i}").stat().st_mtime) == 1_600_000_000 + i
    assert push(ssh_env.target(), [str(src)], name).files_transferred == 0


def test_a_server_that_stops_answering_counts_as_a_lost_connection(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A server that stays connected but never replies must not hang kaic: the pipe gives
    up after its reply timeout with PipeClosed (an EOFError), which makes the sync reconnect
    and resume (see workers.connection_error)."""
    import threading
    import time

    from kaic.center.sftp.fs import ConfinedSFTP
    from tests.center.test_sftp_server import Endpoint

    release = threading.Event()

    def stuck_open(self, path, flags, attr):  # type: ignore[no-untyped-def]
        release.wait(10)
        return 3  # SFTP_PERMISSION_DENIED, too late

    endpoint = Endpoint(tmp_path)
    try:
        conn = endpoint.connect()
        try:
            monkeypatch.setattr(ConfinedSFTP, "open", stuck_open)
            pipe = SftpPipe(conn.transport, reply_timeout=0.5)
            started = time.monotonic()
            with pytest.raises(pipeline.PipeClosed, match="no reply from the SFTP server"):
                pipe.open_many(["a.txt"], 0x02 | 0x08)  # SSH_FXF_WRITE | SSH_FXF_CREAT
            assert time.monotonic() - started < 5
            assert workers.connection_error(pipeline.PipeClosed("x"), [conn])
            pipe.close()
        finally:
            release.set()
            conn.close()
    finally:
        endpoint.close()
