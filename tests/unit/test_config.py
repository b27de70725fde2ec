"""Profiles config: round trip, corrupt files left alone, profile selection, URL validation."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from kaic import config, urls
from kaic.client import tls
from kaic.config import Config, Profile
from kaic.errors import ConfigError, ExitCode, NotFound, UsageError


def write_config(text: str) -> Path:
    path = config.config_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def two_profiles() -> Config:
    cfg = Config()
    cfg.set_profile(Profile(name="default", center="https://hpc.example.org", username="alice"))
    cfg.set_profile(Profile(name="work", center="http://127.0.0.1:8750", credential_store="file"))
    cfg.save()
    return cfg


def test_dirs_follow_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAIC_CONFIG_DIR", str(tmp_path / "c"))
    monkeypatch.setenv("KAIC_STATE_DIR", str(tmp_path / "s"))
    assert config.config_dir() == tmp_path / "c"
    assert config.state_dir() == tmp_path / "s"
    assert config.config_path() == tmp_path / "c" / "config.toml"
    monkeypatch.delenv("KAIC_CONFIG_DIR")
    assert config.config_dir().name == "kaic"


def test_round_trip_keeps_unknown_keys() -> None:
    path = write_config(
        'current_profile = "work"\n'
        "future_setting = 1\n"
        "[profiles.work]\n"
        'center = "https://hpc.example.org"\n'
        'username = "alice"\n'
        'credential_store = "file"\n'
        'color = "blue"\n'
    )
    cfg = Config.load()
    assert cfg.exists
    assert cfg.current_profile == "work"
    assert cfg.profiles["work"] == Profile(
        name="work",
        center="https://hpc.example.org",
        username="alice",
        credential_store="file",
        extra={"color": "blue"},
    )
    cfg.save()
    again = Config.load()
    assert again == cfg
    assert again.extra == {"future_setting": 1}
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_save_creates_private_dir() -> None:
    two_profiles()
    assert stat.S_IMODE(config.config_dir().stat().st_mode) == 0o700
    assert config.load_config().current_profile == "default"
    assert [p.name for p in config.config_dir().iterdir()] == ["config.toml"]


def test_missing_file_is_empty_config() -> None:
    cfg = Config.load()
    assert not cfg.exists
    assert cfg.profiles == {}
    assert config.resolve_profile(None) is None


def test_corrupt_toml_names_file_and_line_and_is_left_alone() -> None:
    text = '[profiles.default]\ncenter = "https://a.example"\nusername = = "x"\n'
    path = write_config(text)
    before = path.read_bytes()
    with pytest.raises(ConfigError) as info:
        Config.load()
    assert str(path) in info.value.message
    assert "line 3" in info.value.message
    with pytest.raises(ConfigError):
        config.resolve_profile(None)
    assert path.read_bytes() == before


def test_wrong_shape_is_config_error() -> None:
    path = write_config('[profiles.x]\nusername = "alice"\n')
    with pytest.raises(ConfigError) as info:
        Config.load()
    assert str(path) in info.value.message
    assert "'x'" in info.value.message


def test_unknown_profile_lists_choices() -> None:
    two_profiles()
    with pytest.raises(NotFound) as info:
        config.resolve_profile("nope")
    assert info.value.exit_code == ExitCode.NOT_FOUND
    assert "default, work" in info.value.message


def test_unknown_profile_without_config() -> None:
    with pytest.raises(NotFound) as info:
        config.resolve_profile("nope")
    assert "no profiles are configured" in info.value.message


def test_profile_precedence(monkeypatch: pytest.MonkeyPatch) -> None:
    two_profiles()
    resolved = config.resolve_profile(None)
    assert resolved is not None and resolved.name == "default"
    monkeypatch.setenv("KAIC_PROFILE", "work")
    resolved = config.resolve_profile(None)
    assert resolved is not None and resolved.name == "work"
    assert resolved.credential_store == "file"
    resolved = config.resolve_profile("default")
    assert resolved is not None and resolved.name == "default"
    monkeypatch.setenv("KAIC_PROFILE", "missing")
    with pytest.raises(NotFound):
        config.resolve_profile(None)


def test_several_profiles_none_current_is_usage_error() -> None:
    cfg = two_profiles()
    cfg.current_profile = None
    cfg.save()
    with pytest.raises(UsageError):
        config.resolve_profile(None)


def test_malformed_center_in_profile_is_usage_error() -> None:
    path = write_config('current_profile = "bad"\n[profiles.bad]\ncenter = "ftp://x.example"\n')
    with pytest.raises(UsageError) as info:
        config.resolve_profile(None)
    assert "ftp://x.example" in info.value.message
    assert "'bad'" in info.value.message
    assert str(path) in info.value.message


def test_use_profile() -> None:
    two_profiles()
    assert config.use_profile("work").name == "work"
    assert Config.load().current_profile == "work"
    with pytest.raises(NotFound):
        config.use_profile("nope")


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://hpc.example.org", "https://hpc.example.org"),
        ("https://HPC.Example.org/", "https://hpc.example.org"),
        ("HTTP://127.0.0.1:8750", "http://127.0.0.1:8750"),
        ("hpc.example.org", "https://hpc.example.org"),
        ("  https://hpc.example.org:8443  ", "https://hpc.example.org:8443"),
        ("http://[::1]:8750", "http://[::1]:8750"),
    ],
)
def test_valid_center_urls(url: str, expected: str) -> None:
    assert config.validate_center_url(url) == expected


@pytest.mark.parametrize(
    "url",
    [
        "",
        "ftp://hpc.example.org",
        "https://user:pw@hpc.example.org",
        "https://hpc.example.org/v1",
        "https://hpc.example.org?x=1",
        "https://hpc.example.org#frag",
        "https://hpc.example.org:99999",
        "https://",
        "https://:8750",
    ],
)
def test_invalid_center_urls(url: str) -> None:
    with pytest.raises(UsageError) as info:
        config.validate_center_url(url)
    assert "https://host[:port]" in info.value.message
    assert repr(urls.display_url(url)) in info.value.message
    assert "pw" not in info.value.message + (info.value.hint or "")


def test_profile_name_for() -> None:
    assert config.profile_name_for("https://hpc.example.org", "alice") == "default"
    cfg = Config()
    cfg.set_profile(Profile(name="default", center="https://hpc.example.org", username="alice"))
    assert config.profile_name_for("https://hpc.example.org/", "alice", config=cfg) == "default"
    assert config.profile_name_for("http://127.0.0.1:8750", "bob", config=cfg) == "127.0.0.1-8750"
    assert (
        config.profile_name_for("https://other.example.org", "bob", config=cfg)
        == "other.example.org"
    )
    cfg.set_profile(Profile(name="other.example.org", center="https://x.example", username="c"))
    assert (
        config.profile_name_for("https://other.example.org", "bob", config=cfg)
        == "other.example.org-bob"
    )
    assert (
        config.profile_name_for("https://hpc.example.org", "bob", config=cfg) == "hpc.example.org"
    )


def test_invalid_profile_name_is_rejected() -> None:
    cfg = Config()
    with pytest.raises(UsageError):
        cfg.set_profile(Profile(name="../x", center="https://hpc.example.org"))


# -- secrets in URLs, plain http, TLS settings ----------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "https://alice:hunter2@hpc.example.org",
        "alice:hunter2@hpc.example.org",
        "https://alice:hunter2@hpc.example.org:99999",
        "https://alice:hun/ter2@hpc.example.org",
        "http://alice:hunter2@127.0.0.1:8750/v1",
        "https://:hunter2@hpc.example.org",
        "https://hunter2@hpc.example.org",
    ],
)
def test_url_with_credentials_is_refused_without_echoing_them(url: str) -> None:
    with pytest.raises(UsageError) as info:
        config.validate_center_url(url)
    shown = info.value.message + (info.value.hint or "")
    assert info.value.exit_code == ExitCode.USAGE
    assert "user name or password" in info.value.message
    for part in ("hunter2", "hun", "ter2", "alice"):
        assert part not in shown


def test_display_url_masks_everything_before_the_last_at() -> None:
    assert urls.display_url("https://a:b@c@host:1") == "https://***@host:1"
    assert urls.display_url("a:b@host") == "***@host"
    assert urls.display_url("https://host:8443") == "https://host:8443"


def test_profile_with_credentials_in_center_is_refused_without_echo() -> None:
    write_config('[profiles.x]\ncenter = "https://bob:s3cret@hpc.example.org"\n')
    with pytest.raises(UsageError) as info:
        config.resolve_profile(None)
    assert "s3cret" not in info.value.message + (info.value.hint or "")
    assert "'x'" in info.value.message


@pytest.mark.parametrize(
    "url",
    [
        "http://example.invalid",
        "http://hpc.example.org:8750",
        "http://10.0.0.1:8750",
        "http://0.0.0.0:8750",
        "http://127.evil.example",  # a name, however it looks: decided by address
        "http://localhost.example.org",
        "http://[::2]:8750",
        "http://[fe80::1]:8750",
    ],
)
def test_plain_http_to_a_non_loopback_host_is_refused(url: str) -> None:
    with pytest.raises(UsageError) as info:
        tls.check_plain_http(url, tls.TransportPolicy())
    text = info.value.message + (info.value.hint or "")
    assert "plain http" in info.value.message and "not a loopback" in info.value.message
    assert "--insecure-http" in text and "KAIC_INSECURE_HTTP=1" in text
    # Allowed (and reported as insecure) only under the explicit opt-out.
    assert tls.check_plain_http(url, tls.TransportPolicy(insecure_http=True)) is True


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8750",
        "http://127.3.4.5:1",
        "http://[::1]:8750",
        "http://localhost:8750",
        "https://hpc.example.org",
        "https://10.0.0.1:8443",
    ],
)
def test_loopback_and_https_need_no_opt_out(url: str) -> None:
    assert tls.check_plain_http(url, tls.TransportPolicy()) is False


def test_transport_policy_precedence(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    prof = Profile(name="work", center="https://c.example", ca_bundle="/p/ca.pem")
    policy = tls.transport_policy(prof)
    assert (policy.ca_bundle, policy.ca_bundle_from) == ("/p/ca.pem", "profile 'work'")
    assert not policy.insecure_http
    monkeypatch.setenv("KAIC_CA_BUNDLE", "/env/ca.pem")
    assert tls.transport_policy(prof).ca_bundle == "/env/ca.pem"  # env wins over profile
    flagged = tls.transport_policy(prof, ca_bundle="/flag/ca.pem")
    assert (flagged.ca_bundle, flagged.ca_bundle_from) == ("/flag/ca.pem", "--ca-bundle")
    assert tls.transport_policy(None).ca_bundle == "/env/ca.pem"

    insecure = Profile(name="lab", center="http://lab.example", insecure_http=True)
    assert tls.transport_policy(insecure).insecure_http
    assert not tls.transport_policy(None).insecure_http
    monkeypatch.setenv("KAIC_INSECURE_HTTP", "1")
    assert tls.transport_policy(None).insecure_http_from == "KAIC_INSECURE_HTTP=1"
    monkeypatch.setenv("KAIC_INSECURE_HTTP", "0")
    assert not tls.transport_policy(None).insecure_http
    monkeypatch.setenv("KAIC_INSECURE_HTTP", "maybe")
    with pytest.raises(UsageError, match="KAIC_INSECURE_HTTP"):
        tls.transport_policy(None)


def test_tls_settings_round_trip_and_types() -> None:
    cfg = Config()
    cfg.set_profile(
        Profile(
            name="lab", center="http://lab.example:8750", ca_bundle="/x.pem", insecure_http=True
        )
    )
    cfg.save()
    again = Config.load().profiles["lab"]
    assert (again.ca_bundle, again.insecure_http, again.extra) == ("/x.pem", True, {})
    write_config('[profiles.x]\ncenter = "https://a.example"\ninsecure_http = "yes"\n')
    with pytest.raises(ConfigError, match="insecure_http"):
        Config.load()
    write_config('[profiles.x]\ncenter = "https://a.example"\nca_bundle = 1\n')
    with pytest.raises(ConfigError, match="ca_bundle"):
        Config.load()
