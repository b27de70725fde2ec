"""Schemathesis against the OpenAPI document a real center serves: no request, however
hostile, gets a 5xx, and every response is one the document describes (status code, content
type, headers, body schema), for an authenticated user on a real center on loopback.

It runs schemathesis' own command line (its coverage phase tries each constraint's
boundaries, its stateful phase follows links from one response to the next request) with a
fixed seed and a small budget per operation, so the run is repeatable and takes a minute or
two. The token reaches it through the environment, never argv. `fuzz_hooks` replaces every
valid job script the fuzzer makes up by `true`.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from kaic.center.admin import add_project, add_user
from tests.helpers import RunningCenter, cli_env, start_center, unavailable

PASSWORD = "fuzz-password-123"
#: test cases per operation and phase: enough to find what the probe found, bounded for CI
MAX_EXAMPLES = 30
SEED = 20261201
#: what the document promises; positive_data_acceptance is left out on purpose: the center
#: refuses some schema-valid values on meaning no schema can state (an opaque cursor it did
#: not issue, a public key that does not parse, a project the user is not in)
CHECKS = (
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_headers_conformance",
    "response_schema_conformance",
    "negative_data_rejection",
    "unsupported_method",
    "allow_header_conformance",
)


@dataclass
class FuzzTarget:
    center: RunningCenter
    #: a session token (password login): the only kind that may manage API tokens
    session_token: str
    #: an API token with every scope, made through the API with the session token: logging
    #: out (`POST /v1/auth/revoke`, fuzzed too) leaves it alone, unlike a session
    api_token: str


@pytest.fixture
def fuzz_target(tmp_path: Path) -> Iterator[FuzzTarget]:
    state_dir = tmp_path / "state"
    add_user(state_dir, "alice", password=PASSWORD, enable_otp=False, unix_account=None)
    add_project(state_dir, "ai-2026-0042", gpu_hours=1e6, members=["alice"])
    partitions = tmp_path / "partitions.yaml"
    # Every job ends within seconds, whatever time limit the fuzzer asks for.
    partitions.write_text("- {name: gpu, gpus: 4, gpu_type: H100, max_time: 5s, default: true}\n")
    # The embedded SFTP endpoint on: `GET /v1/staging` then answers with real data.
    center = start_center(
        state_dir, "--partitions", str(partitions), "--kill-grace", "0.5", "--sftp-port", "0"
    )
    try:
        with httpx.Client(base_url=center.url) as client:
            login = client.post(
                "/v1/auth/token",
                json={"grant_type": "password", "username": "alice", "password": PASSWORD},
            )
            assert login.status_code == 200, login.text
            session = login.json()["access_token"]
            created = client.post(
                "/v1/tokens", json={"name": "fuzz"}, headers={"Authorization": f"Bearer {session}"}
            )
            assert created.status_code == 201, created.text
        yield FuzzTarget(center, session, created.json()["token"])
    finally:
        center.stop()


def _schemathesis(url: str, token: str, workdir: Path, *selection: str) -> str:
    """Run schemathesis over the operations `selection` picks; fail with its report."""
    config = workdir / "schemathesis.toml"
    config.write_text('headers = { Authorization = "Bearer ${KAIC_FUZZ_TOKEN}" }\n')
    env = cli_env(
        KAIC_FUZZ_TOKEN=token,
        SCHEMATHESIS_HOOKS="tests.center.fuzz_hooks",
        NO_COLOR="1",
    )
    env.pop("CI", None)  # schemathesis would switch to its CI output; the report is the same
    command = [
        sys.executable, "-m", "schemathesis.cli", "--config-file", str(config),
        "run", f"{url}/openapi.json", *selection,
        "--checks", ",".join(CHECKS),
        "--phases", "examples,coverage,fuzzing,stateful",
        "--max-examples", str(MAX_EXAMPLES),
        "--seed", str(SEED),
        "--generation-database", "none",
        "--workers", "1",
        "--request-timeout", "30",
    ]  # fmt: skip
    proc = subprocess.run(
        command, cwd=workdir, env=env, capture_output=True, text=True, timeout=600, check=False
    )
    report = proc.stdout + proc.stderr
    assert token not in report
    assert proc.returncode == 0, report
    # Every operation was reached as the user: none answered only 401/403.
    assert "Authentication failed" not in report, report
    return report


def test_the_api_answers_what_its_document_says(fuzz_target: FuzzTarget, tmp_path: Path) -> None:
    try:
        import schemathesis  # noqa: F401
    except ImportError:
        unavailable("schemathesis is not installed (pip install -e '.[dev]')")
    url = fuzz_target.center.url
    # Every operation the document has is fuzzed: the token routes with the session token,
    # the rest with the API token (counted from the served document, so a new route is in).
    paths = httpx.get(f"{url}/openapi.json").json()["paths"]
    methods = {"get", "put", "post", "delete", "patch", "head", "options"}
    operations = {p: sum(1 for m in ops if m in methods) for p, ops in paths.items()}
    total = sum(operations.values())
    tokens = sum(n for p, n in operations.items() if p.startswith("/v1/tokens"))
    report = _schemathesis(
        url, fuzz_target.api_token, tmp_path, "--exclude-path-regex", "^/v1/tokens"
    )
    assert f"{total - tokens} selected / {total} total" in report, report
    report = _schemathesis(
        url, fuzz_target.session_token, tmp_path, "--include-path-regex", "^/v1/tokens"
    )
    assert f"{tokens} selected / {total} total" in report, report
