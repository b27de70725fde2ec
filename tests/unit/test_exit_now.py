"""`kaic` ends without the interpreter's teardown (`kaic.__main__.exit_now`), and loses
nothing by it: exit codes, every byte of its output, the exit handlers, a thread that is no
daemon, and a reader that went away."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from kaic.cli.main import build_app
from tests.helpers import cli_env


def _kaic(tmp_path: Path, *argv: str, code: str = "") -> subprocess.CompletedProcess[str]:
    """`kaic ARGV` through the console script's entry point, after `code`."""
    program = f"import sys\nsys.argv = ['kaic', *{list(argv)!r}]\n{code}\n"
    program += "import kaic.__main__ as m\nm.main()\nprint('after main', file=sys.stderr)\n"
    env = cli_env()
    env.update(KAIC_CONFIG_DIR=str(tmp_path / "config"), KAIC_STATE_DIR=str(tmp_path / "state"))
    return subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, env=env, timeout=60
    )


def test_exit_codes_and_the_whole_output_survive_the_quick_exit(tmp_path: Path) -> None:
    teardown = "class Late:\n    def __del__(self): print('torn down')\nlate = Late()\n"
    helped = _kaic(tmp_path, "data", "push", "--help", code=teardown)
    assert helped.returncode == 0
    assert "torn down" not in helped.stdout  # no teardown: the quick exit was taken
    expected = CliRunner().invoke(build_app(), ["data", "push", "--help"], prog_name="kaic")
    assert helped.stdout.split() == expected.output.split()  # (wrapped to another width)
    assert "after main" not in helped.stderr  # the process ended in main()
    bad = _kaic(tmp_path, "data", "push", "--bogus")
    assert bad.returncode == 2 and "No such option: --bogus" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_exit_handlers_run_and_a_thread_that_is_no_daemon_is_waited_for(tmp_path: Path) -> None:
    marker = tmp_path / "thread-done"
    code = (
        "import atexit, threading, time\n"
        "atexit.register(lambda: print('exit handler ran', flush=True))\n"
        "def late():\n"
        f"    time.sleep(0.5); open({str(marker)!r}, 'w').close()\n"
        "threading.Thread(target=late).start()\n"
    )
    done = _kaic(tmp_path, "--help", code=code)
    assert done.returncode == 0, done.stderr
    assert "exit handler ran" in done.stdout
    assert marker.exists()  # the interpreter's own exit waited for the thread


def test_a_reader_that_went_away_gets_no_traceback(tmp_path: Path) -> None:
    env = cli_env()
    env.update(KAIC_CONFIG_DIR=str(tmp_path / "config"), KAIC_STATE_DIR=str(tmp_path / "state"))
    kaic = subprocess.Popen(
        [sys.executable, "-m", "kaic", "data", "push", "--help"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    assert kaic.stdout is not None and kaic.stderr is not None
    kaic.stdout.close()  # (`kaic … | head -0`)
    err = kaic.stderr.read().decode()
    assert kaic.wait(60) in (0, 1, 120)  # (1: the CLI saw the pipe break, as before)
    assert "Traceback" not in err
