"""The embedded SFTP endpoint of a `--run-as-user` center serves each user as their own unix
account: a worker process per connection, switched to the account, the center relaying.

A real center process (root) with real unix accounts, the OpenSSH `sftp` client and `kaic`
through the CLI. Needs root and the OpenSSH client: skipped otherwise, failed when
`CI=true`. The two accounts stay on the machine afterwards (as test_run_as_user.py's);
their storage roots are made for each test under /var/tmp and removed after it.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.test_embedded_sftp import (
    PASSWORD,
    Login,
    login,
    require_openssh_client,
    sftp,
    sftp_command,
)
from tests.helpers import RunningCenter, cli_env, poll, run_cli, start_center, unavailable
from tests.helpers import ensure_account as create_account

ALICE = "kaicsftpa"
BOB = "kaicsftpb"
#: connections one user may hold on the test center's endpoint
PER_USER = 3
WORKER_MODULE = b"kaic.center.sftp.worker"


def ensure_account(name: str) -> pwd.struct_passwd:
    """The unix account `name`, created (no home, no login shell) if missing."""
    create_account(name)
    return pwd.getpwnam(name)


@pytest.fixture
def homes() -> Iterator[Path]:
    """A directory of storage roots, one per account, each the account's own (0700)."""
    if os.geteuid() != 0:
        unavailable("serving SFTP as users needs root (to switch to their accounts)")
    base = Path(tempfile.mkdtemp(prefix="kaic-sftp-homes-", dir="/var/tmp"))
    try:
        base.chmod(0o755)
        for name in (ALICE, BOB):
            account = ensure_account(name)
            home = base / name
            home.mkdir(mode=0o700)
            os.chown(home, account.pw_uid, account.pw_gid)
        yield base
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def center(tmp_path: Path, homes: Path) -> Iterator[RunningCenter]:
    """`kaic center serve --run-as-user` with no staging flags: the embedded endpoint."""
    require_openssh_client()
    running = start_center(
        tmp_path / "center-state",
        "--run-as-user",
        "--storage-root",
        f"{homes}/{{unix_account}}",
        "--kill-grace",
        "1",
        "--sftp-max-connections-per-user",
        str(PER_USER),
    )
    try:
        running.add_user("alice", PASSWORD, unix_account=ALICE)
        running.add_user("bob", PASSWORD, unix_account=BOB)
        running.add_project("p1", 100, ["alice", "bob"])
        yield running
    finally:
        running.stop()


