"""Secrets through the real CLI and a real center on loopback: set (standard input and a
hidden prompt on a pseudo-terminal), list, rm; a job gets the values in its environment and
nothing else shows or holds them — no command's output or `--json`, no process's argv, not
the center's log, database (and its WAL) or the job's files other than its own output."""

from __future__ import annotations

import os
from pathlib import Path

from tests.e2e.test_login import Alice, login
from tests.helpers import poll, run_cli, run_in_pty

WANDB = "wandb-6c1f0e9a-E2E-SECRET-41d7"
HF = "hf_Qm3-E2E-SECRET-prompt-92b0"
#: a value given on the command line (refused): not one the argv scan of another test, maybe
#: running at the same time in another worker, looks for
ON_ARGV = "argv-5d2e-E2E-REFUSED-77aa"


def _everywhere(root: Path, skip: set[Path]) -> dict[Path, bytes]:
    found = {}
    for dirpath, _, files in os.walk(root):
        for name in files:
            path = Path(dirpath) / name
            if path not in skip and not path.is_symlink():
                found[path] = path.read_bytes()
    return found


def _argv_of_every_process() -> list[bytes]:
    argvs = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                argvs.append(Path(f"/proc/{entry}/cmdline").read_bytes())
            except OSError:
                continue  # gone meanwhile
    return argvs


def test_secrets_reach_the_job_and_nothing_else(alice: Alice, tmp_path: Path) -> None:
    center, user, password = alice
    login(center, user, password)

    piped = run_cli("secret", "set", "wandb", "--stdin", input=WANDB + "\n")
    assert WANDB not in piped.stdout + piped.stderr
    assert "Set secret wandb" in piped.stderr
    code, shown = run_in_pty("secret", "set", "hf", answers=[("Value of secret hf", HF)])
    assert code == 0, shown
    assert HF not in shown  # the prompt hid what was typed

    listed = run_cli("secret", "list", "--json")
    assert [s["name"] for s in listed.json()] == ["hf", "wandb"]  # type: ignore[attr-defined]
    assert WANDB not in listed.stdout and HF not in listed.stdout
    table = run_cli("secret", "list")
    assert "wandb" in table.stdout and WANDB not in table.stdout

    home = center.state_dir / "storage" / "alice"
    release = home / "release"
    job_file = tmp_path / "job.yaml"
    job_file.write_text(
        "env:\n"
        "  WANDB_MODE: offline\n"
        "  WANDB_API_KEY: {secret: wandb}\n"
        "run: |\n"
        '  echo "w=$WANDB_API_KEY h=$HF"\n'
        "  for i in $(seq 1 600); do [ -e release ] && break; sleep 0.05; done\n"
    )
    submitted = run_cli("submit", str(job_file), "--secret", "HF=hf", "--json")
    job_id = submitted.json()["id"]  # type: ignore[index]
    outputs = [submitted.stdout, submitted.stderr]

    def printed() -> str | None:
        out = run_cli("logs", job_id).stdout
        return out if "w=" in out else None

    log = poll(printed, timeout=30, what="the job's line")
    assert f"w={WANDB} h={HF}" in log
    # While it runs: no process has a value in its argv (the center's, the job's wrapper,
    # bash, the job's own)
    for argv in _argv_of_every_process():
        assert WANDB.encode() not in argv and HF.encode() not in argv, argv
    release.touch()
    waited = run_cli("wait", job_id, "--json")
    assert waited.json()[0]["state"] == "COMPLETED"  # type: ignore[index]
    outputs += [
        waited.stdout,
        run_cli("show", job_id, "--json").stdout,
        run_cli("show", job_id).stdout,
        run_cli("jobs", "--all", "--json").stdout,
        run_cli("submit", str(job_file), "--secret", "HF=hf", "--dry-run", "--json").stdout,
    ]
    for text in outputs:
        assert WANDB not in text and HF not in text, text

    job_output = {center.state_dir / "jobs" / job_id / name for name in ("stdout", "stderr")}
    files = _everywhere(center.state_dir, skip=job_output)
    assert center.log in files and center.state_dir / "center.db" in files
    for path, data in files.items():
        assert WANDB.encode() not in data and HF.encode() not in data, path

    removed = run_cli("secret", "rm", "wandb")
    assert "Removed secret wandb" in removed.stderr
    refused = run_cli("submit", str(job_file), "--secret", "HF=hf", expect=6)
    assert "kaic secret set wandb" in refused.stderr
    dry = run_cli("submit", str(job_file), "--dry-run", "--json", expect=None)
    assert "kaic secret set wandb" in dry.stdout + dry.stderr
    run_cli("secret", "rm", "wandb", expect=4)


def test_a_value_never_comes_from_the_command_line(alice: Alice) -> None:
    center, user, password = alice
    login(center, user, password)
    extra = run_cli("secret", "set", "wandb", ON_ARGV, expect=2)
    assert "never given on the command line" in extra.stderr and ON_ARGV not in extra.stderr
    assert run_cli("secret", "list", "--json").json() == []
    no_terminal = run_cli("secret", "set", "wandb", expect=2)
    assert "--stdin" in no_terminal.stderr
    empty = run_cli("secret", "set", "wandb", "--stdin", input="", expect=2)
    assert "empty" in empty.stderr
    bad = run_cli("secret", "set", "bad name", "--stdin", input="x", expect=2)
    assert "not a valid secret name" in bad.stderr
    # The request log of KAIC_DEBUG shows the request, never the body
    debug = run_cli(
        "secret", "set", "wandb", "--stdin", input=WANDB, env={**os.environ, "KAIC_DEBUG": "1"}
    )
    assert "PUT" in debug.stderr and "/v1/secrets/wandb" in debug.stderr
    assert WANDB not in debug.stdout + debug.stderr


def test_a_token_without_secrets_write_cannot_set(alice: Alice) -> None:
    center, user, password = alice
    login(center, user, password)
    created = run_cli("token", "create", "ci", "--json").json()
    assert "secrets:write" not in created["scopes"]  # type: ignore[index]
    ci = {**os.environ, "KAIC_CENTER": center.url, "KAIC_TOKEN": created["token"]}  # type: ignore[index]
    refused = run_cli("secret", "set", "wandb", "--stdin", input=WANDB, env=ci, expect=6)
    assert "secrets:write" in refused.stderr and WANDB not in refused.stderr
    run_cli("secret", "list", env=ci, expect=6)
    writer = run_cli("token", "create", "w", "--scope", "secrets:write", "--json").json()
    ci_w = {**ci, "KAIC_TOKEN": writer["token"]}  # type: ignore[index]
    run_cli("secret", "set", "wandb", "--stdin", input=WANDB, env=ci_w)
