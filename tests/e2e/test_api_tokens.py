"""API tokens for CI through the CLI: create, use via KAIC_TOKEN, list, revoke, scopes."""

from __future__ import annotations

import os

from tests.e2e.test_login import Alice, login
from tests.helpers import run_cli


def test_token_lifecycle_and_env_source(alice: Alice) -> None:
    center, user, password = alice
    login(center, user, password)
    created = run_cli("token", "create", "ci-main", "--scope", "jobs:read", "--json").json()
    assert isinstance(created, dict)
    secret = created["token"]
    assert secret.startswith("kaic_") and created["scopes"] == ["jobs:read"]

    listed = run_cli("token", "list", "--json").json()
    assert [t["name"] for t in listed] == ["ci-main"]  # type: ignore[union-attr,index]
    assert secret not in run_cli("token", "list", "--json").stdout  # shown once only

    ci_env = {**os.environ, "KAIC_CENTER": center.url, "KAIC_TOKEN": secret}
    me = run_cli("whoami", "--json", env=ci_env).json()
    assert me["token_source"] == "env" and me["user"] == "alice"  # type: ignore[index]

    # A scoped API token cannot mint more tokens: rejected (6), not an auth failure.
    res = run_cli("token", "create", "escalate", env=ci_env, expect=6)
    assert "cannot manage tokens" in res.stderr

    run_cli("token", "revoke", created["id"])
    res = run_cli("whoami", env=ci_env, expect=3)
    assert "kaic login" in res.stderr and secret not in res.stderr


def test_token_create_plain_prints_secret_alone_on_stdout(alice: Alice) -> None:
    center, user, password = alice
    login(center, user, password)
    res = run_cli("token", "create", "nightly", "--expires", "7d")
    assert res.stdout.strip().startswith("kaic_") and len(res.stdout.strip().split()) == 1
    assert "not shown again" in res.stderr


def test_token_bad_scope_and_expiry_are_usage_errors(alice: Alice) -> None:
    center, user, password = alice
    login(center, user, password)
    res = run_cli("token", "create", "x", "--scope", "jobs:admin", expect=2)
    assert "jobs:read" in res.stderr
    run_cli("token", "create", "x", "--expires", "forever", expect=2)


def test_revoke_unknown_token_exit_4(alice: Alice) -> None:
    center, user, password = alice
    login(center, user, password)
    run_cli("token", "revoke", "tok_doesnotexist", expect=4)
