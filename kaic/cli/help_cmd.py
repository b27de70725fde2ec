"""`kaic help TOPIC`: reference pages that do not belong to one command."""

import typer

app = typer.Typer(
    help="Reference topics (`kaic help exit-codes`, `kaic help jobfile`).", no_args_is_help=True
)

EXIT_CODES = """\
kaic exit codes

  0        success (waiting commands: the job COMPLETED)
  1        error not covered below
  2        usage error (bad flag, bad value, malformed URL)
  3        not authenticated, or token expired/revoked — run `kaic login`
  4        not found (job, remote path, profile); `kaic bench`: no GPU to validate
  5        center or staging host unreachable / transport failure (retryable)
  6        rejected by the center (validation, quota, permission, rate limit)
  N        waiting commands (`submit --wait`, `wait`, `logs -f`): the job's own exit code
           (128+N when the job was killed by signal N)
  124      waiting commands: the job hit its time limit (TIMEOUT)
  125      waiting commands: the job was CANCELLED
  126      waiting commands: the system ended the job (NODE_FAIL, PREEMPTED, BOOT_FAIL;
           retryable)
  130      interrupted (Ctrl-C); a transfer resumes when the same command runs again
"""


@app.command("exit-codes")
def exit_codes() -> None:
    """Print the exit-code table scripts and CI can rely on.

    Example: kaic help exit-codes
    """
    print(EXIT_CODES, end="")


@app.command("jobfile")
def jobfile() -> None:
    """Print every key of a job file: type, default, limits, the flag that sets it, an example.

    Generated from the job model `kaic submit` checks against, so it is always current.

    Example: kaic help jobfile | less
    """
    from kaic.jobspec.reference import reference

    print(reference(), end="")
