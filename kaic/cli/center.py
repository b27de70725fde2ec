"""`kaic center …`: run the reference center, print its SSH user CA.

Its `start`, `stop` and `status` (the background local center) are in `center_local.py`;
its `user` and `project` groups (the center's administration) are in `center_admin.py`.

`serve` declares its thirty-odd options, each with the help text `--help` shows (a contract),
in its signature; the executors' own options come from the executor registry
(`kaic.center.executors.registry`) and are spliced in there.
"""

import inspect
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from kaic.center.executors.registry import ENTRIES, either, serve_options
from kaic.center.executors.registry import names as executor_names
from kaic.cli.context import get_app
from kaic.cli.options import JqOpt, JsonOpt, StateDirOpt, state_dir_path
from kaic.errors import UsageError
from kaic.text import visible

#: `--executor`'s help: the registered executors
EXECUTOR_HELP = f"Where jobs run: {either([entry.label for entry in ENTRIES])}."

app = typer.Typer(
    help="The reference center: serve it, manage the background local center, add users.",
    no_args_is_help=True,
)


def _with_executor_options(command: Callable[..., None]) -> Callable[..., None]:
    """Give `command` every registered executor's `serve` options (the registry declares
    them as data), right after `--gpu-type`; their values reach it as keyword arguments."""
    signature = inspect.signature(command)
    params = [p for p in signature.parameters.values() if p.kind is not p.VAR_KEYWORD]
    at = [p.name for p in params].index("gpu_type") + 1
    extra = [
        inspect.Parameter(
            option.param,
            inspect.Parameter.POSITIONAL_OR_KEYWORD,
            default=option.default,
            annotation=Annotated[option.type, typer.Option(*option.decls, help=option.help)],
        )
        for option in serve_options()
    ]
    command.__signature__ = signature.replace(  # type: ignore[attr-defined]
        parameters=[*params[:at], *extra, *params[at:]]
    )
    return command


