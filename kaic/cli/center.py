"""`kaic center …`: run the reference center, manage the background local center, admin."""

import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from kaic.cli.context import get_app
from kaic.cli.options import JsonOpt, StateDirOpt
from kaic.errors import KaicError, UsageError

app = typer.Typer(
    help="The reference center: serve it, manage the background local center, add users.",
    no_args_is_help=True,
)
user_app = typer.Typer(help="Manage center users (works on the state dir).", no_args_is_help=True)
project_app = typer.Typer(help="Manage projects and their GPU-hour grants.", no_args_is_help=True)
app.add_typer(user_app, name="user")
app.add_typer(project_app, name="project")


def _state_dir(value: str | None) -> Path:
    """The state dir `--state-dir` names, made absolute here, once: jobs run in their own
    directories, where a relative state dir (the README's `./center`) would point elsewhere
    (every job failed with 127, its script not found)."""
    import os

    from kaic.client.local_center import local_state_dir

    return Path(os.path.abspath(Path(value).expanduser())) if value else local_state_dir()


@app.command("serve")
def serve(
    host: Annotated[
        str, typer.Option("--host", help="Loopback address to listen on.")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="Port (0 = any free port).")] = 8750,
    state_dir: StateDirOpt = None,
    executor: Annotated[
        str, typer.Option("--executor", help="Where jobs run: local (this machine) or slurm.")
    ] = "local",
    gpus: Annotated[int, typer.Option("--gpus", help="GPUs the local executor hands out.")] = 0,
    gpu_type: Annotated[str | None, typer.Option("--gpu-type", help="GPU model name.")] = None,
    slurmrestd: Annotated[
        str | None,
        typer.Option(
            "--slurmrestd",
            help="slurmrestd URL (slurm executor); the SlurmUser's JWT comes from KAIC_SLURM_JWT.",
        ),
    ] = None,
    slurm_poll_interval: Annotated[
        float,
        typer.Option(
            "--slurm-poll-interval", help="Seconds between the batched Slurm state polls."
        ),
    ] = 1.0,
    slurm_account: Annotated[
        bool,
        typer.Option(
            "--slurm-account/--no-slurm-account",
            help="Submit with Slurm account = the job's project.",
        ),
    ] = True,
    partitions_file: Annotated[
        Path | None,
        typer.Option(
            "--partitions",
            help="YAML file listing partitions: name, gpus, gpu_type, max_time, default.",
        ),
    ] = None,
    kill_grace: Annotated[
        float, typer.Option("--kill-grace", help="Seconds between SIGTERM and SIGKILL.")
    ] = 10.0,
    access_token_ttl: Annotated[
        int, typer.Option("--access-token-ttl", help="Seconds an access token lives.")
    ] = 900,
    ready_file: Annotated[
        str | None,
        typer.Option("--ready-file", help="Write {pid, port, url} as JSON here once listening."),
    ] = None,
    staging_host: Annotated[
        str | None,
        typer.Option(
            "--staging-host", help="SSH/SFTP host serving users' storage (GET /v1/staging)."
        ),
    ] = None,
    staging_port: Annotated[
        int, typer.Option("--staging-port", help="SSH port of the staging host.")
    ] = 22,
    staging_host_key: Annotated[
        list[Path] | None,
        typer.Option(
            "--staging-host-key",
            help="File with the staging host's public key, e.g. ssh_host_ed25519_key.pub "
            "(repeatable).",
        ),
    ] = None,
    sftp_port: Annotated[
        int | None,
        typer.Option(
            "--sftp-port",
            help="Serve users' storage from an embedded SFTP endpoint on 127.0.0.1 at this "
            "port (0 = any free port); an alternative to --staging-host.",
        ),
    ] = None,
    storage_root: Annotated[
        str | None,
        typer.Option(
            "--storage-root",
            help="Users' storage root on the staging host, e.g. '/home/{unix_account}' "
            "(default: STATE_DIR/storage/{user}).",
        ),
    ] = None,
    run_as_user: Annotated[
        bool,
        typer.Option(
            "--run-as-user",
            help="Local executor: run each job as its user's unix account, not as the "
            "center's (needs root and --storage-root).",
        ),
    ] = False,
) -> None:
    """Run the reference center in the foreground (Ctrl-C stops it).

    Without --run-as-user the local executor runs every job as the center's own account:
    fine for one user, not for a center several users share.

    Examples:

      kaic center serve --port 8750 --state-dir ./center-state --sftp-port 2222

      sudo kaic center serve --run-as-user --storage-root '/home/{unix_account}'
    """
    from kaic.center.server import serve as run_server
    from kaic.center.settings import CenterSettings

    if executor not in ("local", "slurm"):
        raise UsageError(f"unknown executor {executor!r}", hint="use --executor local or slurm")
    slurm_token: str | None = None
    if executor == "slurm":
        import os

        if not slurmrestd:
            raise UsageError(
                "--executor slurm needs --slurmrestd URL", hint="e.g. http://127.0.0.1:6820"
            )
        slurm_token = os.environ.get("KAIC_SLURM_JWT", "").strip() or None
        if not slurm_token:
            raise UsageError(
                "--executor slurm needs the SlurmUser's JWT in KAIC_SLURM_JWT",
                hint="e.g. KAIC_SLURM_JWT=$(scontrol token username=slurm lifespan=...)",
            )
        if slurm_poll_interval <= 0:
            raise UsageError("--slurm-poll-interval must be > 0")
    elif slurmrestd:
        raise UsageError("--slurmrestd needs --executor slurm")
    if run_as_user:
        import os

        if os.geteuid() != 0:
            raise UsageError(
                "--run-as-user needs a center running as root (to switch to users' accounts)"
            )
    if sftp_port is not None and staging_host is not None:
        raise UsageError(
            "--sftp-port and --staging-host are alternatives",
            hint="serve storage from the embedded endpoint (--sftp-port) or point users at "
            "an external sshd (--staging-host), not both",
        )
    from kaic.center.ssh_ca import read_host_key_files

    try:
        host_keys = read_host_key_files(staging_host_key or [])
        settings = CenterSettings(
            state_dir=_state_dir(state_dir),
            host=host,
            port=port,
            executor=executor,
            gpus=gpus,
            gpu_type=gpu_type,
            access_token_ttl=access_token_ttl,
            kill_grace=kill_grace,
            partitions=_load_partitions(partitions_file) if partitions_file else [],
            staging_host=staging_host,
            staging_port=staging_port,
            staging_host_keys=host_keys,
            sftp_port=sftp_port,
            storage_root=storage_root,
            run_as_users=run_as_user,
            slurm_url=slurmrestd,
            slurm_token=slurm_token,
            slurm_poll_interval=slurm_poll_interval,
            slurm_account_from_project=slurm_account,
        )
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    settings.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    print(
        f"kaic center: state in {settings.state_dir}; starting on {host}:{port} (Ctrl-C to stop)",
        file=sys.stderr,
    )
    try:
        run_server(settings, ready_file=Path(ready_file) if ready_file else None)
    except ValueError as exc:
        raise UsageError(str(exc)) from exc


