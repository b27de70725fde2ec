"""Center URLs: one normal form, shown without secrets, and whether they stay on this machine.

Stdlib only (and `kaic.errors`): the config, the API client's TLS policy and the flows all
need these, and none of them may import another for it.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from kaic.errors import UsageError

_CENTER_FORM = "https://host[:port]"


def display_url(url: str) -> str:
    """`url` fit to show in a message or a log: a ``user:password@`` part becomes ``***@``.

    Works on text that is not a valid URL too (errors echo what the user typed): everything
    between the scheme and the last ``@`` is masked, so no part of a password survives.
    """
    if "@" not in url:
        return url
    scheme, sep, rest = url.partition("://")
    prefix = scheme + sep if sep else ""
    return prefix + "***@" + (rest if sep else url).rsplit("@", 1)[1]


def validate_center_url(url: str) -> str:
    """Normalise a center URL to ``scheme://host[:port]`` or raise UsageError.

    Accepts http and https URLs naming only a host and an optional port (a trailing ``/`` is
    dropped). A bare host name (``hpc.example.org``) is taken to mean https. Credentials,
    paths, queries and fragments are rejected because they would silently be ignored or leak;
    the URL is echoed in errors only through `display_url`, so a password in it never is.
    Whether plain http may be used with the host is `check_plain_http`'s decision.
    """
    raw = url.strip()

    def bad(why: str, hint: str | None = None) -> UsageError:
        return UsageError(
            f"invalid center URL {display_url(url)!r}: {why}; expected the form {_CENTER_FORM}",
            hint=hint or f"for example: https://hpc.example.org or http://127.0.0.1:8750 ({why})",
        )

    def credentials() -> UsageError:
        return bad(
            "it must not contain a user name or password",
            hint="give the URL without them and log in with `kaic login --username NAME`",
        )

    if not raw:
        raise bad("it is empty")
    if "://" not in raw:
        raw = "https://" + raw
    # Before any other parsing, whose errors quote parts of the URL: a center URL has no use
    # for "@", and wherever it stands (`user:pa/ss@host` puts it in the "path") what comes
    # before it may be a password.
    if "@" in raw:
        raise credentials()
    try:
        parts = urlsplit(raw)
        port = parts.port
    except ValueError as exc:
        raise bad(str(exc)) from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise bad(f"scheme {parts.scheme!r} is not http or https")
    if parts.username is not None or parts.password is not None:
        raise credentials()
    host = parts.hostname
    if not host:
        raise bad("it has no host")
    if parts.path not in ("", "/"):
        raise bad(f"unexpected path {parts.path!r}")
    if parts.query or parts.fragment:
        raise bad("unexpected query or fragment")
    if any(c.isspace() for c in host) or "/" in host or "@" in host:
        raise bad(f"invalid host {host!r}")
    netloc = f"[{host}]" if ":" in host else host
    if port is not None:
        netloc = f"{netloc}:{port}"
    return f"{scheme}://{netloc}"


def is_loopback_url(url: str) -> bool:
    """Whether `url` names a loopback address (127.0.0.0/8, ::1) or ``localhost``.

    Decided by the address written in the URL, never by resolving a name: a host called
    ``127.evil.example`` is not loopback. The one such check: it guards the local center's
    token and decides where plain http is acceptable.
    """
    import ipaddress

    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a name such as 127.evil.example is not an address
        return False
