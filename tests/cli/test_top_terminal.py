"""`kaic top`'s live view on a pseudo-terminal: it refreshes (one request per refresh), shows
hostile job names as text, and leaves on `q`, on Ctrl-C and on SIGTERM with the terminal as
it found it (the test holds the terminal and compares its settings before, during and after).

The CLI runs as a subprocess (`python -m kaic top`) with the pseudo-terminal as its
controlling terminal, against a `FakeCenter` served on 127.0.0.1 (`tests/fake_http.py`), so
the answers are known and the requests counted.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import termios
from collections.abc import Callable, Iterator

import pytest

from tests.fake_http import served
from tests.helpers import cli_env
from tests.hostile import by_label
from tests.inprocess import TOKEN, FakeCenter
from tests.metrics_trace import gpu, running_job, serve
from tests.terminal import Live, start_on_terminal

RUNNING_PATH = "/v1/metrics/running"
HOSTILE = by_label("osc-title")


@pytest.fixture
def center() -> Iterator[tuple[FakeCenter, str]]:
    fake = serve(FakeCenter())
    fake.running = [
        running_job("42", "train-llm", [gpu(0, 87.0, 61.2, 312.4), gpu(1, 2.0, 1.0, 71.0)]),
        running_job("43", HOSTILE.value, [gpu(0, 0.0, 0.5, 60.0)]),
    ]
    with served(fake) as url:
        yield fake, url


@pytest.fixture
def top(center: tuple[FakeCenter, str]) -> Iterator[Callable[..., Live]]:
    started: list[Live] = []

    def start(*args: str) -> Live:
        env = cli_env(KAIC_CENTER=center[1], KAIC_TOKEN=TOKEN)
        live = start_on_terminal("top", *args, env=env)
        started.append(live)
        return live

    yield start
    for live in started:
        live.close()


def refreshed(center: FakeCenter, times: int) -> Callable[[], bool]:
    return lambda: len(center.sent("GET", RUNNING_PATH)) >= times


@pytest.mark.parametrize("leave", ["q", "ctrl-c"])
def test_top_refreshes_and_leaves_with_the_terminal_restored(
    center: tuple[FakeCenter, str], top: Callable[..., Live], leave: str
) -> None:
    fake = center[0]
    live = top("--interval", "0.5")
    before = termios.tcgetattr(live.tty)
    live.until(lambda: b"train-llm" in live.shown)
    live.until(refreshed(fake, 3))  # it refreshes by itself
    during = termios.tcgetattr(live.tty)
    assert not during[3] & termios.ICANON and not during[3] & termios.ECHO  # keys, unechoed
    assert during[3] & termios.ISIG  # Ctrl-C still a signal
    os.write(live.master, b"q" if leave == "q" else b"\x03")
    assert live.exit_code() == 0
    assert termios.tcgetattr(live.tty) == before
    text = live.shown.decode(errors="replace")
    assert "\x1b[?25l" in text and text.rstrip().endswith("\x1b[?25h")  # cursor given back
    assert "q to quit" in text and "idle" in text
    assert "Traceback" not in text and "interrupted" not in text
    # hostile job name: shown as text, never as the window-title sequence it is
    assert HOSTILE.shown in text and all(raw not in text for raw in HOSTILE.raw)
    # every request was the one per refresh: never one per job
    assert {(r.method, r.url.path) for r in fake.requests} == {("GET", RUNNING_PATH)}


def test_top_sent_sigterm_restores_the_terminal(
    center: tuple[FakeCenter, str], top: Callable[..., Live]
) -> None:
    live = top()
    before = termios.tcgetattr(live.tty)
    live.until(lambda: b"train-llm" in live.shown)
    live.proc.send_signal(signal.SIGTERM)
    assert live.exit_code() == 128 + signal.SIGTERM
    assert termios.tcgetattr(live.tty) == before
    assert "kaic received SIGTERM" in live.shown.decode(errors="replace")


def test_top_without_jobs_says_so_and_keeps_watching(
    center: tuple[FakeCenter, str], top: Callable[..., Live]
) -> None:
    fake = center[0]
    fake.running = []
    live = top("--interval", "0.5")
    live.until(lambda: b"No running jobs" in live.shown)
    fake.running = [running_job("44", "late-starter", [gpu(0, 50.0, 1.0, 100.0)])]
    live.until(lambda: b"late-starter" in live.shown)  # a job that starts shows up
    os.write(live.master, b"q")
    assert live.exit_code() == 0


def test_top_piped_is_one_snapshot(center: tuple[FakeCenter, str]) -> None:
    fake, url = center
    env = cli_env(KAIC_CENTER=url, KAIC_TOKEN=TOKEN)
    out = subprocess.run(
        [sys.executable, "-m", "kaic", "top"], capture_output=True, text=True, env=env,
        timeout=60, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[0].split()[:3] == ["JOB", "NAME", "ELAPSED"]
    assert "\x1b[" not in out.stdout and len(fake.sent("GET", RUNNING_PATH)) == 1