def workers_of(center_pid: int) -> list[int]:
    """The SFTP worker processes the center runs now (its children running the worker)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2 :].split()
        if fields[0] != "Z" and int(fields[1]) == center_pid and WORKER_MODULE in cmdline:
            pids.append(int(entry.name))
    return pids


def ids_of(pid: int) -> dict[str, list[int]]:
    """The Uid/Gid/Groups lines of /proc/PID/status."""
    ids: dict[str, list[int]] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("Uid", "Gid", "Groups"):
            ids[key] = [int(v) for v in value.split()]
    return ids


def hold_session(who: Login) -> subprocess.Popen[str]:
    """An OpenSSH `sftp` session that stays open until its stdin closes (or it is killed)."""
    return subprocess.Popen(
        sftp_command(who),
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        text=True,
    )


def _kaic_login(center: RunningCenter, user: str, config: Path) -> dict[str, str]:
    """Log `user` in with their own kaic config dir; returns the environment to use."""
    env = cli_env(KAIC_CONFIG_DIR=str(config / "config"), KAIC_STATE_DIR=str(config / "state"))
    run_cli(
        "login",
        "--center",
        center.url,
        "-u",
        user,
        "--password-stdin",
        input=PASSWORD + "\n",
        env=env,
    )
    return env


def test_pushed_files_belong_to_the_user_and_their_job_writes_into_them(
    center: RunningCenter, homes: Path, tmp_path: Path
) -> None:
    alice = pwd.getpwnam(ALICE)
    env = _kaic_login(center, "alice", tmp_path / "alice")
    src = tmp_path / "dataset"
    (src / "nested").mkdir(parents=True)
    (src / "a.txt").write_text("alpha\n")
    (src / "nested" / "b.bin").write_bytes(os.urandom(300_000))
    os.chmod(src / "a.txt", 0o640)
    pushed = run_cli("data", "push", str(src), "ds", "--json", env=env).json()
    assert pushed["files_transferred"] == 2 and pushed["verified"] is True  # type: ignore[index]

    root = homes / ALICE
    for path in (root / "ds", root / "ds" / "nested", root / "ds" / "a.txt"):
        st = path.stat()
        assert (st.st_uid, st.st_gid) == (alice.pw_uid, alice.pw_gid), path
    assert (root / "ds" / "nested" / "b.bin").stat().st_uid == alice.pw_uid
    assert (root / "ds" / "a.txt").stat().st_mode & 0o777 == 0o640  # the source's mode
    # a file the client creates without a mode gets the session's umask (022), as with sshd
    who = login(center, "alice", tmp_path)
    (tmp_path / "plain.txt").write_text("plain\n")
    os.chmod(tmp_path / "plain.txt", 0o666)
    assert sftp(who, "put plain.txt ds/plain.txt", cwd=tmp_path).returncode == 0
    assert (root / "ds" / "plain.txt").stat().st_mode & 0o777 == 0o644
    assert (root / "ds" / "plain.txt").stat().st_uid == alice.pw_uid

    # alice's job (running as her account) writes into the data she pushed
    job = tmp_path / "job.yaml"
    job.write_text(
        "run: |\n"
        "  echo from-job > ~/ds/nested/written-by-job.txt\n"
        "  echo appended >> ~/ds/a.txt\n"
        "  rm ~/ds/plain.txt\n"
    )
    done = run_cli("submit", str(job), "--wait", "--json", env=env)
    assert done.json()["state"] == "COMPLETED", done.explain()  # type: ignore[index]
    assert (root / "ds" / "nested" / "written-by-job.txt").stat().st_uid == alice.pw_uid
    assert (root / "ds" / "a.txt").read_text() == "alpha\nappended\n"
    assert not (root / "ds" / "plain.txt").exists()


def test_the_worker_runs_as_the_user_and_ends_with_the_session(
    center: RunningCenter, tmp_path: Path
) -> None:
    alice = pwd.getpwnam(ALICE)
    groups = sorted(os.getgrouplist(ALICE, alice.pw_gid))
    who = login(center, "alice", tmp_path)
    assert workers_of(center.pid) == []

    session = hold_session(who)
    try:
        [worker] = poll(lambda: workers_of(center.pid), what="a worker")
        # It starts as root (the center's child), imports its code, then switches for good
        # before it serves anything.
        poll(
            lambda: ids_of(worker)["Uid"] != [0] * 4,
            what="the worker to switch accounts",
            every=0.05,
        )
        ids = ids_of(worker)
        assert ids["Uid"] == [alice.pw_uid] * 4 and ids["Gid"] == [alice.pw_gid] * 4
        assert sorted(ids["Groups"]) == groups
        assert session.stdin is not None
        session.stdin.close()  # `sftp` quits: the session ends
        session.wait(30)
        poll(lambda: not Path(f"/proc/{worker}").exists(), what="the worker to exit")
    finally:
        session.kill()

    # a client killed with -9 takes its worker along too
    session = hold_session(who)
    try:
        [worker] = poll(lambda: workers_of(center.pid), what="a worker")
        session.send_signal(signal.SIGKILL)
        session.wait(30)
        poll(lambda: not Path(f"/proc/{worker}").exists(), what="the worker to exit")
    finally:
        session.kill()
    assert workers_of(center.pid) == []


def test_a_worker_does_not_outlive_a_killed_center(center: RunningCenter, tmp_path: Path) -> None:
    who = login(center, "alice", tmp_path)
    session = hold_session(who)
    try:
        [worker] = poll(lambda: workers_of(center.pid), what="a worker")
        os.kill(center.pid, signal.SIGKILL)
        center.proc.wait(30)
        poll(
            lambda: not Path(f"/proc/{worker}").exists(),
            what="the orphaned worker to die",
            every=0.05,
        )
    finally:
        session.kill()
        session.wait(30)


def test_alice_cannot_reach_bobs_files(center: RunningCenter, homes: Path, tmp_path: Path) -> None:
    bob = pwd.getpwnam(BOB)
    secret = homes / BOB / "secret.txt"
    secret.write_text("bob only\n")
    os.chown(secret, bob.pw_uid, bob.pw_gid)
    secret.chmod(0o600)
    alice_root = homes / ALICE
    # planted in her root (as a job of hers could): a link to bob's file, and to his root
    (alice_root / "peek").symlink_to(secret)
    (alice_root / "bobs").symlink_to(homes / BOB)
    who = login(center, "alice", tmp_path)
    for command in (
        "get peek stolen",
        "get bobs/secret.txt stolen",
        f"get {secret} stolen",
        "get ../kaicsftpb/secret.txt stolen",
        "chmod 644 peek",
    ):
        done = sftp(who, command, cwd=tmp_path)
        assert done.returncode != 0, (command, done.stdout)
    assert not (tmp_path / "stolen").exists()
    for command in ("ls bobs/", "ls -l bobs/*", f"ls {homes / BOB}"):
        assert "secret.txt" not in sftp(who, command).stdout, command
    assert secret.read_text() == "bob only\n" and secret.stat().st_mode & 0o777 == 0o600


def test_hard_links_follow_the_kernels_rules(
    center: RunningCenter, homes: Path, tmp_path: Path
) -> None:
    alice = pwd.getpwnam(ALICE)
    root = homes / ALICE
    # a file in her root that she may not read (root's, 0600): served as alice, the kernel
    # refuses to link it (fs.protected_hardlinks); served as root it would not
    private = root / "root-private"
    private.write_text("root only\n")
    private.chmod(0o600)
    own = root / "own.txt"
    own.write_text("mine\n")
    os.chown(own, alice.pw_uid, alice.pw_gid)
    who = login(center, "alice", tmp_path)
    refused = sftp(who, "ln root-private grabbed")
    assert refused.returncode != 0 and "Permission denied" in refused.stderr, refused.stderr
    assert not (root / "grabbed").exists()
    assert sftp(who, "ln own.txt own-too").returncode == 0
    assert (root / "own-too").stat().st_ino == own.stat().st_ino


def test_connections_per_user_are_capped_and_kaic_says_so(
    center: RunningCenter, tmp_path: Path
) -> None:
    env = _kaic_login(center, "alice", tmp_path / "alice")
    alice = login(center, "alice", tmp_path)
    bob = login(center, "bob", tmp_path)
    sessions = [hold_session(alice) for _ in range(PER_USER)]
    try:
        poll(lambda: len(workers_of(center.pid)) == PER_USER, what="alice's workers")
        refused = run_cli("data", "ls", env=env, expect=5)
        assert f"too many connections for {ALICE}: at most {PER_USER} at once" in refused.stderr
        assert "Traceback" not in refused.stderr
        # OpenSSH shows the reason too
        done = sftp(alice, "pwd")
        assert done.returncode != 0 and "too many connections" in done.stderr, done.stderr
        # the cap is alice's alone: bob still gets in
        assert sftp(bob, "pwd").returncode == 0
    finally:
        for session in sessions:
            session.kill()
            session.wait(30)
    poll(lambda: not workers_of(center.pid), what="the workers to exit")
    assert run_cli("data", "ls", env=env).code == 0


def test_listing_20000_entries_through_the_worker(
    center: RunningCenter, homes: Path, tmp_path: Path
) -> None:
    alice = pwd.getpwnam(ALICE)
    big = homes / ALICE / "big"
    big.mkdir()
    os.chown(big, alice.pw_uid, alice.pw_gid)
    names = {f"entry-{i:05d}" for i in range(20_000)}
    for name in names:
        os.close(os.open(big / name, os.O_CREAT | os.O_WRONLY, 0o644))
    env = _kaic_login(center, "alice", tmp_path / "alice")
    listing = run_cli("data", "ls", "big", "--json", env=env, timeout=120).json()
    assert {entry["name"] for entry in listing} == names  # type: ignore[index,union-attr]


def test_a_missing_account_is_refused_at_login(center: RunningCenter, tmp_path: Path) -> None:
    center.add_user("ghost", PASSWORD, unix_account="kaic-no-such-account")
    center.add_project("p2", 1, ["ghost"])
    env = _kaic_login(center, "ghost", tmp_path / "ghost")
    run_cli("data", "ls", env=env, expect=3)
    log = center.log.read_text()
    assert "unix account 'kaic-no-such-account' does not exist" in log
    assert run_cli("whoami", env=env).code == 0  # the center itself carries on


def test_a_dead_worker_closes_its_connection(center: RunningCenter, tmp_path: Path) -> None:
    # The worker's failure reaches the client as a closed channel, never a hang.
    who = login(center, "alice", tmp_path)
    session = hold_session(who)
    try:
        [worker] = poll(lambda: workers_of(center.pid), what="a worker")
        poll(
            lambda: ids_of(worker)["Uid"] != [0] * 4,
            what="the worker to switch accounts",
            every=0.05,
        )
        os.kill(worker, signal.SIGKILL)
        assert session.stdin is not None
        session.stdin.write("ls\n")  # the next request finds the channel closed
        session.stdin.flush()
        assert session.wait(30) != 0
    finally:
        session.kill()
    assert sftp(who, "pwd").returncode == 0  # the next connection gets a new worker


def test_a_root_the_user_cannot_open_is_reported(
    center: RunningCenter, homes: Path, tmp_path: Path
) -> None:
    root = homes / ALICE
    os.chown(root, 0, 0)  # a misconfigured root: not alice's, 0700
    env = _kaic_login(center, "alice", tmp_path / "alice")
    refused = run_cli("data", "ls", env=env, expect=5)
    assert "the center cannot serve your files" in refused.stderr, refused.explain()
    assert "Permission denied" in refused.stderr
    assert "cannot serve kaicsftpa" in center.log.read_text()
