"""TLS end to end: a real center serving HTTPS on 127.0.0.1 with a CA made here, the real CLI.

Covers the client's verification (right CA, wrong CA, expired certificate; `--ca-bundle`,
`KAIC_CA_BUNDLE`, `SSL_CERT_FILE`), the refusals that keep secrets off plain http (non-loopback
http, `user:password@` URLs, a `KAIC_TOKEN` that cannot be a header), and `kaic center serve`'s
checks before it binds. Nothing here binds anything but 127.0.0.1: the serve checks run under a
guard that refuses every bind.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.helpers import Result, RunningCenter, cli_env, run_cli, start_center

PASSWORD = "correct horse battery staple"
SECRET = "s3cret-pass-word"


# -- a CA made in the test ------------------------------------------------------------------------


@dataclass(frozen=True)
class Pki:
    ca: Path  # the CA that signed the center's certificates
    other_ca: Path  # an unrelated CA
    cert: Path  # for 127.0.0.1 (IP SAN) and localhost
    key: Path
    expired_cert: Path  # the same names, validity ended yesterday
    expired_key: Path


def _make_pki(directory: Path) -> Pki:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    day = datetime.timedelta(days=1)

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    def make_ca(cn: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (
            x509.CertificateBuilder()
            .subject_name(name(cn))
            .issuer_name(name(cn))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - day)
            .not_valid_after(now + 30 * day)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
            .sign(key, hashes.SHA256())
        )
        return key, cert

    def make_server(
        ca_key: ec.EllipticCurvePrivateKey,
        ca_cert: x509.Certificate,
        not_before: datetime.datetime,
        not_after: datetime.datetime,
    ) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
        key = ec.generate_private_key(ec.SECP256R1())
        names = [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
        cert = (
            x509.CertificateBuilder()
            .subject_name(name("kaic test center"))
            .issuer_name(ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before)
            .not_valid_after(not_after)
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
            )
            .sign(ca_key, hashes.SHA256())
        )
        return key, cert

    def write(path: Path, data: bytes, mode: int) -> Path:
        path.write_bytes(data)
        path.chmod(mode)
        return path

    def pem(cert: x509.Certificate) -> bytes:
        return cert.public_bytes(serialization.Encoding.PEM)

    def key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
        return key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    directory.mkdir(parents=True, exist_ok=True)
    ca_key, ca_cert = make_ca("kaic test CA")
    _, other_cert = make_ca("an unrelated CA")
    key, cert = make_server(ca_key, ca_cert, now - day, now + 7 * day)
    old_key, old_cert = make_server(ca_key, ca_cert, now - 10 * day, now - day)
    return Pki(
        ca=write(directory / "ca.pem", pem(ca_cert), 0o644),
        other_ca=write(directory / "other-ca.pem", pem(other_cert), 0o644),
        cert=write(directory / "center.pem", pem(cert), 0o644),
        key=write(directory / "center.key", key_pem(key), 0o600),
        expired_cert=write(directory / "expired.pem", pem(old_cert), 0o644),
        expired_key=write(directory / "expired.key", key_pem(old_key), 0o600),
    )


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return _make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def tls_center(pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningCenter]:
    """`kaic center serve --tls-cert --tls-key` on 127.0.0.1, with embedded SFTP staging."""
    center = start_center(
        tmp_path_factory.mktemp("tls-center"),
        "--tls-cert",
        str(pki.cert),
        "--tls-key",
        str(pki.key),
        "--sftp-port",
        "0",
    )
    try:
        center.add_user("alice", PASSWORD)
        center.add_project("ai-2026-0042", 5000, ["alice"])
        yield center
    finally:
        center.stop()


@pytest.fixture(scope="module")
def expired_center(pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningCenter]:
    center = start_center(
        tmp_path_factory.mktemp("expired-center"),
        "--tls-cert",
        str(pki.expired_cert),
        "--tls-key",
        str(pki.expired_key),
    )
    try:
        center.add_user("alice", PASSWORD)
        yield center
    finally:
        center.stop()


def login(center: RunningCenter, *extra: str, expect: int = 0, **kw: object) -> Result:
    return run_cli(
        "login",
        "--center",
        center.url,
        "--username",
        "alice",
        "--password-stdin",
        *extra,
        input=PASSWORD + "\n",
        expect=expect,
        **kw,  # type: ignore[arg-type]
    )


def debug_requests(res: Result) -> list[str]:
    """The request lines of the KAIC_DEBUG log."""
    return [ln for ln in res.stderr.splitlines() if ln.startswith("debug: ") and " -> " in ln]


# -- verified TLS --------------------------------------------------------------------------------


def test_login_whoami_submit_and_follow_over_verified_tls(
    tls_center: RunningCenter, pki: Pki
) -> None:
    assert tls_center.url.startswith("https://127.0.0.1:")
    res = login(tls_center, "--ca-bundle", str(pki.ca))
    assert "Logged in" in res.stderr and "warning" not in res.stderr
    # The SSH-certificate calls right after the login go through the same verified client.
    assert "SSH certificate for data staging" in res.stderr

    shown = run_cli("config", "show", "--json").json()
    assert shown["profiles"][0]["ca_bundle"] == str(pki.ca.resolve())  # type: ignore[index]
    me = run_cli("whoami", "--json").json()
    assert me["center"] == tls_center.url and me["user"] == "alice"  # type: ignore[index]

    job_id = run_cli("submit", "--", "sh", "-c", "echo hello-over-tls").stdout.strip()
    followed = run_cli("logs", "-f", job_id)
    assert followed.stdout == "hello-over-tls\n"

    checks = run_cli("doctor", "--json").json()
    center_check = next(c for c in checks if c["name"] == "center")  # type: ignore[union-attr]
    assert center_check["status"] == "ok"
    assert "TLS, certificate verified" in center_check["detail"]

    # Logout revokes the session through the same verified client.
    res = run_cli("logout")
    assert "Logged out" in res.stderr and "could not revoke" not in res.stderr


def test_env_ca_bundle_wins_and_ssl_cert_file_is_honoured(
    tls_center: RunningCenter, pki: Pki, tmp_path: Path
) -> None:
    login(tls_center, "--ca-bundle", str(pki.ca))
    # KAIC_CA_BUNDLE wins over the profile's bundle.
    res = run_cli("whoami", env={**os.environ, "KAIC_CA_BUNDLE": str(pki.other_ca)}, expect=5)
    assert "unknown certificate authority" in res.stderr

    token = run_cli("token", "create", "ci", "--json").json()["token"]  # type: ignore[index]
    ci = {
        **os.environ,
        "KAIC_CONFIG_DIR": str(tmp_path / "ci-config"),
        "KAIC_CENTER": tls_center.url,
        "KAIC_TOKEN": token,
    }
    run_cli("whoami", env=ci, expect=5)  # the default CAs do not know the test CA
    assert run_cli("whoami", "--json", env={**ci, "KAIC_CA_BUNDLE": str(pki.ca)}).json()
    assert run_cli("whoami", "--json", env={**ci, "SSL_CERT_FILE": str(pki.ca)}).json()

    res = run_cli("whoami", env={**ci, "KAIC_CA_BUNDLE": str(tmp_path / "nope.pem")}, expect=2)
    assert "KAIC_CA_BUNDLE" in res.stderr and "nope.pem" in res.stderr


def test_wrong_ca_is_refused_at_once_naming_the_failure(
    tls_center: RunningCenter, pki: Pki
) -> None:
    res = login(tls_center, "--ca-bundle", str(pki.other_ca), expect=5)
    assert "127.0.0.1" in res.stderr and "unknown certificate authority" in res.stderr
    assert "--ca-bundle" in res.stderr
    assert PASSWORD not in res.stdout + res.stderr

    login(tls_center, "--ca-bundle", str(pki.ca))
    wrong = {**os.environ, "KAIC_CA_BUNDLE": str(pki.other_ca), "KAIC_DEBUG": "1"}
    res = run_cli("whoami", env=wrong, expect=5)
    assert len(debug_requests(res)) == 1, res.stderr  # no retries: it fails the same each time
    # The waiting commands do not reconnect after a TLS failure either (`logs -f` reads
    # stdout and stderr side by side: at most one attempt each).
    job_id = run_cli("submit", "--", "true").stdout.strip()
    res = run_cli("logs", "-f", job_id, env=wrong, expect=5, timeout=30)
    urls = [line.split(" -> ")[0] for line in debug_requests(res)]
    assert 1 <= len(urls) == len(set(urls)) <= 2, res.stderr
    assert "[retry" not in res.stderr
    res = run_cli("wait", job_id, env=wrong, expect=5, timeout=30)
    assert len(debug_requests(res)) == 1, res.stderr


def test_expired_certificate_is_refused(expired_center: RunningCenter, pki: Pki) -> None:
    res = login(expired_center, "--ca-bundle", str(pki.ca), expect=5)
    assert "expired" in res.stderr and "127.0.0.1" in res.stderr


# -- secrets never on plain http, never echoed -----------------------------------------------------


def test_password_is_not_sent_over_plain_http_to_a_non_loopback_host() -> None:
    # example.invalid never resolves; the refusal must come before any attempt to connect.
    res = run_cli(
        "login", "--center", "http://example.invalid", "-u", "alice", "--password-stdin",
        input=SECRET + "\n", env={**os.environ, "KAIC_DEBUG": "1"}, expect=2,
    )  # fmt: skip
    assert "plain http" in res.stderr and "not a loopback address" in res.stderr
    assert "--insecure-http" in res.stderr and "KAIC_INSECURE_HTTP=1" in res.stderr
    assert debug_requests(res) == [] and "name or service" not in res.stderr
    assert SECRET not in res.stdout + res.stderr

    # With the opt-out the login goes ahead (and fails to resolve), loudly.
    for extra, env in (([], {"KAIC_INSECURE_HTTP": "1"}), (["--insecure-http"], {})):
        res = run_cli(
            "login", "--center", "http://example.invalid", "-u", "alice", "--password-stdin",
            *extra, input=SECRET + "\n", env={**os.environ, **env}, expect=5,
        )  # fmt: skip
        warnings = [ln for ln in res.stderr.splitlines() if "over plain http" in ln]
        assert len(warnings) == 1 and warnings[0].startswith("warning: ")


def test_stored_plain_http_opt_out_warns_once_on_every_command(isolated_dirs: Path) -> None:
    config = isolated_dirs / "config"
    (config / "credentials").mkdir(parents=True, mode=0o700)
    (config / "config.toml").write_text(
        'current_profile = "lab"\n[profiles.lab]\ncenter = "http://example.invalid"\n'
        'credential_store = "file"\ninsecure_http = true\n'
    )
    creds = config / "credentials" / "lab.json"
    creds.write_text('{"access_token": "kaic_0123456789abcdef", "kind": "api"}')
    creds.chmod(0o600)
    for args in (["jobs"], ["whoami"]):
        res = run_cli(*args, expect=5)
        assert res.stderr.count("over plain http") == 1, res.stderr
        assert "cannot reach the center at http://example.invalid" in res.stderr


def test_url_with_password_is_refused_without_echoing_it(isolated_dirs: Path) -> None:
    url = f"https://alice:{SECRET}@127.0.0.1:1"
    res = run_cli("login", "--center", url, "-u", "alice", "--password-stdin", expect=2)
    assert SECRET not in res.stdout + res.stderr
    assert "user name or password" in res.stderr
    env = {**os.environ, "KAIC_CENTER": url, "KAIC_DEBUG": "1", "KAIC_TOKEN": "kaic_x1234567"}
    res2 = run_cli("whoami", env=env, expect=2)
    # A hand-edited profile: `config show` masks it, commands refuse it.
    (isolated_dirs / "config").mkdir(parents=True, exist_ok=True)
    (isolated_dirs / "config" / "config.toml").write_text(
        f'[profiles.x]\ncenter = "{url}"\n', encoding="utf-8"
    )
    shows = [run_cli("config", "show"), run_cli("config", "show", "--json")]
    res3 = run_cli("jobs", expect=2)
    for out in (res, res2, res3, *shows):
        assert SECRET not in out.stdout + out.stderr, out.explain()
    assert "https://***@127.0.0.1:1" in shows[0].stdout


def test_kaic_token_with_a_line_break_is_exit_3_and_never_echoed(
    alice: tuple[RunningCenter, str, str],
) -> None:
    center, _, _ = alice
    env = {
        **os.environ,
        "KAIC_CENTER": center.url,
        "KAIC_TOKEN": "kaic_0123456789\nnext-line-secret",
    }
    res = run_cli("whoami", env=env, expect=3)
    assert "KAIC_TOKEN" in res.stderr and "line break" in res.stderr
    assert "next-line-secret" not in res.stdout + res.stderr
    assert "kaic_0123456789" not in res.stdout + res.stderr


# -- kaic center serve: checked before anything binds ---------------------------------------

# Runs the real CLI with every bind refused (exit 99): a check that came after binding, or did
# not refuse at all, shows as exit 99 — and nothing is ever bound here.
_NO_BIND = """
import socket, sys
def refuse(self, address):
    sys.stderr.write(f"TEST GUARD: bind({address!r}) attempted\\n")
    raise SystemExit(99)
