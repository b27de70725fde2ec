"""The TLS policy of the API client: which CAs it trusts, where plain http is allowed, and
what a failed TLS handshake is reported as.

TLS is verified by default (against a `--ca-bundle` / ``KAIC_CA_BUNDLE`` file, ``SSL_CERT_FILE``
/ ``SSL_CERT_DIR``, or certifi's bundle), and plain http is refused to a center that is not
loopback unless the user opted out — `check_plain_http`, which `CenterClient` calls when it is
built, before any connection, so no password or token can leave by another path.
"""

from __future__ import annotations

import os
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol
from urllib.parse import urlsplit, urlunsplit

from kaic.errors import TlsError, UsageError
from kaic.urls import display_url, is_loopback_url

CA_BUNDLE_ENV = "KAIC_CA_BUNDLE"
INSECURE_HTTP_ENV = "KAIC_INSECURE_HTTP"
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("", "0", "false", "no", "off")


@dataclass(frozen=True)
class TransportPolicy:
    """How the client may talk to one center: which CAs it trusts, whether plain http is
    allowed to a host that is not loopback. `*_from` say where a setting came from, for
    messages ("KAIC_CA_BUNDLE", "--ca-bundle", "profile 'work'")."""

    #: a PEM file of CA certificates trusted *instead of* the default ones; None = default
    #: (certifi's bundle, or `SSL_CERT_FILE` / `SSL_CERT_DIR` when set)
    ca_bundle: str | None = None
    ca_bundle_from: str | None = None
    #: the user's explicit opt-out: plain http to a non-loopback center is allowed
    insecure_http: bool = False
    insecure_http_from: str | None = None


def env_flag(name: str) -> bool:
    """A yes/no environment variable (1/true/yes/on, or 0/false/no/off/empty); UsageError
    for anything else, so a typo never silently means "no"."""
    value = os.environ.get(name, "").strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise UsageError(f"{name} must be 1 or 0, not {value!r}", hint=f"set {name}=1 or unset it")


class ProfileTls(Protocol):
    """What `transport_policy` reads of a profile (`kaic.config.Profile` has these)."""

    name: str
    ca_bundle: str | None
    insecure_http: bool


def transport_policy(
    profile: ProfileTls | None = None,
    *,
    ca_bundle: str | None = None,
    insecure_http: bool = False,
) -> TransportPolicy:
    """The TLS and plain-http settings for a center.

    CA bundle: `ca_bundle` (a command-line flag) > ``$KAIC_CA_BUNDLE`` > the profile's
    ``ca_bundle``. Plain http to a non-loopback host is allowed when any of `insecure_http`
    (``kaic login --insecure-http``), ``$KAIC_INSECURE_HTTP`` or the profile's
    ``insecure_http`` says so. Pass a profile only for its own center: its settings must not
    follow ``$KAIC_CENTER`` to another one.
    """
    env_bundle = os.environ.get(CA_BUNDLE_ENV, "").strip()
    bundle, bundle_from = None, None
    if ca_bundle:
        bundle, bundle_from = ca_bundle, "--ca-bundle"
    elif env_bundle:
        bundle, bundle_from = env_bundle, CA_BUNDLE_ENV
    elif profile is not None and profile.ca_bundle:
        bundle, bundle_from = profile.ca_bundle, f"profile {profile.name!r}"
    if bundle is not None:
        bundle = str(Path(bundle).expanduser())
    insecure_from = None
    if insecure_http:
        insecure_from = "--insecure-http"
    elif env_flag(INSECURE_HTTP_ENV):
        insecure_from = f"{INSECURE_HTTP_ENV}=1"
    elif profile is not None and profile.insecure_http:
        insecure_from = f"profile {profile.name!r} (insecure_http = true)"
    return TransportPolicy(
        ca_bundle=bundle,
        ca_bundle_from=bundle_from,
        insecure_http=insecure_from is not None,
        insecure_http_from=insecure_from,
    )


def check_plain_http(center_url: str, policy: TransportPolicy) -> bool:
    """Refuse plain http to a center that is not loopback unless the user opted out.

    Passwords and tokens must not cross a network unencrypted; loopback never leaves the
    machine. Returns True when plain http to a non-loopback host goes ahead under the
    opt-out (the caller warns); raises UsageError, naming the opt-out, when it may not.
    """
    parts = urlsplit(center_url)
    if parts.scheme != "http" or is_loopback_url(center_url):
        return False
    if policy.insecure_http:
        return True
    secure = urlunsplit(("https", parts.netloc, "", "", ""))
    raise UsageError(
        f"refusing to talk to the center at {display_url(center_url)} over plain http: "
        f"{parts.hostname} is not a loopback address, and passwords and tokens would cross "
        "the network unencrypted",
        hint=f"use {secure}; only on a network you trust, opt out with "
        f"`kaic login --center {display_url(center_url)} --insecure-http` (stored in the "
        f"profile) or {INSECURE_HTTP_ENV}=1",
    )


def plain_http_context() -> ssl.SSLContext:
    """A TLS context that is never used: for a plain-http center (the loopback local center)
    it spares loading the CA bundle, a third of `kaic jobs`' time. https keeps full checks."""
    return ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)


