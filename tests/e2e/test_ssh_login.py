"""A center certificate opens a real OpenSSH sshd; host keys come only from `/v1/staging`.

Needs root and openssh-server (`apt-get install -y --no-install-recommends openssh-server`):
skipped without them, failed when `CI=true`.
"""

from __future__ import annotations

import hashlib
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from kaic.auth.credentials import Credentials
from kaic.auth.ssh import SshIdentity, known_hosts_lines
from kaic.center.admin import add_user
from kaic.client.api import CenterClient
from kaic.client.auth import AuthAPI
from kaic.client.staging import staging_info
from kaic.flows.ssh_target import ensure_identity
from tests.helpers import RunningCenter, run_cli, start_center
from tests.sshd import STAGING_USER, RunningSshd, require_sshd, start_sshd

PASSWORD = "correct horse battery staple"


@pytest.fixture
def staging(tmp_path: Path) -> Iterator[tuple[RunningCenter, RunningSshd]]:
    require_sshd()
    state = tmp_path / "center-state"
    # The operator's steps: export the user CA, trust it in sshd, point the center at sshd.
    ca_pub = tmp_path / "kaic_user_ca.pub"
    ca_pub.write_text(run_cli("center", "ssh-ca", "--state-dir", str(state)).stdout)
    sshd = start_sshd(tmp_path / "sshd", trusted_ca_pub=ca_pub, user=STAGING_USER)
    try:
        center = start_center(
            state,
            "--staging-host",
            "127.0.0.1",
            "--staging-port",
            str(sshd.port),
            "--staging-host-key",
            str(sshd.host_key_pub_path),
            "--storage-root",
            "/home/{unix_account}",
        )
        try:
            add_user(state, "alice", password=PASSWORD, enable_otp=False, unix_account=STAGING_USER)
            yield center, sshd
        finally:
            center.stop()
    finally:
        sshd.stop()


def ssh(
    sshd: RunningSshd, identity: SshIdentity, known_hosts: Path, *command: str, cert: bool = True
) -> subprocess.CompletedProcess[str]:
    options = [
        "-F",
        "/dev/null",
        "-i",
        str(identity.key_path),
        "-o",
        f"CertificateFile={identity.cert_path}" if cert else "CertificateFile=none",
        "-o",
        f"UserKnownHostsFile={known_hosts}",
        "-o",
        "GlobalKnownHostsFile=/dev/null",
        "-o",
        "StrictHostKeyChecking=yes",
        "-o",
        "BatchMode=yes",
        "-o",
        "IdentitiesOnly=yes",
        "-o",
        "IdentityAgent=none",
        "-o",
        "ConnectTimeout=10",
        "-p",
        str(sshd.port),
    ]
    return subprocess.run(
        ["ssh", *options, f"{identity.principal}@127.0.0.1", *command],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_certificate_login_against_real_sshd(
    staging: tuple[RunningCenter, RunningSshd], tmp_path: Path, isolated_dirs: Path
) -> None:
    center, sshd = staging
    # `kaic login` gets a certificate on the way (best effort, but here it must work).
    res = run_cli(
        "login", "--center", center.url, "-u", "alice", "--password-stdin", input=PASSWORD + "\n"
    )
    assert "SSH certificate for data staging as kaicstage" in res.stderr, res.explain()
    assert list((isolated_dirs / "config" / "ssh").glob("*/id_ed25519-cert.pub"))

    with CenterClient(center.url) as client:
        tokens = AuthAPI(client).login_password("alice", PASSWORD)
        client.set_credentials(Credentials(access_token=tokens.access_token, kind="session"))
        info = staging_info(client)
        identity = ensure_identity(client, "e2e")
        assert info.username == identity.principal == STAGING_USER
        assert info.host_keys == [sshd.host_key_pub_line]

        known_hosts = tmp_path / "known_hosts"
        known_hosts.write_text("\n".join(known_hosts_lines(info)) + "\n")
        done = ssh(sshd, identity, known_hosts, "true")
        assert done.returncode == 0, done.stderr + sshd.log()[-2000:]

        # What the user writes over SSH is what the center checksums: same storage root.
        done = ssh(sshd, identity, known_hosts, "printf 'staged\\n' > kaic-e2e.txt")
        assert done.returncode == 0, done.stderr
        response = client.request("GET", "/v1/files/checksum", params={"path": "kaic-e2e.txt"})
        assert response.json()["sha256"] == hashlib.sha256(b"staged\n").hexdigest()
        assert response.json()["path"] == f"/home/{STAGING_USER}/kaic-e2e.txt"

    # The key alone, without the certificate, opens nothing.
    refused = ssh(sshd, identity, known_hosts, "true", cert=False)
    assert refused.returncode == 255 and "Permission denied" in refused.stderr

    # A different host key in known_hosts: ssh refuses the host (no trust on first use).
    impostor = ed25519.Ed25519PrivateKey.generate().public_key()
    impostor_line = impostor.public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    ).decode()
    wrong = tmp_path / "wrong_known_hosts"
    wrong.write_text(f"[127.0.0.1]:{sshd.port} {impostor_line}\n")
    rejected = ssh(sshd, identity, wrong, "true")
    assert rejected.returncode == 255
    assert "Host key verification failed" in rejected.stderr


def test_data_push_pull_through_the_center(
    staging: tuple[RunningCenter, RunningSshd], tmp_path: Path, isolated_dirs: Path
) -> None:
    """`kaic data` with nothing but a login: host, user, host keys and a certificate all come
    from the center; a job on the same center sees the files (one storage root)."""
    center, _sshd = staging
    run_cli(
        "login", "--center", center.url, "-u", "alice", "--password-stdin", input=PASSWORD + "\n"
    )
    src = tmp_path / "dataset"
    (src / "sub").mkdir(parents=True)
    (src / "a.txt").write_text("alpha\n")
    (src / "sub" / "b.bin").write_bytes(bytes(range(256)) * 1000)
    pushed = run_cli("data", "push", str(src), "e2e-data", "--json").json()
    assert pushed["files_transferred"] == 2 and pushed["verified"] is True  # type: ignore[index]
    again = run_cli("data", "push", str(src), "e2e-data", "--json").json()
    assert again["files_transferred"] == 0 and again["files_skipped"] == 2  # type: ignore[index]
    listing = run_cli("data", "ls", "e2e-data", "--json").json()
    assert {e["name"] for e in listing} == {"a.txt", "sub"}  # type: ignore[union-attr,index]
    back = tmp_path / "back"
    run_cli("data", "pull", "e2e-data", str(back))
    assert (back / "sub" / "b.bin").read_bytes() == (src / "sub" / "b.bin").read_bytes()
    assert (back / "a.txt").read_text() == "alpha\n"
