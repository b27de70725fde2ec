"""The real-sshd helper refuses to skip silently in CI."""

from __future__ import annotations

import pytest

from tests import sshd


def test_missing_sshd_fails_in_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sshd, "sshd_path", lambda: None)
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="sshd"):
        sshd.require_sshd()


def test_missing_sshd_skips_outside_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sshd, "sshd_path", lambda: None)
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="openssh-server"):
        sshd.require_sshd()
