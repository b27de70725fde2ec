"""`kaic exec`, `shell`, `alloc`, `forward`: a terminal and ports inside a running job,
through the center API (WebSockets on the one HTTPS endpoint).

Thin commands: parse, call one flow (`kaic.flows.interactive`, `alloc`, `forward`), exit with
what it returns. Their output is the remote command's own bytes, so none of them has
`--json`; `forward` prints each local URL alone on a line of stdout.
"""

import sys
from typing import TYPE_CHECKING, Annotated

import typer

from kaic.cli import complete
from kaic.cli.context import AppContext, get_app

if TYPE_CHECKING:
    from kaic.flows.forward import PortSpec
    from kaic.flows.interactive import Streams

JobArg = Annotated[
    str,
    typer.Argument(
        metavar="JOB", help="Job id (must be RUNNING).", autocompletion=complete.job_ids
    ),
]
CommandArg = Annotated[
    list[str] | None,
    typer.Argument(
        metavar="CMD", help="The command and its arguments, after `--`.", show_default=False
    ),
]


def register(app: typer.Typer) -> None:
    app.command("exec")(exec_)
    app.command("shell")(shell)
    app.command("alloc")(alloc)
    app.command("forward")(forward)


def _streams(app: AppContext) -> "Streams":
    """The session's ends: this process's stdin, the context's stdout and stderr as raw
    bytes, and the terminal when stdin is one."""
    from kaic.cli.render import binary_writer
    from kaic.flows.interactive import Streams
    from kaic.flows.terminal import Terminal

    return Streams(
        stdin=sys.stdin,
        stdout=binary_writer(app.stdout),
        stderr=binary_writer(app.stderr),
        terminal=Terminal.of(sys.stdin),
    )


def exec_(
    ctx: typer.Context,
    job_id: JobArg,
    command: CommandArg = None,
    tty: Annotated[
        bool,
        typer.Option("--tty", "-t", help="Run on a pseudo-terminal (stdout and stderr merged)."),
    ] = False,
) -> None:
    """Run a command inside a running job; exit with its exit code.

    It runs in the job's allocation as your unix account there, in the job's workdir, with
    its environment (the same GPUs). stdout and stderr stay separate; stdin is passed until
    it ends. -t runs it on a pseudo-terminal (for programs that need one: top, vim).

    Examples:

      kaic exec 42 -- nvidia-smi

      kaic exec 42 -- python -c 'import torch; print(torch.cuda.device_count())'

      tar c data | kaic exec 42 -- tar x -C scratch     # stdin is passed

      kaic exec -t 42 -- htop
    """
    from kaic.errors import UsageError
    from kaic.flows.interactive import Command, run_command
    from kaic.flows.terminal import Terminated, term_env

    app = get_app(ctx)
    if not command:
        raise UsageError(
            "give the command to run after `--`", hint="e.g. `kaic exec 42 -- nvidia-smi`"
        )
    env = term_env() if tty else {}
    try:
        code = run_command(
            app.session(), job_id, Command(command, tty=tty, env=env), _streams(app), app.ui()
        )
    except Terminated as ended:
        app.info(ended.message)
        code = 128 + ended.signum
    raise typer.Exit(code)


def shell(ctx: typer.Context, job_id: JobArg) -> None:
    """Open an interactive shell inside a running job; exit with the shell's exit code.

    A real pseudo-terminal: your terminal is in raw mode while it runs, so Ctrl-C and Ctrl-Z
    go to the job's shell (not to kaic), and window size changes follow. Leave it with
    `exit` or Ctrl-D. Your terminal is restored however the session ends (also when the
    connection drops or kaic is sent SIGTERM/SIGHUP; only `kill -9` cannot be caught — type
    `reset` then).

    Example: kaic shell 42
    """
    from kaic.flows.interactive import open_shell
    from kaic.flows.terminal import Terminated, term_env

    app = get_app(ctx)
    try:
        code = open_shell(app.session(), job_id, _streams(app), app.ui(), term_env())
    except Terminated as ended:
        app.info(ended.message)
        code = 128 + ended.signum
    raise typer.Exit(code)


def alloc(
    ctx: typer.Context,
    command: CommandArg = None,
    gpus: Annotated[int | None, typer.Option("--gpus", help="GPUs to allocate.", min=0)] = None,
    time: Annotated[
        str | None, typer.Option("--time", help="Time limit: 90s, 30m, 4h, 1-12:00:00.")
    ] = None,
    partition: Annotated[
        str | None,
        typer.Option("--partition", help="Partition (queue).", autocompletion=complete.partitions),
    ] = None,
    project: Annotated[str | None, typer.Option("--project", help="Project charged.")] = None,
    keep: Annotated[
        bool, typer.Option("--keep", help="Keep the allocation after the shell or command ends.")
    ] = False,
) -> None:
    """Allocate GPUs interactively (like salloc), then open a shell in the allocation.

    The allocation is a job of kind `interactive` (listed by `kaic jobs`, charged like any
    job). While it waits, its pending reason is shown on stderr; Ctrl-C then cancels it.
    Once it runs you get a shell inside it (or CMD runs there, as `kaic exec` would); when
    that ends the allocation is released (cancelled) unless --keep. Exit code: the shell's
    or CMD's.

    Examples:

      kaic alloc --gpus 1 --time 2h

      kaic alloc --gpus 8 --partition h100 --project ai-2026-0042

      kaic alloc --gpus 1 --time 30m -- python bench.py

      kaic alloc --gpus 1 --time 8h --keep     # then: kaic shell ID, kaic forward ID 8888
    """
    from kaic.flows.alloc import AllocRequest, allocate
    from kaic.flows.terminal import Terminated, term_env

    app = get_app(ctx)
    request = AllocRequest(
        gpus=gpus,
        time=time,
        partition=partition,
        project=project,
        keep=keep,
        command=list(command) if command else None,
        env=term_env(),
    )
    try:
        code = allocate(app.session, request, _streams(app), app.ui())
    except Terminated as ended:
        app.info(ended.message)
        code = 128 + ended.signum
    raise typer.Exit(code)


def forward(
    ctx: typer.Context,
    job_id: JobArg,
    ports: Annotated[
        list[str],
        typer.Argument(
            metavar="PORT[:LOCALPORT]...",
            help="Port inside the job, and the local port (default: the same) that reaches it.",
        ),
    ],
) -> None:
    """Forward ports of a running job to this machine (127.0.0.1 only).

    Each PORT inside the job is reachable at http://127.0.0.1:LOCALPORT (printed on stdout,
    one line per port) until the job ends or Ctrl-C. Many connections may run at once.

    Examples:

      kaic forward 42 8888                # JupyterLab in job 42: open http://127.0.0.1:8888

      kaic forward 42 8888:18888 6006     # local 18888 -> 8888 in the job, and TensorBoard
    """
    from kaic.flows.forward import forward as run_forward
    from kaic.flows.forward import parse_ports
    from kaic.text import visible

    app = get_app(ctx)
    specs = parse_ports(ports)

    def listening(spec: "PortSpec", url: str) -> None:
        app.out(url)
        app.info(
            f"Forwarding {url} -> port {spec.remote} in job {visible(job_id)} (Ctrl-C to stop)"
        )

    final = run_forward(app.session(), job_id, specs, app.ui(), on_listening=listening)
    app.info(f"job {visible(final.id)} ended {final.state.value}; forwarding stopped")
