"""The reference center's embedded SFTP endpoint, end to end: a real center process on
loopback, the real OpenSSH `sftp` client, and `kaic data` through the CLI.

Needs the OpenSSH client (`sftp`, `ssh-keygen`): skipped without it, failed when `CI=true`.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from kaic.auth.credentials import Credentials
from kaic.auth.ssh import SshIdentity, known_hosts_lines
from kaic.center.ssh_ca import UserCA
from kaic.client.api import CenterClient
from kaic.client.auth import AuthAPI
from kaic.client.staging import staging_info
from kaic.flows.ssh_target import ensure_identity
from kaic.models.staging import SshCertificate, StagingInfo
from tests.helpers import RunningCenter, run_cli, start_center, unavailable

PASSWORD = "correct horse battery staple"


def require_openssh_client() -> None:
    missing = [tool for tool in ("sftp", "ssh-keygen") if shutil.which(tool) is None]
    if missing:
        unavailable(
            f"needs the OpenSSH client ({', '.join(missing)}: apt-get install openssh-client)"
        )


@dataclass
class Login:
    """One user's view of the endpoint: staging info, SSH identity, pinned host key."""

    info: StagingInfo
    identity: SshIdentity
    known_hosts: Path

    @property
    def home(self) -> Path:
        return Path(self.info.roots[0].path)


@pytest.fixture
def center(tmp_path: Path) -> Iterator[RunningCenter]:
    require_openssh_client()
    running = start_center(tmp_path / "center-state", "--sftp-port", "0")
    try:
        running.add_user("alice", PASSWORD, unix_account="alice01")
        running.add_user("bob", PASSWORD, unix_account="bob02")
        yield running
    finally:
        running.stop()


def login(center: RunningCenter, user: str, tmp_path: Path) -> Login:
    with CenterClient(center.url) as client:
        tokens = AuthAPI(client).login_password(user, PASSWORD)
        client.set_credentials(Credentials(access_token=tokens.access_token, kind="session"))
        info = staging_info(client)
        identity = ensure_identity(client, f"e2e-{user}")
    known_hosts = tmp_path / f"known_hosts-{user}"
    known_hosts.write_text("\n".join(known_hosts_lines(info)) + "\n")
    return Login(info, identity, known_hosts)


def sftp(
    who: Login, *commands: str, cwd: Path | None = None, options: tuple[str, ...] = ()
) -> subprocess.CompletedProcess[str]:
    """Run the OpenSSH `sftp` client in batch mode (stops at the first failing command);
    `options` are extra `-o` options."""
    return subprocess.run(
        sftp_command(who, options),
        input="\n".join(commands) + "\n",
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
        check=False,
    )


def sftp_command(who: Login, options: tuple[str, ...] = ()) -> list[str]:
    """The OpenSSH `sftp` command line logging in as `who` (commands on stdin)."""
    return [
        "sftp",
        "-F",
        "/dev/null",
        "-b",
        "-",
        "-P",
        str(who.info.port),
        "-i",
        str(who.identity.key_path),
        "-o",
        f"CertificateFile={who.identity.cert_path}",
        "-o",
        "IdentitiesOnly=yes",
        "-o",
        "IdentityAgent=none",
        "-o",
        "StrictHostKeyChecking=yes",
        "-o",
        f"UserKnownHostsFile={who.known_hosts}",
        "-o",
        "GlobalKnownHostsFile=/dev/null",
        "-o",
        "BatchMode=yes",
        "-o",
        "ConnectTimeout=10",
        *(arg for option in options for arg in ("-o", option)),
        f"{who.info.username}@{who.info.host}",
    ]


