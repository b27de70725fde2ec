"""The health area of the center API: `GET /v1/health` (no auth).

`local_instance_answers` is the one call made without httpx: it runs on every command that
uses the embedded local center (is it still there?), which is plain http on loopback, and
importing httpx for it would cost more than the request.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from kaic.client.api import CenterClient
    from kaic.models import Health

HEALTH_PATH = "/v1/health"


@dataclass(frozen=True)
class HealthCheck:
    """The center's health, its clock (the ``Date`` header) and the round trip it took."""

    health: Health
    date_header: str | None
    round_trip_ms: float


class HealthAPI:
    """`GET /v1/health` of one center."""

    def __init__(self, client: CenterClient) -> None:
        self.client = client

    def check(self) -> HealthCheck:
        """The center's health, with its Date header and the round trip (`kaic doctor`)."""
        from kaic.models import Health

        started = time.monotonic()
        response = self.client.request("GET", HEALTH_PATH, auth=False)
        round_trip_ms = (time.monotonic() - started) * 1000
        health = self.client.parse(response, Health)
        return HealthCheck(health, response.headers.get("Date"), round_trip_ms)


def local_instance_answers(url: str, instance_id: str, *, timeout: float = 2.0) -> bool:
    """The center at `url` (plain http) answers its health check as instance `instance_id`."""
    import http.client
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=timeout)
    try:
        conn.request("GET", HEALTH_PATH)
        resp = conn.getresponse()
        body = json.loads(resp.read() or b"{}")
        return resp.status == 200 and body.get("instance_id") == instance_id
    except (OSError, ValueError, http.client.HTTPException):
        return False
    finally:
        conn.close()
