"""Shell completion in real bash and zsh: commands, your job ids (from the running local
center), states, profiles and paths on center storage — never a prompt, never a center
started by a TAB."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from tests.helpers import cli_env, run_cli, unavailable

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def _env() -> dict[str, str]:
    env = cli_env(None)
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env["KAIC_COMPLETION_TIMEOUT"] = "30"  # a loaded CI machine: the lookups must finish
    return env


def bash_complete(line: str) -> list[str]:
    """What TAB offers at the end of `line` in real bash with kaic's completion loaded."""
    words = line.split(" ")
    script = (
        f"source {REPO / 'completions' / 'kaic.bash'}\n"
        'COMP_WORDS=("$@"); COMP_CWORD=$(( ${#COMP_WORDS[@]} - 1 ))\n'
        "_kaic_completion kaic\n"
        'printf "%s\\n" "${COMPREPLY[@]}"\n'
    )
    done = subprocess.run(
        ["bash", "-c", script, "bash", *words],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 0, done.stderr
    return [w for w in done.stdout.splitlines() if w]


def test_bash_registers_the_completion_function() -> None:
    script = f"source {REPO / 'completions' / 'kaic.bash'}; complete -p kaic"
    shown = subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=True)
    assert "-F _kaic_completion" in shown.stdout and shown.stdout.rstrip().endswith(" kaic")


def test_bash_completes_commands_states_and_job_ids(isolated_dirs: Path) -> None:
    assert {"secret", "shell", "show", "stats", "submit"} <= set(bash_complete("kaic s"))
    assert bash_complete("kaic jobs --state RU") == ["RUNNING"]
    # No center yet: nothing to offer, and a TAB starts none.
    assert bash_complete("kaic show ") == []
    assert not (isolated_dirs / "state" / "center" / "center.json").exists()

    first = run_cli("submit", "--name", "one", "--", "true").stdout.strip()
    second = run_cli("submit", "--name", "two", "--", "true").stdout.strip()
    offered = bash_complete("kaic show ")
    assert {first, second} <= set(offered)
    assert bash_complete(f"kaic logs {second}") == [second]
    assert bash_complete(f"kaic wait {first} {second[:-1]}") == [
        i for i in offered if i.startswith(second[:-1])
    ]


def test_bash_completes_profiles(isolated_dirs: Path) -> None:
    config = isolated_dirs / "config" / "config.toml"
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text(
        'current = "work"\n\n[profiles.work]\ncenter = "https://a.example"\n\n'
        '[profiles.lab]\ncenter = "https://b.example"\n'
    )
    assert bash_complete("kaic config use ") == ["lab", "work"]
    assert bash_complete("kaic --profile w") == ["work"]


def test_bash_completes_paths_on_center_storage(isolated_dirs: Path, tmp_path: Path) -> None:
    local = tmp_path / "data"
    (local / "sub").mkdir(parents=True)
    (local / "a.txt").write_text("a")
    (local / "sub" / "b.txt").write_text("b")
    run_cli("data", "push", str(local), "datasets")
    assert bash_complete("kaic data ls dat") == ["datasets/"]
    assert sorted(bash_complete("kaic data pull datasets/")) == ["datasets/a.txt", "datasets/sub/"]


def test_zsh_loads_the_completion_and_gets_job_ids(isolated_dirs: Path) -> None:
    zsh = shutil.which("zsh")
    if zsh is None:
        unavailable("zsh is not installed (apt-get install zsh)")
    script = (
        "autoload -Uz compinit && compinit -u -D\n"
        f"source {REPO / 'completions' / 'kaic.zsh'}\n"
        "print -r -- ${_comps[kaic]}\n"
    )
    shown = subprocess.run([zsh, "-f", "-c", script], capture_output=True, text=True, env=_env())
    assert shown.returncode == 0 and shown.stdout.strip() == "_kaic_completion", shown.stderr

    job = run_cli("submit", "--name", "zsh-job", "--", "true").stdout.strip()
    # What the zsh function evaluates: kaic answered in zsh's own completion protocol.
    env = {**_env(), "_KAIC_COMPLETE": "complete_zsh", "_TYPER_COMPLETE_ARGS": "kaic show "}
    answer = subprocess.run(["kaic"], capture_output=True, text=True, env=env, timeout=60)
    assert answer.stdout.startswith("_arguments"), answer.stdout
    assert f'"{job}":"zsh-job ' in answer.stdout