@app.command("serve")
@_with_executor_options
def serve(
    host: Annotated[
        str,
        typer.Option(
            "--host",
            help="Address to listen on. Loopback by default; any other address needs "
            "--tls-cert/--tls-key or --behind-tls-proxy.",
        ),
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="Port (0 = any free port).")] = 8750,
    state_dir: StateDirOpt = None,
    executor: Annotated[str, typer.Option("--executor", help=EXECUTOR_HELP)] = "local",
    gpus: Annotated[int, typer.Option("--gpus", help="GPUs the local executor hands out.")] = 0,
    gpu_type: Annotated[str | None, typer.Option("--gpu-type", help="GPU model name.")] = None,
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
    metrics_interval: Annotated[
        float,
        typer.Option(
            "--metrics-interval",
            min=0,
            max=3600,
            help="Seconds between two samples of a job's GPU/CPU metrics (0 = no sampler).",
        ),
    ] = 5.0,
    metrics_python: Annotated[
        str | None,
        typer.Option(
            "--metrics-python",
            help="Python (with kaic and nvidia-ml-py) that runs the metrics sampler on the "
            "nodes, as the jobs' accounts (default: the center's own).",
        ),
    ] = None,
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
            help="Port of the embedded SFTP endpoint on 127.0.0.1 that serves users' storage "
            "(default: any free port; on unless --staging-host or --no-staging).",
        ),
    ] = None,
    no_staging: Annotated[
        bool,
        typer.Option(
            "--no-staging",
            help="Offer no data staging (no embedded SFTP endpoint, no --staging-host).",
        ),
    ] = False,
    sftp_max_connections: Annotated[
        int,
        typer.Option(
            "--sftp-max-connections", min=1, help="Connections the embedded endpoint serves."
        ),
    ] = 64,
    sftp_max_connections_per_user: Annotated[
        int | None,
        typer.Option(
            "--sftp-max-connections-per-user",
            min=1,
            help="Connections one user may hold on the embedded endpoint "
            "(default: a quarter of --sftp-max-connections, at least 4).",
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
    tls_cert: Annotated[
        Path | None,
        typer.Option(
            "--tls-cert",
            metavar="FILE",
            help="Serve HTTPS with this PEM certificate (chain); needs --tls-key.",
        ),
    ] = None,
    tls_key: Annotated[
        Path | None,
        typer.Option(
            "--tls-key",
            metavar="FILE",
            help="The certificate's PEM private key (unencrypted; not readable by others).",
        ),
    ] = None,
    behind_tls_proxy: Annotated[
        bool,
        typer.Option(
            "--behind-tls-proxy",
            help="State that a TLS proxy in front of this center terminates HTTPS, so it may "
            "serve plain http on a non-loopback --host (only the proxy should reach it).",
        ),
    ] = False,
    single_account_ok: Annotated[
        bool,
        typer.Option(
            "--single-account-ok",
            help="Local executor without --run-as-user: serve several users anyway, all "
            "jobs running as the center's own account (every user can read the others' "
            "files, the center's database and its SSH CA key); as root, jobs run as root.",
        ),
    ] = False,
    secrets_key: Annotated[
        Path | None,
        typer.Option(
            "--secrets-key",
            metavar="FILE",
            help="The key file that encrypts users' secrets, kept outside the database "
            "(default: STATE_DIR/secrets.key, created 0600 on the first start; back it up "
            "apart from the database).",
        ),
    ] = None,
    trusted_proxy: Annotated[
        list[str] | None,
        typer.Option(
            "--trusted-proxy",
            help="A reverse proxy (CIDR or address) whose X-Forwarded-For names the client, "
            "for login limits and logs (repeatable); from other peers it is ignored.",
        ),
    ] = None,
    smtp_relay: Annotated[
        str | None,
        typer.Option(
            "--smtp-relay",
            help="HOST:PORT of the SMTP relay job-end mails (`notify: {email: …}`) go "
            "through; without it such jobs are refused at submit.",
        ),
    ] = None,
    smtp_from: Annotated[
        str | None,
        typer.Option("--smtp-from", help="The From address of job-end mails."),
    ] = None,
    notify_allow: Annotated[
        list[str] | None,
        typer.Option(
            "--notify-allow",
            help="A host (and its subdomains), address or CIDR job-end webhooks may go to "
            "(repeatable); default: any.",
        ),
    ] = None,
    images: Annotated[
        Path | None,
        typer.Option(
            "--images",
            metavar="PATH",
            help="The image catalogue: a YAML file listing images, or a directory with one "
            "YAML file per image (see docs/containers.md).",
        ),
    ] = None,
    container_runtime: Annotated[
        str,
        typer.Option(
            "--container-runtime",
            help="What runs jobs' images: bubblewrap (unpacked root filesystems), apptainer "
            "(SIF files), pyxis (Slurm's srun --container-image).",
        ),
    ] = "bubblewrap",
    container_device: Annotated[
        list[str] | None,
        typer.Option(
            "--container-device",
            metavar="GLOB",
            help="Device nodes jobs' images get under bubblewrap (repeatable; default "
            "/dev/nvidia*).",
        ),
    ] = None,
    **executor_options: Any,
) -> None:
    """Run the reference center in the foreground (Ctrl-C stops it).

    Without --run-as-user the local executor runs every job as the center's own account:
    fine for one user; with several it refuses to start unless --single-account-ok says
    they may all see each other's files and the center's database and CA key (checked
    again at each job start, for users added while it runs). Jobs never run as root: as
    root without --run-as-user the center runs none, unless --single-account-ok. With
    --run-as-user, the embedded SFTP endpoint serves each user's files as their unix
    account too.

    Data staging (`kaic data`) is on by default: an embedded SFTP endpoint on a free
    loopback port, unless --staging-host names an external sshd or --no-staging.

    Behind a reverse proxy, name it with --trusted-proxy so that login limits and logs
    use the client's address from X-Forwarded-For.

    It listens on loopback unless told how clients reach it securely: HTTPS served by the
    center itself (--tls-cert/--tls-key), or a TLS proxy in front (--behind-tls-proxy).

    Examples:

      kaic center serve --port 8750 --state-dir ./center-state --sftp-port 2222

      sudo kaic center serve --run-as-user --storage-root '/home/{unix_account}'

      kaic center serve --host 0.0.0.0 --port 8443 --tls-cert cert.pem --tls-key key.pem

      kaic center serve --host 10.0.0.5 --port 8750 --behind-tls-proxy

      kaic center serve --images /srv/kaic/images --container-runtime bubblewrap
    """
    from kaic.center.executors.registry import OptionError, settings_from_serve
    from kaic.center.listen import check_listening
    from kaic.center.server import serve as run_server
    from kaic.center.settings import CenterSettings

    if executor not in executor_names():
        raise UsageError(
            f"unknown executor {executor!r}", hint=f"use --executor {either(executor_names())}"
        )
    try:
        executor_settings = settings_from_serve(executor, executor_options, os.environ)
    except OptionError as exc:
        raise UsageError(str(exc), hint=exc.hint) from None
    if run_as_user and os.geteuid() != 0:
        raise UsageError(
            "--run-as-user needs a center running as root (to switch to users' accounts)"
        )
    if sftp_port is not None and staging_host is not None:
        raise UsageError(
            "--sftp-port and --staging-host are alternatives",
            hint="serve storage from the embedded endpoint (--sftp-port) or point users at "
            "an external sshd (--staging-host), not both",
        )
    if no_staging and (sftp_port is not None or staging_host is not None):
        raise UsageError(
            "--no-staging contradicts --sftp-port / --staging-host",
            hint="drop --no-staging to offer staging, or the other option to offer none",
        )
    if not no_staging and staging_host is None and sftp_port is None:
        sftp_port = 0  # staging by default: the embedded endpoint on a free port
    from kaic.center.ssh_ca import read_host_key_files

    try:
        host_keys = read_host_key_files(staging_host_key or [])
        settings = CenterSettings(
            state_dir=state_dir_path(state_dir),
            host=host,
            port=port,
            executor=executor,
            gpus=gpus,
            gpu_type=gpu_type,
            access_token_ttl=access_token_ttl,
            kill_grace=kill_grace,
            metrics_interval=metrics_interval,
            metrics_python=metrics_python,
            partitions=_load_partitions(partitions_file) if partitions_file else [],
            staging_host=staging_host,
            staging_port=staging_port,
            staging_host_keys=host_keys,
            sftp_port=sftp_port,
            sftp_max_connections=sftp_max_connections,
            sftp_max_connections_per_user=sftp_max_connections_per_user,
            storage_root=storage_root,
            images=images,
            container_runtime=container_runtime,
            container_devices=list(container_device or []),
            run_as_users=run_as_user,
            single_account_ok=single_account_ok,
            trusted_proxies=list(trusted_proxy or []),
            smtp_relay=smtp_relay,
            smtp_from=smtp_from,
            notify_allow=list(notify_allow or []),
            executor_settings=executor_settings,
            tls_cert=tls_cert,
            tls_key=tls_key,
            behind_tls_proxy=behind_tls_proxy,
            secrets_key_file=secrets_key,
        )
        # Before anything is created or bound: a non-loopback plain-http bind, a key others
        # can read, a certificate that does not load.
        check_listening(settings)
    except ValueError as exc:
        raise UsageError(str(exc), hint="see `kaic center serve --help` for examples") from exc
    settings.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    scheme = "https" if settings.serves_tls else "http"
    from kaic.center.accounts import SharedCenterAccount, shared_center_account_users

    # Early, before anything binds; `run_server` checks again (for every entry point) and
    # logs the warning for users who share the center's account.
    try:
        shared_center_account_users(settings)
    except SharedCenterAccount as exc:
        raise UsageError(str(exc), hint=exc.hint) from None
    print(
        f"kaic center: state in {visible(settings.state_dir)}; starting on "
        f"{scheme}://{visible(host)}:{port} "
        "(Ctrl-C to stop)",
        file=sys.stderr,
    )
    try:
        run_server(settings, ready_file=Path(ready_file) if ready_file else None)
    except SharedCenterAccount as exc:  # a user added meanwhile
        raise UsageError(str(exc), hint=exc.hint) from None
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
def ssh_ca(
    ctx: typer.Context, state_dir: StateDirOpt = None, json_out: JsonOpt = False, jq: JqOpt = None
) -> None:
    """Print the center's SSH user CA public key (created on first use).

    Add it to the staging sshd's TrustedUserCAKeys; users then log in with its certificates.

    Example: kaic center ssh-ca --state-dir ./state >> /etc/ssh/kaic_user_ca.pub
    """
    from kaic.center.ssh_ca import UserCA

    app_ = get_app(ctx)
    directory = state_dir_path(state_dir)
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    ca = UserCA(directory)
    line = ca.public_key_line()
    app_.emit({"public_key": line, "key_file": str(ca.key_path)}, lambda: app_.out(line))
