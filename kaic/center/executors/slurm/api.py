"""The slurmrestd adapter: the one module that knows slurmrestd's paths and field names.

Everything version-specific lives here (and the state table in `states`): the REST
version in the URL, the submit document, how `/jobs`, `/nodes` and `/partitions` spell their
fields, how exit codes and numbers are encoded. The rest of the center sees plain
dataclasses (`SlurmJob`, `SlurmNode`, `SlurmPartition`, `SubmitRequest`). Written against
v0.0.38 (Slurm 22.05); the readers also accept the shapes of v0.0.40+ (23.11+): `job_state`
as a list of flags, numbers as `{"set", "infinite", "number"}` objects, exit codes as
`{"status", "return_code", "signal"}`, so a version bump is a change to this file only.

Authentication: a JWT for a Slurm operator (the SlurmUser or root) in `X-SLURM-USER-TOKEN`,
and in `X-SLURM-USER-NAME` the user a request acts as (the job's unix account for submit and
cancel, the token's own user for reads). (At the ~450-line budget: the readers of both API
versions belong with the client that calls them.)
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from kaic.center.executors.slurm.hostlist import expand_hostlist
from kaic.center.executors.slurm.states import SlurmState, parse_job_state

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


@dataclass(frozen=True)
class SlurmJob:
    """One record of `GET /jobs`: a job, an array task, or an array's pending remainder."""

    job_id: int
    state: SlurmState
    state_reason: str | None = None
    #: the array's id (the first task's job id), None for a plain job
    array_job_id: int | None = None
    #: the task index of this record, None for a plain job or an array's pending remainder
    array_task_id: int | None = None
    #: indices of the array tasks still pending in this record (the remainder)
    pending_tasks: tuple[int, ...] = ()
    #: the exit status of the batch script, and the signal that killed it
    exit_code: int | None = None
    signal: int | None = None
    user: str | None = None
    comment: str | None = None
    name: str | None = None
    partition: str | None = None
    #: GPU indices on the node, from `gres_detail` ("gpu:2(IDX:0-1)")
    gpu_ids: tuple[int, ...] = ()
    #: the names of the nodes it runs on (its `nodes` host list expanded)
    nodes: tuple[str, ...] = ()
    #: when Slurm started and ended the job (Unix seconds; None = not yet / unknown)
    start_time: int | None = None
    end_time: int | None = None
    #: how many times Slurm requeued the job itself (`restart_cnt`)
    restarts: int = 0


@dataclass(frozen=True)
class SlurmNode:
    name: str
    state: str
    partitions: tuple[str, ...]
    gpus: int
    gpus_used: int
    gpu_type: str | None = None


@dataclass(frozen=True)
class SlurmPartition:
    name: str
    #: minutes; None = unlimited
    max_time_minutes: int | None
    default: bool
    state: str = "UP"


# -- value decoding (both REST generations) ----------------------------------------------


def _number(value: object) -> int | None:
    """An integer field: plain (v0.0.38; -1 or NO_VAL means unset) or `{"set", "infinite",
    "number"}` (v0.0.40+)."""
    if isinstance(value, dict):
        if not value.get("set", True) or value.get("infinite"):
            return None
        value = value.get("number")
    if isinstance(value, bool) or value is None:
        return None
    try:
        number = int(value)  # type: ignore[call-overload]
    except (TypeError, ValueError):
        return None
    # NO_VAL / INFINITE sentinels of the 32- and 64-bit kinds
    if number < 0 or number in (0xFFFFFFFE, 0xFFFFFFFF, 0xFFFFFFFFFFFFFFFE, 0xFFFFFFFFFFFFFFFF):
        return None
    return number


def decode_exit_code(value: object) -> tuple[int | None, int | None]:
    """(exit status, signal) of a job's `exit_code`.

    v0.0.38 gives the raw wait status (`7 << 8` for `exit 7`, `9` for SIGKILL); v0.0.40+ an
    object with `return_code` and `signal`. A signal gives the status 128 + N, like a shell.
    """
    if isinstance(value, dict):
        sig = _number((value.get("signal") or {}).get("id")) if value.get("signal") else None
        code = _number(value.get("return_code"))
        if sig:
            return 128 + sig, sig
        return code, None
    raw = _number(value)
    if raw is None:
        return None, None
    sig = raw & 0x7F
    if sig:
        return 128 + sig, sig
    return (raw >> 8) & 0xFF, None


def expand_indices(text: str) -> tuple[int, ...]:
    """Array task indices from Slurm's task string: "0,2-5:2%4" -> (0, 2, 4)."""
    text = text.split("%", 1)[0].strip()
    result: list[int] = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        step = 1
        if ":" in part:
            part, step_text = part.split(":", 1)
            step = max(1, int(step_text))
        if "-" in part:
            low, high = part.split("-", 1)
            result.extend(range(int(low), int(high) + 1, step))
        else:
            result.append(int(part))
    return tuple(result)