def _load_partitions(path: Path) -> list[Any]:
    """Partitions from a YAML list; errors name the file and the entry."""
    import yaml

    from kaic.center.settings import PartitionConfig
    from kaic.durations import parse_duration

    try:
        entries = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise UsageError(f"cannot read partitions file {path}: {exc}") from None
    if not isinstance(entries, list) or not entries:
        raise UsageError(f"{path}: expected a non-empty list of partitions")
    parts = []
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict) or "name" not in entry:
            raise UsageError(f"{path}: entry {i + 1}: expected a mapping with a name")
        unknown = set(entry) - {"name", "gpus", "gpu_type", "max_time", "default"}
        if unknown:
            raise UsageError(f"{path}: entry {i + 1}: unknown key(s) {', '.join(sorted(unknown))}")
        try:
            max_time = entry.get("max_time")
            parts.append(
                PartitionConfig(
                    name=str(entry["name"]),
                    gpus=int(entry.get("gpus", 0)),
                    gpu_type=entry.get("gpu_type"),
                    max_time_seconds=parse_duration(str(max_time)) if max_time else None,
                    default=bool(entry.get("default", False)),
                )
            )
        except (TypeError, ValueError) as exc:
            raise UsageError(f"{path}: entry {i + 1} ({entry['name']}): {exc}") from None
    return parts


@app.command("ssh-ca")
def ssh_ca(ctx: typer.Context, state_dir: StateDirOpt = None, json_out: JsonOpt = False) -> None:
    """Print the center's SSH user CA public key (created on first use).

    Add it to the staging sshd's TrustedUserCAKeys; users then log in with its certificates.

    Example: kaic center ssh-ca --state-dir ./state >> /etc/ssh/kaic_user_ca.pub
    """
    from kaic.center.ssh_ca import UserCA

    app_ = get_app(ctx)
    directory = _state_dir(state_dir)
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    ca = UserCA(directory)
    line = ca.public_key_line()
    if json_out:
        app_.json({"public_key": line, "key_file": str(ca.key_path)})
    else:
        app_.out(line)