def _ok(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 0, f"sftp exited {done.returncode}\n{done.stdout}\n{done.stderr}"
    return done.stdout


def _refused(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode != 0, f"sftp should have failed\n{done.stdout}\n{done.stderr}"
    return done.stdout + done.stderr


def test_staging_info_advertises_the_embedded_endpoint(
    center: RunningCenter, tmp_path: Path
) -> None:
    alice = login(center, "alice", tmp_path)
    assert alice.info.host == "127.0.0.1" and alice.info.port not in (0, 22, 8750)
    assert alice.info.username == "alice01"
    assert alice.home == center.state_dir / "storage" / "alice"
    [host_key] = alice.info.host_keys
    key_file = center.state_dir / "ssh" / "sftp_host_ed25519_key"
    assert key_file.stat().st_mode & 0o777 == 0o600
    public = subprocess.run(
        ["ssh-keygen", "-y", "-f", str(key_file)], capture_output=True, text=True, check=True
    ).stdout
    assert public.split()[:2] == host_key.split()[:2]


def test_openssh_sftp_round_trips(center: RunningCenter, tmp_path: Path) -> None:
    alice = login(center, "alice", tmp_path)
    local = tmp_path / "local"
    local.mkdir()
    payload = os.urandom(3 << 20) + b"tail"
    (local / "blob.bin").write_bytes(payload)
    (local / "empty").write_bytes(b"")
    os.utime(local / "blob.bin", (1_600_000_000, 1_600_000_000))
    out = _ok(
        sftp(
            alice,
            "pwd",
            "mkdir work",
            "put -p blob.bin work/blob.bin",
            "put empty work/empty",
            "ls -l work",
            "rename work/blob.bin work/renamed.bin",
            "get work/renamed.bin back.bin",
            "get work/empty back-empty",
            "rm work/empty",
            "ls work",
            cwd=local,
        )
    )
    assert f"Remote working directory: {alice.home}" in out
    assert (local / "back.bin").read_bytes() == payload
    assert (local / "back-empty").read_bytes() == b""
    stored = alice.home / "work" / "renamed.bin"
    assert hashlib.sha256(stored.read_bytes()).digest() == hashlib.sha256(payload).digest()
    assert int(stored.stat().st_mtime) == 1_600_000_000  # put -p kept the mtime
    assert not (alice.home / "work" / "empty").exists()
    # the endpoint announces posix-rename@openssh.com: `rename` replaces, as against sshd
    _ok(sftp(alice, "put empty work/old", "rename work/renamed.bin work/old", cwd=local))
    assert (alice.home / "work" / "old").read_bytes() == payload
    _ok(sftp(alice, "rename work/old work/renamed.bin"))
    # rmdir of a non-empty directory fails; emptied, it goes
    _refused(sftp(alice, "rmdir work"))
    _ok(sftp(alice, "rm work/renamed.bin", "rmdir work", "ls"))
    assert not (alice.home / "work").exists()


def test_traversal_and_symlink_escapes_refused(center: RunningCenter, tmp_path: Path) -> None:
    alice = login(center, "alice", tmp_path)
    local = tmp_path / "local"
    local.mkdir()
    (local / "x.txt").write_text("x\n")
    secret = tmp_path / "secret.txt"
    secret.write_text("outside the root\n")
    # links planted on disk (as a job of the user could): out of the root
    alice.home.mkdir(parents=True, exist_ok=True)
    (alice.home / "escape").symlink_to(secret)
    (alice.home / "escape-dir").symlink_to(tmp_path)

    for command in (
        "get ../../etc/passwd got",
        "get /etc/passwd got",
        f"get {alice.home}/../../../etc/passwd got",
        "get escape got",
        "get escape-dir/secret.txt got",
        "ls escape-dir/secret.txt",
        "put x.txt ../planted.txt",
        "put x.txt escape-dir/planted.txt",
        "put x.txt escape",
        "rename escape ../moved",
        "mkdir ../newdir",
        "chmod 777 escape",
    ):
        output = _refused(sftp(alice, command, cwd=local))
        assert "denied" in output.lower() or "not found" in output.lower(), (command, output)
    assert not (local / "got").exists()
    # listing through the link shows nothing of what is behind it
    for command in ("ls escape-dir", "ls escape-dir/", "ls -l escape-dir/*"):
        assert "secret.txt" not in sftp(alice, command).stdout
    assert secret.read_text() == "outside the root\n"
    assert oct(secret.stat().st_mode & 0o777) != oct(0o777)
    assert not (alice.home.parent / "planted.txt").exists()
    assert not (tmp_path / "planted.txt").exists()
    assert not (alice.home.parent / "newdir").exists()

    # `cd ..` leaves the root only in name: nothing there can be listed
    _refused(sftp(alice, "cd ..", "ls"))
    # a link to /etc/passwd cannot be made; a link inside the root can
    _refused(sftp(alice, "symlink /etc/passwd pw"))
    assert not os.path.lexists(alice.home / "pw")
    _ok(sftp(alice, "put x.txt x.txt", "symlink x.txt alias", "get alias alias-back", cwd=local))
    assert (local / "alias-back").read_text() == "x\n"


def test_users_are_confined_to_their_own_roots(center: RunningCenter, tmp_path: Path) -> None:
    alice = login(center, "alice", tmp_path)
    bob = login(center, "bob", tmp_path)
    local = tmp_path / "local"
    local.mkdir()
    (local / "private.txt").write_text("alice only\n")
    _ok(sftp(alice, "put private.txt private.txt", cwd=local))
    for command in (
        f"get {alice.home}/private.txt stolen",
        "get ../alice/private.txt stolen",
        f"ls {alice.home}",
    ):
        _refused(sftp(bob, command, cwd=local))
    assert not (local / "stolen").exists()
    # bob's certificate names bob02: it does not open alice01's account
    impostor = Login(alice.info, bob.identity, alice.known_hosts)
    assert "Permission denied" in _refused(sftp(impostor, "ls"))


def test_kaic_data_push_pull_tree(
    center: RunningCenter, tmp_path: Path, isolated_dirs: Path
) -> None:
    run_cli(
        "login", "--center", center.url, "-u", "alice", "--password-stdin", input=PASSWORD + "\n"
    )
    src = tmp_path / "dataset"
    (src / "nested" / "deeper").mkdir(parents=True)
    (src / "a.txt").write_text("alpha\n")
    (src / "empty.dat").write_bytes(b"")
    (src / "nested" / "deeper" / "b.bin").write_bytes(os.urandom(5 << 20))
    (src / "nested" / "données-ü.txt").write_text("unicode\n")
    (src / "nested" / "日本語").mkdir()
    (src / "nested" / "日本語" / "ファイル.txt").write_text("名前\n")
    (src / "link-to-a").symlink_to("a.txt")  # a link to a file travels as its content
    (src / "link-to-dir").symlink_to("nested")  # links to directories are skipped
    (src / "dangling").symlink_to("missing")
    files = {
        "a.txt",
        "empty.dat",
        "nested/deeper/b.bin",
        "nested/données-ü.txt",
        "nested/日本語/ファイル.txt",
        "link-to-a",
    }
    pushed = run_cli("data", "push", str(src), "ds", "--json").json()
    assert pushed["files_transferred"] == len(files) and pushed["verified"] is True  # type: ignore[index]
    home = center.state_dir / "storage" / "alice" / "ds"
    for rel in files:
        assert (home / rel).read_bytes() == (src / rel).read_bytes(), rel
        assert int((home / rel).stat().st_mtime) == int((src / rel).stat().st_mtime), rel
    assert not (home / "link-to-dir").exists() and not list(home.rglob("*.kaic-part"))

    again = run_cli("data", "push", str(src), "ds", "--json").json()
    assert again["files_transferred"] == 0 and again["bytes_transferred"] == 0  # type: ignore[index]
    assert again["files_skipped"] == len(files)  # type: ignore[index]

    listing = run_cli("data", "ls", "ds", "--json").json()
    assert {e["name"] for e in listing} == {  # type: ignore[union-attr,index]
        "a.txt",
        "empty.dat",
        "nested",
        "link-to-a",
    }
    back = tmp_path / "back"
    pulled = run_cli("data", "pull", "ds", str(back), "--json").json()
    assert pulled["files_transferred"] == len(files) and pulled["verified"] is True  # type: ignore[index]
    for rel in files:
        assert (back / rel).read_bytes() == (src / rel).read_bytes(), rel
    assert run_cli("data", "pull", "ds", str(back), "--json").json()["files_transferred"] == 0  # type: ignore[index]


def test_expired_certificate_refused_then_renewed(
    center: RunningCenter, tmp_path: Path, isolated_dirs: Path
) -> None:
    run_cli(
        "login", "--center", center.url, "-u", "alice", "--password-stdin", input=PASSWORD + "\n"
    )
    [cert_path] = (isolated_dirs / "config" / "ssh").glob("*/id_ed25519-cert.pub")
    key_path = cert_path.with_name("id_ed25519")
    # A certificate of this center's CA for this key that expired an hour ago.
    expired = UserCA(center.state_dir).sign_user_key(
        key_path.with_name("id_ed25519.pub").read_text(),
        user="alice",
        principal="alice01",
        now=datetime.now(timezone.utc) - timedelta(hours=2),
        validity_seconds=3600,
    )
    cert_path.write_text(expired.certificate + "\n")
    with CenterClient(center.url) as client:
        tokens = AuthAPI(client).login_password("alice", PASSWORD)
        client.set_credentials(Credentials(access_token=tokens.access_token, kind="session"))
        info = staging_info(client)
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text("\n".join(known_hosts_lines(info)) + "\n")
    stale = Login(
        info, SshIdentity(key_path, cert_path, expired.valid_before, "alice01"), known_hosts
    )
    assert "Permission denied" in _refused(sftp(stale, "ls"))
    assert "certificate has expired" in center.log.read_text()

    # kaic notices and asks for a fresh certificate before connecting
    (tmp_path / "f.txt").write_text("fresh\n")
    run_cli("data", "push", str(tmp_path / "f.txt"), "f.txt")
    assert cert_path.read_text() != expired.certificate + "\n"
    _ok(sftp(stale, "ls f.txt"))


def test_password_and_plain_key_logins_refused(center: RunningCenter, tmp_path: Path) -> None:
    alice = login(center, "alice", tmp_path)
    plain = Login(alice.info, alice.identity, alice.known_hosts)
    done = subprocess.run(
        [
            "sftp",
            "-F",
            "/dev/null",
            "-b",
            "-",
            "-P",
            str(alice.info.port),
            "-i",
            str(alice.identity.key_path),
            "-o",
            "CertificateFile=none",
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            "IdentityAgent=none",
            "-o",
            "PreferredAuthentications=publickey,password,keyboard-interactive",
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            f"UserKnownHostsFile={plain.known_hosts}",
            "-o",
            "BatchMode=yes",
            f"{alice.info.username}@127.0.0.1",
        ],
        input="ls\n",
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode != 0
    assert "Permission denied (publickey)" in done.stderr


def test_transfers_resume_through_cut_connections(center: RunningCenter, tmp_path: Path) -> None:
    """A TCP proxy cuts the connection to the embedded endpoint at random byte counts: push
    and pull resume until byte-identical, verified through the checksum API (no exec here),
    with no part file left behind."""
    from kaic.models.staging import FileChecksum
    from kaic.staging.connect import SshTarget
    from kaic.staging.transfer import SyncOptions, pull, push
    from tests.staging.faults import CuttingProxy

    who = login(center, "alice", tmp_path)
    src = tmp_path / "src"
    for i in range(120):
        d = src / f"d{i % 5}"
        d.mkdir(parents=True, exist_ok=True)
        (d / f"f{i}.dat").write_bytes(os.urandom((i * 7919) % 50_000))
    (src / "big.dat").write_bytes(os.urandom(24 << 20))

    with CenterClient(center.url) as client:
        tokens = AuthAPI(client).login_password("alice", PASSWORD)
        client.set_credentials(Credentials(access_token=tokens.access_token, kind="session"))

        def checksum(path: str) -> str | None:
            response = client.request("GET", "/v1/files/checksum", params={"path": path})
            return client.parse(response, FileChecksum).sha256

        def through(proxy: CuttingProxy) -> SshTarget:
            return SshTarget(
                "127.0.0.1",
                proxy.port,
                who.info.username,
                who.identity.key_path,
                who.identity.cert_path,
                [f"[127.0.0.1]:{proxy.port} {who.info.host_keys[0]}"],
                use_user_known_hosts=False,
            )

        cuts = 12
        proxy = CuttingProxy.random(who.info.port, cuts, 20_000, 2 << 20, seed=5)
        try:
            pushed = push(
                through(proxy),
                [str(src)],
                "cut-tree",
                SyncOptions(retries=cuts * 3),
                checksum_fn=checksum,
                sleep=lambda _s: None,
            )
        finally:
            proxy.close()
        assert proxy.cut_count >= cuts and not pushed.failures and pushed.verified
        landed = who.home / "cut-tree"
        for f in src.rglob("*.dat"):
            assert _sha(landed / f.relative_to(src)) == _sha(f), f
        assert not list(landed.rglob("*.kaic-part"))

        back = tmp_path / "back"
        proxy = CuttingProxy.random(who.info.port, cuts, 20_000, 2 << 20, seed=6)
        try:
            pulled = pull(
                through(proxy),
                ["cut-tree"],
                str(back),
                SyncOptions(retries=cuts * 3),
                checksum_fn=checksum,
                sleep=lambda _s: None,
            )
        finally:
            proxy.close()
        assert proxy.cut_count >= cuts and not pulled.failures
        for f in src.rglob("*.dat"):
            assert _sha(back / f.relative_to(src)) == _sha(f), f
        assert not list(back.rglob("*.kaic-part"))


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_center_serve_offers_staging_by_default(tmp_path: Path, isolated_dirs: Path) -> None:
    # A plainly started center (no staging flags) serves storage over its embedded endpoint.
    require_openssh_client()
    plain = start_center(tmp_path / "plain-state")
    try:
        ready = json.loads((plain.state_dir / "ready.json").read_text())
        assert isinstance(ready["sftp_port"], int) and ready["sftp_port"] > 0
        plain.add_user("alice", PASSWORD, unix_account="alice01")
        login_cli = ("login", "--center", plain.url, "-u", "alice", "--password-stdin")
        run_cli(*login_cli, input=PASSWORD + "\n")
        (tmp_path / "hello.txt").write_text("hello\n")
        run_cli("data", "push", str(tmp_path / "hello.txt"), "hello.txt")
        stored = plain.state_dir / "storage" / "alice" / "hello.txt"
        assert stored.read_text() == "hello\n"
        assert f"embedded SFTP endpoint on 127.0.0.1:{ready['sftp_port']}" in plain.log.read_text()
    finally:
        plain.stop()


def _rsa_identity(center: RunningCenter, tmp_path: Path) -> Login:
    """alice's login with an RSA key and a certificate of the center for it."""
    alice = login(center, "alice", tmp_path)
    key = tmp_path / "id_rsa"
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "rsa", "-b", "2048", "-N", "", "-f", str(key)],
        check=True,
        capture_output=True,
    )
    with CenterClient(center.url) as client:
        tokens = AuthAPI(client).login_password("alice", PASSWORD)
        client.set_credentials(Credentials(access_token=tokens.access_token, kind="session"))
        public = key.with_name("id_rsa.pub").read_text().strip()
        response = client.request("POST", "/v1/ssh/certificates", json={"public_key": public})
        cert = client.parse(response, SshCertificate)
    cert_path = key.with_name("id_rsa-cert.pub")
    cert_path.write_text(cert.certificate + "\n")
    identity = SshIdentity(key, cert_path, cert.valid_before, "alice01")
    return Login(alice.info, identity, alice.known_hosts)


def test_ssh_rsa_sha1_logins_refused(center: RunningCenter, tmp_path: Path) -> None:
    rsa_user = _rsa_identity(center, tmp_path)
    # rsa-sha2-512 / rsa-sha2-256 (what OpenSSH negotiates for an RSA key) get in
    assert f"Remote working directory: {rsa_user.home}" in _ok(sftp(rsa_user, "pwd"))
    # a client offering only ssh-rsa (SHA-1 signatures) is refused
    sha1_only = sftp(
        rsa_user, "pwd", options=("PubkeyAcceptedAlgorithms=ssh-rsa-cert-v01@openssh.com,ssh-rsa",)
    )
    assert sha1_only.returncode != 0, sha1_only.stdout
    assert "Remote working directory" not in sha1_only.stdout


def test_listing_a_directory_of_20000_entries(center: RunningCenter, tmp_path: Path) -> None:
    alice = login(center, "alice", tmp_path)
    big = alice.home / "big"
    big.mkdir(parents=True)
    names = {f"entry-{i:05d}" for i in range(20_000)}
    for name in names:
        os.close(os.open(big / name, os.O_CREAT | os.O_WRONLY, 0o644))
    listing = _ok(sftp(alice, "ls -1 big"))
    shown = {line.strip().rsplit("/", 1)[-1] for line in listing.splitlines()[1:] if line.strip()}
    assert shown == names