_IDX = re.compile(r"IDX:([0-9,\-]+)")


def gpu_indices(gres_detail: object) -> tuple[int, ...]:
    """GPU indices from `gres_detail` entries like "gpu:1(IDX:0)", "gpu:h100:2(IDX:0-1)"."""
    found: list[int] = []
    if not isinstance(gres_detail, (list, tuple)):
        return ()
    for entry in gres_detail:
        text = str(entry)
        if not text.startswith("gpu"):
            continue
        match = _IDX.search(text)
        if match:
            found.extend(expand_indices(match.group(1)))
    return tuple(found)


def parse_gres(text: str) -> tuple[int, str | None]:
    """(GPU count, GPU type) of a node's GRES string: "gpu:2", "gpu:h100:8(S:0-1),shard:4"."""
    total = 0
    gpu_type: str | None = None
    # Commas also occur inside "(S:0-1)": split only on those outside parentheses.
    for entry in re.split(r",(?![^()]*\))", text or ""):
        entry = re.sub(r"\(.*?\)", "", entry.strip())
        parts = entry.split(":")
        if not parts or parts[0] != "gpu":
            continue
        count_text = parts[-1]
        if len(parts) >= 3:
            gpu_type = parts[1]
        try:
            total += int(count_text)
        except ValueError:
            total += 1 if len(parts) == 1 else 0
    return total, gpu_type


def _text(value: object) -> str | None:
    if value is None:
        return None
    text = str(value)
    return text or None


def parse_job(doc: Mapping[str, Any]) -> SlurmJob:
    """A `SlurmJob` from one element of `GET /jobs`' `jobs` list (either generation)."""
    job_id = _number(doc.get("job_id"))
    if job_id is None:
        raise ValueError(f"job without a job_id: {doc!r:.200}")
    array_job_id = _number(doc.get("array_job_id")) or None
    array_task_id = _number(doc.get("array_task_id")) if array_job_id else None
    pending: tuple[int, ...] = ()
    task_string = doc.get("array_task_string") or ""
    if array_job_id and array_task_id is None and task_string:
        try:
            pending = expand_indices(str(task_string))
        except ValueError:
            pending = ()
    code, sig = decode_exit_code(doc.get("exit_code"))
    return SlurmJob(
        job_id=job_id,
        state=parse_job_state(doc.get("job_state") or "PENDING"),
        state_reason=_text(doc.get("state_reason")),
        array_job_id=array_job_id,
        array_task_id=array_task_id,
        pending_tasks=pending,
        exit_code=code,
        signal=sig,
        user=_text(doc.get("user_name")),
        comment=_text(doc.get("comment")),
        name=_text(doc.get("name")),
        partition=_text(doc.get("partition")),
        gpu_ids=gpu_indices(doc.get("gres_detail")),
        nodes=expand_hostlist(_text(doc.get("nodes"))),
        start_time=_number(doc.get("start_time")) or None,
        end_time=_number(doc.get("end_time")) or None,
        restarts=_number(doc.get("restart_cnt")) or 0,
    )


def parse_node(doc: Mapping[str, Any]) -> SlurmNode:
    gpus, gpu_type = parse_gres(str(doc.get("gres") or ""))
    used, _ = parse_gres(str(doc.get("gres_used") or ""))
    state = doc.get("state")
    if isinstance(state, list):  # v0.0.40+: a list of flags
        state = ",".join(str(s) for s in state)
    return SlurmNode(
        name=str(doc.get("name") or ""),
        state=str(state or "").lower(),
        partitions=tuple(str(p) for p in doc.get("partitions") or ()),
        gpus=gpus,
        gpus_used=used,
        gpu_type=gpu_type,
    )


def parse_partition(doc: Mapping[str, Any]) -> SlurmPartition:
    flags = doc.get("flags") or []
    if isinstance(doc.get("partition"), dict):  # v0.0.40+: {"state": [...]} etc.
        flags = flags or (doc["partition"].get("state") or [])
    default = "default" in [str(f).lower() for f in flags]
    max_time = doc.get("max_time_limit", doc.get("maximums", {}).get("time"))
    state = doc.get("state")
    if isinstance(doc.get("partition"), dict):
        state = ",".join(str(s) for s in doc["partition"].get("state") or ["UP"])
    return SlurmPartition(
        name=str(doc.get("name") or ""),
        max_time_minutes=_number(max_time),
        default=default,
        state=str(state or "UP"),
    )


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
            number = _number(first.get("error_number") or first.get("error_code"))
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
        job_id = _number(data.get("job_id"))
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