@app.command("start")
def start(ctx: typer.Context, json_out: JsonOpt = False) -> None:
    """Start the background local center (commands start it on demand anyway).

    Example: kaic center start
    """
    from kaic.client.local_center import ensure_running

    app_ = get_app(ctx)
    center = ensure_running()
    if json_out:
        app_.json(
            {
                "running": True,
                "url": center.url,
                "pid": center.pid,
                "started": center.started,
                "state_dir": str(center.state_dir),
            }
        )
    else:
        app_.info(
            f"Local center {'started' if center.started else 'already running'} at "
            f"{center.url} (pid {center.pid})."
        )


@app.command("stop")
def stop(ctx: typer.Context, json_out: JsonOpt = False) -> None:
    """Stop the background local center.

    Example: kaic center stop
    """
    from kaic.client.local_center import stop as stop_center

    app_ = get_app(ctx)
    pid = stop_center()
    if json_out:
        app_.json({"stopped": pid is not None, "pid": pid})
    elif pid is None:
        app_.info("The local center was not running.")
    else:
        app_.info(f"Stopped the local center (pid {pid}).")


@app.command("status")
def status(ctx: typer.Context, json_out: JsonOpt = False) -> None:
    """Say whether the background local center is running, and where.

    Example: kaic center status --json
    """
    from kaic.client.local_center import find_running, local_state_dir

    app_ = get_app(ctx)
    center = find_running()
    data = {
        "running": center is not None,
        "url": center.url if center else None,
        "pid": center.pid if center else None,
        "state_dir": str(local_state_dir()),
    }
    if json_out:
        app_.json(data)
    elif center:
        app_.out(f"running at {center.url} (pid {center.pid}); state in {data['state_dir']}")
    else:
        app_.out(f"not running; state in {data['state_dir']}")


def _read_new_password(password_stdin: bool) -> str | None:
    if password_stdin:
        line = sys.stdin.readline().rstrip("\r\n")
        if not line:
            raise UsageError("expected a password on standard input, got nothing")
        return line
    if sys.stdin.isatty():
        import getpass

        first = getpass.getpass("New password: ")
        if first != getpass.getpass("Repeat it: "):
            raise UsageError("the passwords differ")
        return first or None
    return None


@user_app.command("add")
def user_add(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="User name (lowercase, like a unix account).")],
    password_stdin: Annotated[
        bool, typer.Option("--password-stdin", help="Read the password from standard input.")
    ] = False,
    otp: Annotated[bool, typer.Option("--otp", help="Enable a TOTP second factor.")] = False,
    unix_account: Annotated[
        str | None,
        typer.Option("--unix-account", help="Unix account on the cluster (default: NAME)."),
    ] = None,
    state_dir: StateDirOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Add a user to a center's database.

    Example: echo "$PW" | kaic center user add alice --password-stdin --otp --state-dir ./state
    """
    from kaic.center.admin import AdminError, add_user

    app_ = get_app(ctx)
    password = _read_new_password(password_stdin)
    try:
        uri = add_user(
            _state_dir(state_dir),
            name,
            password=password,
            enable_otp=otp,
            unix_account=unix_account,
        )
    except AdminError as exc:
        raise KaicError(str(exc)) from exc
    if json_out:
        app_.json({"user": name, "unix_account": unix_account or name, "otpauth_uri": uri})
        return
    app_.info(f"Added user {name}.")
    if uri:
        app_.info("Give the user this TOTP secret (add it to an authenticator app):")
        app_.out(uri)


@project_app.command("add")
def project_add(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Project (allocation) name, e.g. ai-2026-0042.")],
    gpu_hours: Annotated[float, typer.Option("--gpu-hours", help="GPU-hours granted.")],
    member: Annotated[
        list[str] | None, typer.Option("--member", help="A member user (repeatable).")
    ] = None,
    state_dir: StateDirOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Add (or update) a project with a GPU-hour grant and members.

    Example: kaic center project add ai-2026-0042 --gpu-hours 5000 --member alice --member bob
    """
    from kaic.center.admin import AdminError, add_project

    app_ = get_app(ctx)
    if gpu_hours < 0:
        raise UsageError("--gpu-hours must be >= 0")
    try:
        add_project(_state_dir(state_dir), name, gpu_hours=gpu_hours, members=member or [])
    except AdminError as exc:
        raise KaicError(str(exc)) from exc
    if json_out:
        app_.json({"project": name, "gpu_hours": gpu_hours, "members": member or []})
    else:
        app_.info(
            f"Project {name}: {gpu_hours:g} GPU-hours; members: "
            f"{', '.join(member or []) or '(none)'}."
        )
