"""The Slurm executor's registry entry: its settings, the `kaic center serve` options that
fill them, and how it is built. Imports nothing heavy (the CLI reads it on its start path)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from kaic.center.executors.entry import ExecutorEntry, OptionError, ServeOption

if TYPE_CHECKING:
    from kaic.center.executors.base import Executor
    from kaic.center.settings import CenterSettings

#: the environment variable that carries the SlurmUser's JWT (never an option: argv is public)
TOKEN_VARIABLE = "KAIC_SLURM_JWT"


@dataclass
class SlurmSettings:
    """How the center reaches slurmrestd and submits to it."""

    #: slurmrestd's URL
    url: str | None = None
    #: a JWT of the SlurmUser (never logged)
    token: str | None = field(default=None, repr=False)
    #: seconds between the batched `GET /jobs` calls
    poll_interval: float = 1.0
    #: seconds a slurmrestd call may take before it counts as failed
    timeout: float = 10.0
    #: submit jobs with Slurm's `account` = the kaic project name
    account_from_project: bool = True
    #: the cluster's slurm.conf for the `srun` of interactive sessions (None: the center's
    #: own SLURM_CONF, or Slurm's default path)
    slurm_conf: str | None = None


SERVE_OPTIONS = (
    ServeOption(
        "slurmrestd",
        ("--slurmrestd",),
        str | None,
        None,
        "slurmrestd URL (slurm executor); the SlurmUser's JWT comes from KAIC_SLURM_JWT.",
        needs_executor=True,
    ),
    ServeOption(
        "slurm_poll_interval",
        ("--slurm-poll-interval",),
        float,
        1.0,
        "Seconds between the batched Slurm state polls.",
    ),
    ServeOption(
        "slurm_account",
        ("--slurm-account/--no-slurm-account",),
        bool,
        True,
        "Submit with Slurm account = the job's project.",
    ),
)


def from_serve(values: Mapping[str, Any], environ: Mapping[str, str]) -> SlurmSettings:
    """The settings `serve`'s options and the environment give; OptionError says what is
    missing."""
    if not values["slurmrestd"]:
        raise OptionError(
            "--executor slurm needs --slurmrestd URL", hint="e.g. http://127.0.0.1:6820"
        )
    token = environ.get(TOKEN_VARIABLE, "").strip() or None
    if not token:
        raise OptionError(
            f"--executor slurm needs the SlurmUser's JWT in {TOKEN_VARIABLE}",
            hint=f"e.g. {TOKEN_VARIABLE}=$(scontrol token username=slurm lifespan=...)",
        )
    if values["slurm_poll_interval"] <= 0:
        raise OptionError("--slurm-poll-interval must be > 0")
    return SlurmSettings(
        url=values["slurmrestd"],
        token=token,
        poll_interval=values["slurm_poll_interval"],
        account_from_project=values["slurm_account"],
    )


def build(settings: CenterSettings) -> Executor:
    """A Slurm executor for the center's settings."""
    from kaic.center.executors.slurm.executor import make_slurm_executor

    options = settings.executor_settings
    assert isinstance(options, SlurmSettings)
    if not options.url or not options.token:
        raise ValueError(
            "the slurm executor needs slurmrestd's URL and a JWT of the SlurmUser "
            f"(--slurmrestd URL and {TOKEN_VARIABLE})"
        )
    return make_slurm_executor(
        options.url,
        options.token,
        poll_interval=options.poll_interval,
        timeout=options.timeout,
        fallback_partitions=settings.partitions,
        account_from_project=options.account_from_project,
        slurm_conf=options.slurm_conf,
    )


ENTRY = ExecutorEntry(
    name="slurm",
    label="slurm",
    build=build,
    settings_type=SlurmSettings,
    serve_options=SERVE_OPTIONS,
    from_serve=from_serve,
    run_as_user_refusal="--run-as-user is for the local executor (Slurm runs jobs as users)",
)
