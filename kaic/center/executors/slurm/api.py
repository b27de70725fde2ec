"""The slurmrestd client (`SlurmRestClient`): its URLs, headers, submit document and errors.

What a REST version decides lives in three modules, so a version bump changes only them: this
one (the version in the URL, the submit document, how errors are answered), `records` (how
`/jobs`, `/nodes` and `/partitions` spell their fields, how exit codes and numbers are
encoded) and `states` (the state table). The rest of the center sees plain dataclasses
(`SubmitRequest` here; `SlurmJob`, `SlurmNode`, `SlurmPartition` in `records`). Written
against v0.0.38 (Slurm 22.05); the readers in `records` also accept the shapes of v0.0.40+
(23.11+).

Authentication: a JWT for a Slurm operator (the SlurmUser or root) in `X-SLURM-USER-TOKEN`,
and in `X-SLURM-USER-NAME` the user a request acts as (the job's unix account for submit and
cancel, the token's own user for reads).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from kaic.center.executors.slurm.records import (
    SlurmJob,
    SlurmNode,
    SlurmPartition,
    decode_number,
    parse_job,
    parse_node,
    parse_partition,
)

API_VERSION = "v0.0.38"
#: Slurm's error number for "Invalid job id specified" (ESLURM_INVALID_JOB_ID)
INVALID_JOB_ID = 2017


class SlurmApiError(Exception):
    """slurmrestd answered, but refused or failed the request; the message says why."""

    def __init__(self, message: str, *, status: int | None = None, number: int | None = None):
        super().__init__(message)
        self.status = status
        self.number = number


class SlurmUnavailable(SlurmApiError):
    """slurmrestd could not be reached, timed out or failed without saying why: retry later.

    `sent` is True when the request may have reached Slurm (a submit may have happened).
    """

    def __init__(self, message: str, *, sent: bool = False):
        super().__init__(message)
        self.sent = sent


class SlurmJobNotFound(SlurmApiError):
    """Slurm does not know the job (never did, or purged it after MinJobAge)."""


@dataclass(frozen=True)
class SubmitRequest:
    """One batch job (or array) to submit, in Slurm's terms but no REST version's."""

    name: str
    script: str
    workdir: str
    stdout: str
    stderr: str
    environment: Mapping[str, str]
    time_limit_minutes: int | None = None
    partition: str | None = None
    gpus_per_node: int = 0
    nodes: int = 1
    array: str | None = None
    dependency: str | None = None
    account: str | None = None
    comment: str | None = None


def build_submit(request: SubmitRequest) -> dict[str, Any]:
    """The v0.0.38 `POST /job/submit` document for `request`."""
    job: dict[str, Any] = {
        "name": request.name,
        "current_working_directory": request.workdir,
        "standard_output": request.stdout,
        "standard_error": request.stderr,
        "environment": dict(request.environment),
        # A job whose dependency can never be satisfied ends instead of pending forever.
        "kill_on_invalid_dependency": True,
        "requeue": False,
    }
    if request.time_limit_minutes is not None:
        job["time_limit"] = request.time_limit_minutes
    if request.partition:
        job["partition"] = request.partition
    if request.gpus_per_node > 0:
        job["gres"] = f"gpu:{request.gpus_per_node}"
    if request.nodes > 1:
        # As text, like `sbatch -N 2`: slurmrestd 22.05 reads the documented [min, max]
        # array as one node (measured: a `[2, 2]` job ran on n1 alone).
        job["nodes"] = str(request.nodes)
    if request.array:
        job["array"] = request.array
    if request.dependency:
        job["dependency"] = request.dependency
    if request.account:
        job["account"] = request.account
    if request.comment:
        job["comment"] = request.comment
    return {"job": job, "script": request.script}


def token_user(token: str) -> str | None:
    """The user a Slurm JWT was made for (its `sun` claim), without verifying it."""
    try:
        payload = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (IndexError, ValueError):
        return None
    user = claims.get("sun") if isinstance(claims, dict) else None
    return str(user) if user else None


def _errors(body: object) -> list[dict[str, Any]]:
    if isinstance(body, dict):
        errors = body.get("errors") or []
        return [e for e in errors if isinstance(e, dict)]
    return []


#: what `_request` returns for 304 Not Modified (compared by identity)
_NOT_MODIFIED: dict[str, Any] = {}


class SlurmRestClient:
    """Synchronous slurmrestd client (used by the scheduler's thread only)."""

    def __init__(
        self,
        url: str,
        token: str,
        *,
        user: str | None = None,
        timeout: float = 10.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self.token = token
        #: the operator the token belongs to (reads are made as this user)
        self.user = user or token_user(token) or "slurm"
        self._http = httpx.Client(
            base_url=self.url, timeout=httpx.Timeout(timeout, connect=3.0), transport=transport
        )

    def close(self) -> None:
        self._http.close()

    def _request(
        self,
        method: str,
        path: str,
        *,
        user: str | None = None,
        body: object = None,
        params: Mapping[str, str] | None = None,
    ) -> dict[str, Any]:
        headers = {
            "X-SLURM-USER-TOKEN": self.token,
            "X-SLURM-USER-NAME": user or self.user,
        }
        url = f"/slurm/{API_VERSION}{path}"
        try:
            response = self._http.request(method, url, headers=headers, json=body, params=params)
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            raise SlurmUnavailable(f"cannot reach slurmrestd at {self.url}: {exc}") from exc
        except httpx.HTTPError as exc:
            # The request went out: it may have taken effect.
            raise SlurmUnavailable(
                f"slurmrestd at {self.url} did not answer: {exc!r}", sent=True
            ) from exc
        if response.status_code == 304:  # Not Modified (`update_time`): no body
            return _NOT_MODIFIED
        try:
            data = response.json()
        except ValueError:
            data = None
        errors = _errors(data)
        if response.status_code in (401, 403):
            # The center's credentials, not the job, are at fault: retry once they are fixed.
            raise SlurmUnavailable(
                f"slurmrestd refused the credentials (HTTP {response.status_code}): check "
                "KAIC_SLURM_JWT (a token of the SlurmUser) and that it has not expired"
            )
        if errors:
            first = errors[0]
            number = decode_number(first.get("error_number") or first.get("error_code"))
            text = first.get("description") or first.get("error") or str(first)
            if number == INVALID_JOB_ID:
                raise SlurmJobNotFound(str(text), status=response.status_code, number=number)
            raise SlurmApiError(str(text), status=response.status_code, number=number)
        if response.status_code >= 500 or data is None:
            raise SlurmUnavailable(
                f"slurmrestd answered HTTP {response.status_code} without a usable body",
                sent=True,
            )
        if response.status_code >= 400:
            raise SlurmApiError(f"HTTP {response.status_code}", status=response.status_code)
        assert isinstance(data, dict)
        return data

    # -- operations ----------------------------------------------------------------------

    def submit(self, user: str, request: SubmitRequest) -> int:
        """Submit as `user` (a unix account); returns Slurm's job id."""
        data = self._request("POST", "/job/submit", user=user, body=build_submit(request))
        job_id = decode_number(data.get("job_id"))
        if job_id is None:
            raise SlurmApiError(f"slurmrestd accepted the job but sent no job id: {data!r:.200}")
        return job_id

    def cancel(self, user: str, job_id: str) -> None:
        """Cancel a job or one array task ("12_3"), as `user`; Slurm sends SIGTERM, then
        SIGKILL after its KillWait."""
        self._request("DELETE", f"/job/{job_id}", user=user)

    def jobs(self, *, changed_since: int | None = None) -> list[SlurmJob] | None:
        """Every job Slurm knows (one call). With `changed_since` (epoch seconds,
        `update_time`): None when no job changed since then — slurmctld answers "no change"
        and slurmrestd 304 without a body, instead of every job's record (3.6 kB each in
        v0.0.38: 36 MB for 10,000 jobs) —, else every job as without it."""
        params = None if changed_since is None else {"update_time": str(changed_since)}
        data = self._request("GET", "/jobs", params=params)
        if data is _NOT_MODIFIED:
            return None
        return [parse_job(doc) for doc in data.get("jobs") or []]

    def job(self, job_id: str) -> list[SlurmJob]:
        """The records of one job (several for an array); SlurmJobNotFound if none."""
        data = self._request("GET", f"/job/{job_id}")
        jobs = [parse_job(doc) for doc in data.get("jobs") or []]
        if not jobs:
            raise SlurmJobNotFound(f"Slurm does not know job {job_id}")
        return jobs

    def nodes(self) -> list[SlurmNode]:
        data = self._request("GET", "/nodes")
        return [parse_node(doc) for doc in data.get("nodes") or []]

    def partitions(self) -> list[SlurmPartition]:
        data = self._request("GET", "/partitions")
        return [parse_partition(doc) for doc in data.get("partitions") or []]


def dependency_clause(slurm_ids: Sequence[str]) -> str | None:
    """Slurm's dependency string for "after all of these completed successfully"."""
    return "afterok:" + ":".join(slurm_ids) if slurm_ids else None