socket.socket.bind = refuse
from kaic.cli.main import main
sys.argv = ["kaic", *sys.argv[1:]]
main()
"""


def serve_without_binding(*args: str) -> Result:
    proc = subprocess.run(
        [sys.executable, "-c", _NO_BIND, "center", "serve", "--port", "0", *args],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        env=cli_env(),
        timeout=60,
    )
    return Result(list(args), proc.returncode, proc.stdout, proc.stderr)


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "10.1.2.3"])
def test_serve_refuses_non_loopback_plain_http_before_binding(tmp_path: Path, host: str) -> None:
    state = tmp_path / "state"
    res = serve_without_binding("--host", host, "--state-dir", str(state))
    assert res.code == 2, res.explain()
    assert "--tls-cert" in res.stderr and "--behind-tls-proxy" in res.stderr
    assert "TEST GUARD" not in res.stderr
    assert not state.exists()  # refused before anything was created, let alone bound


def test_serve_goes_on_to_bind_with_tls_or_a_proxy_statement(tmp_path: Path, pki: Pki) -> None:
    for extra in (["--behind-tls-proxy"], ["--tls-cert", str(pki.cert), "--tls-key", str(pki.key)]):
        res = serve_without_binding("--host", "0.0.0.0", "--state-dir", str(tmp_path / "s"), *extra)
        assert res.code == 99 and "TEST GUARD: bind(('0.0.0.0', 0))" in res.stderr, res.explain()


def test_serve_refuses_a_world_readable_tls_key(tmp_path: Path, pki: Pki) -> None:
    key = tmp_path / "open.key"
    key.write_bytes(pki.key.read_bytes())
    key.chmod(0o644)
    res = serve_without_binding(
        "--tls-cert", str(pki.cert), "--tls-key", str(key), "--state-dir", str(tmp_path / "s")
    )
    assert res.code == 2, res.explain()
    assert f"chmod 600 {key}" in res.stderr and "0644" in res.stderr
    res = serve_without_binding("--tls-cert", str(pki.cert), "--state-dir", str(tmp_path / "s"))
    assert res.code == 2 and "--tls-key" in res.stderr


def test_help_shows_an_example_of_each_way_to_serve_a_real_site() -> None:
    out = run_cli("center", "serve", "--help", env={**os.environ, "COLUMNS": "200"}).stdout
    assert "--tls-cert cert.pem --tls-key key.pem" in out
    assert "--host 10.0.0.5 --port 8750 --behind-tls-proxy" in out
