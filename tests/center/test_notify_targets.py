"""Where a center lets notifications go (`--notify-allow`, `--smtp-relay`), and what the
settings refuse at start."""

from __future__ import annotations

from pathlib import Path

import pytest

from kaic.center.notify.targets import AllowList, parse_relay, shown, webhook_refusal
from kaic.center.settings import CenterSettings


def test_an_allow_list_matches_names_their_subdomains_and_addresses() -> None:
    allowed = AllowList(["hooks.example.org", "10.1.0.0/16", "2001:db8::1"])
    assert allowed.allows("hooks.example.org") and allowed.allows("a.b.hooks.example.org")
    assert allowed.allows("HOOKS.example.org.")
    assert not allowed.allows("evilhooks.example.org") and not allowed.allows("example.org")
    assert allowed.allows("10.1.200.3") and not allowed.allows("10.2.0.1")
    assert allowed.allows("2001:db8::1") and not allowed.allows("::1")
    # A name is never resolved: an address is allowed only by an address entry.
    assert not AllowList(["hooks.example.org"]).allows("127.0.0.1")
    assert AllowList([]).allows("anything.example.org")


@pytest.mark.parametrize("entry", ["", "http://x.org", "a b", ".example.org", "me@x.org"])
def test_a_bad_allow_list_entry_is_refused(entry: str) -> None:
    with pytest.raises(ValueError):
        AllowList([entry])


def test_webhook_refusals() -> None:
    allowed = AllowList(["hooks.example.org"])
    assert webhook_refusal("https://hooks.example.org/x", allowed) is None
    refusal = webhook_refusal("https://other.example.org/x", allowed)
    assert refusal is not None and "not 'other.example.org'" in refusal
    refusal = webhook_refusal("javascript:alert(1)", AllowList([]))
    assert refusal is not None and "http:// and https://" in refusal


def test_events_show_a_webhook_without_its_path_or_credentials() -> None:
    assert shown("https://u:pw@hooks.example.org:8443/T0/B1/secret?x=1") == (
        "https://hooks.example.org:8443"
    )


def test_relays() -> None:
    assert parse_relay("mail.example.org:25") == ("mail.example.org", 25)
    assert parse_relay("[2001:db8::5]:587") == ("2001:db8::5", 587)
    for bad in ("mail.example.org", ":25", "mail:0", "mail:x"):
        with pytest.raises(ValueError):
            parse_relay(bad)


def test_settings_refuse_a_relay_without_a_from_address(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="--smtp-from"):
        CenterSettings(state_dir=tmp_path, smtp_relay="127.0.0.1:25")
    with pytest.raises(ValueError, match="HOST:PORT"):
        CenterSettings(state_dir=tmp_path, smtp_relay="nowhere", smtp_from="k@x.org")
    with pytest.raises(ValueError, match="neither a host name"):
        CenterSettings(state_dir=tmp_path, notify_allow=["http://x.org"])
    CenterSettings(state_dir=tmp_path, smtp_relay="127.0.0.1:25", smtp_from="k@x.org")


def test_the_notifier_knows_a_job_without_notify_from_its_stored_submission() -> None:
    from kaic.center.notify.worker import _NO_NOTIFY
    from kaic.models import JobSubmit

    assert _NO_NOTIFY in JobSubmit(run="true").model_dump_json()
    notified = JobSubmit.model_validate({"run": "true", "notify": {"email": "a@b.org"}})
    assert _NO_NOTIFY not in notified.model_dump_json()


def test_an_open_allow_list_still_refuses_the_centers_own_machine() -> None:
    """Without --notify-allow any receiver is allowed — except the center's own loopback
    services and the link-local metadata address, which a user could otherwise probe."""
    from kaic.center.notify.targets import AllowList

    open_list = AllowList([])
    for host in ("127.0.0.1", "::1", "localhost", "169.254.169.254", "0.0.0.0", "::ffff:127.0.0.1"):
        assert not open_list.allows(host), host
    assert open_list.allows("hooks.example.org") and open_list.allows("10.1.2.3")
    assert AllowList(["127.0.0.1"]).allows("127.0.0.1")  # an operator may allow it
