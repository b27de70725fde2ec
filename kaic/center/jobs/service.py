"""What the jobs API does: validate and create submissions, dry runs, listings."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import timedelta
from typing import Literal

from kaic.center.containers.launch import ImageRejected, container_for
from kaic.center.errors import ApiError
from kaic.center.jobs.cursor import decode_cursor, encode_cursor
from kaic.center.jobs.idempotency import IdempotencyKeys, canonical_hash
from kaic.center.jobs.paths import PathRejected, resolve_workdir, storage_home
from kaic.center.jobs.rows import JobRow, NewJob, to_job
from kaic.center.jobs.scheduler import Scheduler
from kaic.center.jobs.store import JobStore
from kaic.center.notify.targets import AllowList, notify_refusal
from kaic.center.settings import CenterSettings, PartitionConfig
from kaic.center.store import ProjectRow, Store
from kaic.models import DryRunResult, Job, JobList, JobState, JobSubmit
from kaic.models.arrays import parse_array

ProblemKind = Literal["invalid", "forbidden", "quota"]
#: jobs that ended longer ago than this are hidden from `GET /v1/jobs` unless `all=true`
RECENT = timedelta(hours=1)

#: The time limit of a GPU job that names none, on a partition without a maximum.
DEFAULT_GPU_TIME_LIMIT = 3600


@dataclass
class Plan:
    """A submission checked against the center: where it goes and what it costs."""

    problems: list[tuple[ProblemKind, str]] = field(default_factory=list)
    partition: PartitionConfig | None = None
    project: ProjectRow | None = None
    time_limit_seconds: int | None = None
    tasks: list[int] | None = None
    array_limit: int | None = None
    workdir: str = "~"
    estimated_gpu_hours: float = 0.0

    def add(self, kind: ProblemKind, message: str) -> None:
        self.problems.append((kind, message))

    @property
    def valid(self) -> bool:
        return not self.problems

    def raise_if_invalid(self) -> None:
        """The one API error for the problems: 422 for the job itself, else 403."""
        if not self.problems:
            return
        kinds = {kind for kind, _ in self.problems}
        text = "; ".join(message for _, message in self.problems)
        if "invalid" in kinds:
            raise ApiError(422, "invalid_job", f"the job was rejected: {text}")
        if "forbidden" in kinds:
            raise ApiError(403, "forbidden", text)
        raise ApiError(403, "quota_exceeded", text)


class JobService:
    """The jobs API's operations, for one authenticated user at a time."""

    def __init__(self, store: Store, settings: CenterSettings, scheduler: Scheduler) -> None:
        self.store = store
        self.jobs = JobStore(store)
        self.idempotency_keys = IdempotencyKeys(store)
        self.settings = settings
        self.scheduler = scheduler
        self.notify_allowed = AllowList(settings.notify_allow)

    # -- submission ----------------------------------------------------------------------

    def _unix_account(self, user: str) -> str | None:
        row = self.store.get_user(user)
        return row.unix_account if row else None

    def plan(self, user_id: int, user: str, spec: JobSubmit) -> Plan:
        """Check a submission against partitions, membership, storage and quota."""
        plan = Plan()
        executor = self.scheduler.executor
        partitions = self.scheduler.partitions
        gpus = spec.resources.gpus
        gpu_type = spec.resources.gpu_type
        names = ", ".join(partitions) or "none"

        partition: PartitionConfig | None = None
        if spec.partition is not None:
            partition = partitions.get(spec.partition)
            if partition is None:
                plan.add("invalid", f"unknown partition {spec.partition!r} (partitions: {names})")
        elif gpu_type is not None:
            partition = next(
                (
                    p
                    for p in partitions.values()
                    if p.gpu_type and p.gpu_type.casefold() == gpu_type.casefold()
                ),
                None,
            )
            if partition is None:
                plan.add("invalid", f"no partition has GPU type {gpu_type!r}")
        elif partitions:
            partition = next((p for p in partitions.values() if p.default), None)
            partition = partition or next(iter(partitions.values()))
        else:
            plan.add(
                "invalid",
                f"the {executor.name} executor knows no partitions yet (is the batch system "
                "reachable?); try again shortly or name a partition",
            )
        if partition is not None:
            plan.partition = partition
            if (
                gpu_type is not None
                and partition.gpu_type is not None
                and gpu_type.casefold() != partition.gpu_type.casefold()
            ):
                plan.add(
                    "invalid",
                    f"partition {partition.name!r} has {partition.gpu_type} GPUs, not {gpu_type}",
                )
            nodes = spec.resources.nodes
            if gpus * nodes > partition.gpus:
                each = f" on each of {nodes} nodes" if nodes > 1 else ""
                plan.add(
                    "invalid",
                    f"asks for {gpus} GPUs{each} but partition {partition.name!r} has "
                    f"{partition.gpus} in all",
                )
            limit = partition.max_time_seconds
            # A GPU job always has a limit (Slurm's DefaultTime), so its charge is known and
            # the quota check cannot be bypassed by leaving the limit out.
            default = limit or (DEFAULT_GPU_TIME_LIMIT if gpus > 0 else None)
            plan.time_limit_seconds = spec.time_limit_seconds or default
            if limit is not None and spec.time_limit_seconds and spec.time_limit_seconds > limit:
                plan.add(
                    "invalid",
                    f"time limit {spec.time_limit_seconds}s exceeds partition "
                    f"{partition.name!r}'s maximum of {limit}s",
                )
        if spec.resources.nodes > executor.max_nodes:
            most = executor.max_nodes
            fix = (
                "one machine: use a Slurm center, or nodes: 1"
                if most == 1
                else f"ask for at most {most}"
            )
            plan.add(
                "invalid",
                f"asks for {spec.resources.nodes} nodes but the {executor.name} executor "
                f"runs jobs on at most {most} node{'s' if most > 1 else ''} ({fix})",
            )
        if spec.image and not executor.supports_images:
            plan.add(
                "invalid",
                f"containers (`image`) are not supported by the {executor.name} executor; "
                "drop `image`",
            )
        elif spec.image and spec.resources.nodes > 1:
            # The ranks of a multi-node job are started by srun on each node (`slurm/ranks.py`)
            # without the image launcher: refused rather than run outside the image.
            plan.add(
                "invalid",
                "a multi-node job cannot run in an image yet: drop `image`, or use nodes: 1",
            )
        # Strings, env and the array's size were checked by the model (`kaic.models.limits`).
        if spec.array is not None and spec.kind == "interactive":
            plan.add("invalid", "an interactive allocation is one job: drop `array`")
        elif spec.array is not None:
            try:
                plan.tasks, plan.array_limit = parse_array(spec.array)
            except ValueError as exc:
                plan.add("invalid", str(exc))
        self._check_followup(spec, plan)
        if spec.depends_on:
            known = self.jobs.get_many(spec.depends_on)
            for dep in spec.depends_on:
                if dep not in known or known[dep].user_id != user_id:
                    plan.add("invalid", f"depends_on: no job {dep!r} of yours")
        self._check_secrets(plan, user_id, spec)
        home = storage_home(self.settings, user, self._unix_account(user))
        try:
            plan.workdir, _ = resolve_workdir(home, spec.workdir)
        except PathRejected as exc:
            plan.add("invalid", str(exc))
        if spec.image and executor.supports_images:
            try:
                container_for(self.settings, home, spec.image, here=executor.runs_on_center_host)
            except ImageRejected as exc:
                plan.add("invalid", str(exc))

        memberships = self.store.user_memberships(user_id)
        if spec.project is not None:
            plan.project = next(
                (m.project for m in memberships if m.project.name == spec.project), None
            )
            if plan.project is None:
                yours = ", ".join(m.project.name for m in memberships) or "none"
                plan.add(
                    "forbidden",
                    f"you are not a member of project {spec.project!r} (your projects: {yours})",
                )
        elif memberships:
            plan.project = memberships[0].project
        else:
            plan.add(
                "invalid",
                "you belong to no project, so there is nothing to charge the job to; ask the "
                f"center's administrator to add you (`kaic center project add PROJECT "
                f"--member {user}`)",
            )

        ntasks = len(plan.tasks) if plan.tasks is not None else 1
        if plan.time_limit_seconds is not None:
            # GPUs are per node: a multi-node job holds `nodes` times as many.
            held = gpus * spec.resources.nodes
            plan.estimated_gpu_hours = held * plan.time_limit_seconds / 3600.0 * ntasks
        if plan.project is not None and gpus > 0:
            remaining = plan.project.gpu_hours_granted - plan.project.gpu_hours_used
            if plan.estimated_gpu_hours > remaining or remaining <= 0:
                plan.add(
                    "quota",
                    f"quota exceeded: the job may use {plan.estimated_gpu_hours:.2f} GPU-hours "
                    f"but project {plan.project.name!r} has {max(0.0, remaining):.2f} left",
                )
        return plan

    def _check_followup(self, spec: JobSubmit, plan: Plan) -> None:
        """`retry:` and `notify:` as this center can honour them."""
        if spec.retry is not None and spec.kind == "interactive":
            plan.add("invalid", "an interactive allocation is not requeued: drop `retry`")
        if spec.notify is None:
            return
        if spec.array is not None:
            plan.add(
                "invalid",
                "notify: an array's tasks are not notified (yet): drop `notify`, or follow "
                "the array with `kaic wait`",
            )
        refusal = notify_refusal(spec.notify, self.notify_allowed, self.settings.smtp_relay)
        if refusal:
            plan.add("invalid", f"notify: {refusal}")

    def _check_secrets(self, plan: Plan, user_id: int, spec: JobSubmit) -> None:
        """Every secret the job names must be one of the user's (its value is read only
        when the job starts)."""
        if not spec.secrets:
            return
        secrets = self.scheduler.queue.secrets
        if secrets is None:
            plan.add("invalid", "this center keeps no secrets; drop the job's secret references")
            return
        for name in secrets.missing(user_id, list(spec.secrets.values())):
            plan.add(
                "invalid",
                f"no secret {name!r} of yours; set it with `kaic secret set {name}` first",
            )

    def dry_run(self, user_id: int, user: str, spec: JobSubmit) -> DryRunResult:
        """Validate and estimate, creating nothing."""
        plan = self.plan(user_id, user, spec)
        estimated_start = None
        if plan.valid and plan.partition is not None:
            estimated_start = self.scheduler.estimate_start(plan.partition, spec.resources.gpus)
        return DryRunResult(
            valid=plan.valid,
            problems=[message for _, message in plan.problems],
            estimated_start=estimated_start,
            estimated_gpu_hours=plan.estimated_gpu_hours,
        )

    def submit(
        self, user_id: int, user: str, spec: JobSubmit, idempotency_key: str | None
    ) -> tuple[Job, bool]:
        """Create the job (or array); returns (job, created). A repeated idempotency key
        with the same body returns the first job with created=False."""
        body_hash = canonical_hash(spec.model_dump(mode="json"))
        if idempotency_key is not None:
            replay = self._replay(user_id, idempotency_key, body_hash)
            if replay is not None:
                return replay, False
        plan = self.plan(user_id, user, spec)
        plan.raise_if_invalid()
        assert plan.partition is not None and plan.project is not None
        with self.jobs.transaction():
            if idempotency_key is not None:
                # Re-checked inside the transaction: a concurrent twin may have won.
                replay = self._replay(user_id, idempotency_key, body_hash)
                if replay is not None:
                    return replay, False
            seq = self.jobs.next_seq()
            job_id = str(seq)
            base = NewJob(
                id=job_id,
                seq=seq,
                kind="job",
                user_id=user_id,
                project_id=plan.project.id,
                name=spec.name or ("interactive" if spec.kind == "interactive" else "job"),
                partition=plan.partition.name,
                spec=spec,
                workdir=plan.workdir,
                time_limit_seconds=plan.time_limit_seconds,
                gpus=spec.resources.gpus,
                depends_on=tuple(spec.depends_on),
                job_kind=spec.kind,
            )
            if plan.tasks is None:
                self.jobs.insert(base)
                self.jobs.events.add(job_id, "submitted", JobState.PENDING)
            else:
                self.jobs.insert(replace(base, kind="array", array_limit=plan.array_limit))
                limit = f", at most {plan.array_limit} at once" if plan.array_limit else ""
                self.jobs.events.add(
                    job_id, f"submitted array of {len(plan.tasks)} tasks{limit}", JobState.PENDING
                )
                tasks = [
                    replace(
                        base,
                        id=f"{seq}_{index}",
                        kind="task",
                        array_job_id=job_id,
                        array_task_id=index,
                        array_limit=plan.array_limit,
                    )
                    for index in plan.tasks
                ]
                self.jobs.insert_many(tasks)
                self.jobs.events.add_many([t.id for t in tasks], "submitted", JobState.PENDING)
            if idempotency_key is not None:
                self.idempotency_keys.save(user_id, idempotency_key, body_hash, job_id)
            job = self.get(job_id, user_id)
        self.scheduler.wake(arrival=True)
        assert job is not None
        return job, True

    def _replay(self, user_id: int, key: str, body_hash: str) -> Job | None:
        found = self.idempotency_keys.find(user_id, key)
        if found is None:
            return None
        recorded_hash, job_id = found
        if recorded_hash != body_hash:
            raise ApiError(
                409,
                "idempotency_conflict",
                f"Idempotency-Key {key!r} was already used for a different job ({job_id}); "
                "use a new key for a new job",
            )
        return self.get(job_id, user_id)

    # -- reading -------------------------------------------------------------------------

    def _jobs(self, rows: list[JobRow]) -> list[Job]:
        tasks = self.jobs.task_summary([r.id for r in rows if r.kind == "array"])
        return [to_job(r, *tasks.get(r.id, ((), {}))) for r in rows]

    def tasks(self, array_id: str, user_id: int, *, limit: int, cursor: str | None) -> JobList:
        """The tasks of the user's array, by index, a page at a time (cursor: the last index
        seen); a job that is not an array is a 422."""
        row = self.get_row(array_id, user_id)
        if row.kind != "array":
            raise ApiError(422, "invalid_request", f"job {row.id} is not an array")
        after = decode_cursor(cursor) if cursor else -1
        rows = self.jobs.task_page(row.id, after_index=after, limit=limit + 1)
        more = len(rows) > limit
        rows = rows[:limit]
        last = rows[-1].array_task_id if rows else None
        return JobList(
            jobs=self._jobs(rows),
            next_cursor=encode_cursor(last) if more and last is not None else None,
        )

    def get_row(self, job_id: str, user_id: int) -> JobRow:
        """The user's job or array task; 404 (also for other users' jobs)."""
        row = self.jobs.get(job_id, user_id=user_id)
        if row is None:
            raise ApiError(404, "not_found", f"no job {job_id!r}")
        return row

    def get_task_row(self, job_id: str, user_id: int, *, why: str) -> JobRow:
        """The user's job or array task, like `get_row`; an array is a 422 naming its first
        tasks (`why`: what is per task, e.g. "its logs are per task; choose one of")."""
        row = self.get_row(job_id, user_id)
        if row.kind == "array":
            tasks = self.jobs.task_ids([row.id]).get(row.id, [])
            shown = ", ".join(tasks[:10]) + (", …" if len(tasks) > 10 else "")
            raise ApiError(422, "invalid_request", f"job {row.id} is an array: {why} {shown}")
        return row

    def get(self, job_id: str, user_id: int) -> Job | None:
        row = self.jobs.get(job_id, user_id=user_id)
        return self._jobs([row])[0] if row else None

    def list(
        self,
        user_id: int,
        *,
        states: list[JobState],
        all_jobs: bool,
        limit: int,
        cursor: str | None,
    ) -> JobList:
        before = decode_cursor(cursor) if cursor else None
        ended_after = None if all_jobs else self.jobs.now() - RECENT
        rows = self.jobs.list_for_user(
            user_id,
            states=[s.value for s in states],
            ended_after=ended_after,
            before_seq=before,
            limit=limit + 1,
        )
        more = len(rows) > limit
        rows = rows[:limit]
        return JobList(
            jobs=self._jobs(rows),
            next_cursor=encode_cursor(rows[-1].seq) if more and rows else None,
        )

    def cancel(self, job_id: str, user_id: int) -> Job:
        row = self.scheduler.cancel(job_id, user_id)
        if row is None:
            raise ApiError(404, "not_found", f"no job {job_id!r}")
        job = self.get(job_id, user_id)
        assert job is not None
        return job
