"""Where a center lets job-end notifications go: the webhook hosts of `--notify-allow`, and
mail only through a configured relay (`--smtp-relay`). Checked at submit (a job asking for
what the center will not do is refused, saying why) and again before each send (the
settings may have changed across a restart).

An allow-list entry is a host name, which matches itself and its subdomains
(`hooks.example.org` allows `a.hooks.example.org`), or an address or CIDR, which matches
URLs that name such an address literally. Names are not resolved: a site that must keep
webhooks off its internal network lists the outside hosts it allows.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from urllib.parse import urlsplit

from kaic.models.followup import Notify, webhook_problem

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def parse_relay(text: str) -> tuple[str, int]:
    """`host:port` (`[v6]:port`) of an SMTP relay; ValueError says what is wrong."""
    host, sep, port = text.strip().rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"the SMTP relay must be HOST:PORT (got {text!r})")
    return host, int(port)


class AllowList:
    """`--notify-allow` entries; empty allows every host."""

    def __init__(self, entries: Sequence[str]) -> None:
        self.names: list[str] = []
        self.networks: list[IPNetwork] = []
        for entry in entries:
            text = entry.strip().lower().rstrip(".")
            if not text:
                raise ValueError("an empty --notify-allow entry")
            try:
                self.networks.append(ipaddress.ip_network(text, strict=False))
            except ValueError:
                if any(c in text for c in "/:@ ") or text.startswith("."):
                    raise ValueError(
                        f"--notify-allow {entry!r} is neither a host name, an address nor a CIDR"
                    ) from None
                self.names.append(text)

    @property
    def open(self) -> bool:
        return not self.names and not self.networks

    def allows(self, host: str) -> bool:
        host = host.lower().rstrip(".")
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            if self.open:  # `localhost` is the center's own machine, not a user's receiver
                return host != "localhost" and not host.endswith(".localhost")
            return any(host == n or host.endswith(f".{n}") for n in self.names)
        if self.open:
            # The center's own loopback services (slurmrestd, the SFTP endpoint) and the cloud
            # metadata address are no user's receivers: an operator allows them by name.
            return not _internal(address)
        return any(address in network for network in self.networks)


def _internal(address: IPAddress) -> bool:
    mapped = getattr(address, "ipv4_mapped", None)
    real = mapped if mapped is not None else address
    return real.is_loopback or real.is_link_local or real.is_unspecified


def webhook_refusal(url: str, allowed: AllowList) -> str | None:
    """Why the center will not send to `url` (None: it will)."""
    problem = webhook_problem(url)
    if problem:
        return f"webhook {problem}"
    host = urlsplit(url).hostname or ""
    if not allowed.allows(host):
        return (
            f"this center sends webhooks only to its allowed hosts, not {host!r} "
            "(ask its operator, or use another target)"
        )
    return None


def notify_refusal(notify: Notify, allowed: AllowList, smtp_relay: str | None) -> str | None:
    """Why the center refuses a job's `notify:` (None: it accepts it)."""
    if notify.email is not None and smtp_relay is None:
        return (
            "this center sends no mail (no SMTP relay is configured): use notify.webhook, "
            "or ask its operator for `--smtp-relay`"
        )
    if notify.webhook is not None:
        return webhook_refusal(notify.webhook, allowed)
    return None


def shown(url: str) -> str:
    """A webhook as events show it: scheme and host only (its path may hold a secret)."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}"