def tls_context(policy: TransportPolicy) -> ssl.SSLContext:
    """The verifying TLS context for an https center; UsageError for an unusable CA bundle.

    Trusts, in this order: the policy's CA bundle (`--ca-bundle` / ``KAIC_CA_BUNDLE`` / the
    profile; it replaces the default CAs, as curl's ``--cacert`` does), ``SSL_CERT_FILE`` or
    ``SSL_CERT_DIR`` (the OpenSSL convention, honoured here whatever httpx version is
    installed), else certifi's bundle (httpx's default). Host names are always checked.
    """
    cafile: str | None = None
    capath: str | None = None
    if policy.ca_bundle:
        cafile, source = policy.ca_bundle, policy.ca_bundle_from or "--ca-bundle"
    elif os.environ.get("SSL_CERT_FILE"):
        cafile, source = os.environ["SSL_CERT_FILE"], "SSL_CERT_FILE"
    elif os.environ.get("SSL_CERT_DIR"):
        capath, source = os.environ["SSL_CERT_DIR"], "SSL_CERT_DIR"
    else:
        import certifi

        cafile, source = certifi.where(), "certifi"
    where = cafile or capath
    hint = f"point {source} at a readable PEM file of CA certificates, or unset it"
    if source == "--ca-bundle" or source.startswith("profile"):
        hint = "pass a readable PEM file of CA certificates with `kaic login --ca-bundle FILE`"
    if cafile is not None and os.path.isdir(cafile):
        raise UsageError(f"the CA bundle {cafile} (from {source}) is a directory", hint=hint)
    try:
        return ssl.create_default_context(cafile=cafile, capath=capath)
    except ssl.SSLError:  # before OSError, its base class
        raise UsageError(
            f"the CA bundle {where} (from {source}) holds no PEM CA certificate", hint=hint
        ) from None
    except OSError as exc:
        raise UsageError(
            f"cannot read the CA bundle {where} (from {source}): {exc.strerror or exc}",
            hint=hint,
        ) from None


# A TLS connection cut short (a center restarting mid-handshake): as transient as a reset.
_TRANSIENT_SSL = (ssl.SSLEOFError, ssl.SSLZeroReturnError, ssl.SSLSyscallError)


def ssl_failure(exc: BaseException) -> ssl.SSLError | None:
    """The ssl error behind a transport failure (httpx wraps it) when TLS itself failed — a
    certificate not trusted, no TLS on the port — and so will fail again every time."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, ssl.SSLError):
            return None if isinstance(current, _TRANSIENT_SSL) else current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


# OpenSSL's X509_V_ERR_* codes that users meet, as (what failed, how to fix it).
_EXPIRED = (9, 10)  # not yet valid, expired
_UNKNOWN_CA = (2, 18, 19, 20, 21)  # issuer unknown, self-signed, unable to verify
_WRONG_HOST = (62, 64)  # host name, IP address mismatch


def tls_error(exc: ssl.SSLError, base_url: str, policy: TransportPolicy) -> TlsError:
    """A clear error for a TLS failure with the center at `base_url`: what failed and how to
    fix it (for an unknown CA: give its certificate with `--ca-bundle`)."""
    host = urlsplit(base_url).netloc
    against = (
        f" (checked against the CA bundle {policy.ca_bundle} from {policy.ca_bundle_from})"
        if policy.ca_bundle
        else ""
    )
    bundle_hint = (
        "if the center uses a private CA, give its certificate: `kaic login --center "
        f"{base_url} --ca-bundle ca.pem` (stored in the profile), or KAIC_CA_BUNDLE=ca.pem "
        "(SSL_CERT_FILE works too)"
    )
    if isinstance(exc, ssl.SSLCertVerificationError):
        code = exc.verify_code
        detail = (exc.verify_message or exc.reason or "verification failed").rstrip(".")
        if code in _EXPIRED:
            what, hint = (
                f"it is outside its validity period ({detail})",
                "the center's operators must renew the certificate; if this machine's clock "
                "is wrong, fix it (NTP)",
            )
        elif code in _WRONG_HOST:
            what, hint = (
                f"it was issued for another host name ({detail})",
                "use the host name the certificate names in the center URL",
            )
        elif code in _UNKNOWN_CA:
            what, hint = f"it is signed by an unknown certificate authority ({detail})", bundle_hint
        else:
            what, hint = f"verification failed ({detail})", bundle_hint
        return TlsError(
            f"the TLS certificate of the center at {host} is not trusted: {what}{against}",
            hint=hint,
        )
    reason = exc.reason or str(exc)
    return TlsError(
        f"TLS with the center at {host} failed: {reason}",
        hint="check that the center serves https on that port (a loopback center may be "
        "plain http://)",
    )


def describe_transport(base_url: str, policy: TransportPolicy, insecure_http: bool) -> str:
    """How requests travel, for `kaic doctor`: TLS and which CAs, or plain http."""
    if base_url.startswith("https://"):
        if policy.ca_bundle:
            cas = f"the CA bundle {policy.ca_bundle} ({policy.ca_bundle_from})"
        elif os.environ.get("SSL_CERT_FILE") or os.environ.get("SSL_CERT_DIR"):
            cas = "SSL_CERT_FILE/SSL_CERT_DIR"
        else:
            cas = "the default CAs"
        return f"TLS, certificate verified against {cas}"
    if insecure_http:
        return f"plain http, NOT encrypted ({policy.insecure_http_from})"
    return "plain http on loopback"
