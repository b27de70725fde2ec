"""Hostile strings from the center and from file systems are shown as text, in every command
that prints them, on a terminal and piped (`tests/hostile.py` is the corpus).

A center may refuse control characters in job fields, and kaic's own job model refuses them
before anything is sent (exit 2 naming the flag): each hostile job name is either refused
with a clear error naming the field or stored and shown safely. Reasons and event messages
come from executors (Slurm's reason strings) and older centers: the job tests give them to
the commands as such a center would answer them (`FakeCenter`, in process: what is tested is
what the commands show; the real center's own refusals are `tests/center/`'s). File names
come from the local and the remote file system, through a real local center and its SFTP
endpoint. A center's error message is faked with respx (the real center quotes what it
echoes).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import httpx
import pytest
import respx

from kaic.errors import ExitCode
from kaic.text import visible, visible_lines
from tests.helpers import run_cli
from tests.hostile import CORPUS, RAW_FILE_NAMES, Hostile, assert_shown_safely, by_label
from tests.inprocess import FakeCenter, RunLine
from tests.terminal import run_on_terminal


def _no_crash(output: str) -> None:
    assert "Traceback" not in output and "internal error" not in output, output


def test_visible_escapes_every_corpus_entry_as_written() -> None:
    for entry in CORPUS:
        assert visible(entry.value) == entry.shown, entry.label
        assert visible(entry.shown) == entry.shown  # idempotent: sink and renderer may both apply
    for raw, shown in RAW_FILE_NAMES:
        assert visible(raw) == shown
        assert visible(os.fsdecode(raw)) == shown  # surrogateescape, as os.listdir gives it
    assert visible("\ud800") == "\\ud800"  # a lone surrogate (from JSON) would crash print()
    assert visible_lines("two\nlines\x1b") == "two\nlines\\x1b"


# -- jobs: names through the API, reasons and events as a center answers them --------------


def _store_as_a_center_would(center: FakeCenter, job_id: str, entry: Hostile, state: str) -> None:
    """Give a finished job `entry` as its name, end reason and last event message, as an
    executor (a Slurm reason) or an older center that accepted any name would have."""
    center.jobs[job_id].update(name=entry.value, reason=entry.value, state=state, exit_code=1)
    at = center.events[job_id][-1]["at"]
    center.events[job_id].append({"at": at, "state": state, "message": entry.value})


@pytest.fixture
def hostile_jobs(fake_center: FakeCenter, run_line: RunLine) -> dict[str, str]:
    """One finished job per corpus entry (label -> job id), the entry in its name, reason
    and events. Submitting with the hostile name shows kaic either refuses it with a clear
    error naming the field or sends it."""
    fake_center.serve_jobs()
    ids: dict[str, str] = {}
    for entry in CORPUS:
        if "\x00" in entry.value:  # argv cannot carry NUL: only the stored path below
            res = run_line("submit", "--name", f"refused-{entry.label}", "--", "true")
        else:
            res = run_line("submit", "--name", entry.value, "--", "true", expect=None)
            _no_crash(res.stderr)
            if res.code != 0:
                assert res.code in (ExitCode.USAGE, ExitCode.REJECTED), res.explain()
                assert entry.has_controls or len(entry.value) > 256, res.explain()  # markup and
                # bidi stay legal in names
                assert "name" in res.stderr, res.explain()  # the refusal names the field
                assert_shown_safely(res.stderr, entry, literal=False)
                res = run_line("submit", "--name", f"refused-{entry.label}", "--", "true")
        ids[entry.label] = res.stdout.strip()
    run_line("wait", *ids.values())
    for entry in CORPUS:
        # The long one ends CANCELLED, so a terminal table of the FAILED ones stays narrow.
        state = "CANCELLED" if entry.label == "long" else "FAILED"
        _store_as_a_center_would(fake_center, ids[entry.label], entry, state)
    return ids


def test_jobs_show_wait_show_hostile_fields_as_text(
    hostile_jobs: dict[str, str], run_line: RunLine
) -> None:
    piped = run_line("jobs", "--all", "--limit", "100")
    assert piped.stdout.count("\n") == len(CORPUS) + 1  # header + one row each: no line breaks
    for entry in CORPUS:
        assert_shown_safely(piped.stdout, entry)

    table = run_line("jobs", "--all", "--state", "FAILED", "--limit", "100", terminal=True)
    _no_crash(table.stdout + table.stderr)
    assert "\x1b[" in table.stdout  # it is the rich table (coloured states)
    for entry in CORPUS:
        if entry.label != "long":
            assert_shown_safely(table.stdout, entry)

    waited = run_line("wait", *hostile_jobs.values(), expect=1)  # the first FAILED job's code
    on_terminal = run_line("wait", *hostile_jobs.values(), expect=1, terminal=True)
    for entry in CORPUS:
        assert_shown_safely(waited.stderr, entry)
        assert_shown_safely(on_terminal.stdout + on_terminal.stderr, entry)

    for entry in CORPUS:
        job_id = hostile_jobs[entry.label]
        shown = run_line("show", job_id)
        assert_shown_safely(shown.stdout, entry)
        assert shown.stdout.count(entry.shown) == 3  # name, reason, the event's message
        if entry.has_controls or entry.raw:
            terminal = run_line("show", job_id, terminal=True)
            assert_shown_safely(terminal.stdout, entry)


def test_json_output_stays_exact(hostile_jobs: dict[str, str], run_line: RunLine) -> None:
    for label in ("csi-clear", "osc8-link", "lf", "nul", "bidi-rlo", "markup-close"):
        entry = by_label(label)
        doc = run_line("show", hostile_jobs[label], "--json").json()
        assert isinstance(doc, dict)
        assert doc["name"] == doc["reason"] == doc["events"][-1]["message"] == entry.value


def test_jq_shows_strings_as_text_on_a_terminal(
    hostile_jobs: dict[str, str], run_line: RunLine
) -> None:
    # `--jq` prints strings raw, as `jq -r` does — piped. On a terminal they are outside
    # data like any other.
    for entry in CORPUS:
        job_id = hostile_jobs[entry.label]
        piped = run_line("show", job_id, "--jq", ".name")
        assert piped.stdout == entry.value + "\n"
        terminal = run_line("show", job_id, "--jq", ".name", terminal=True)
        assert_shown_safely(terminal.stdout, entry)


# -- a center's error message ---------------------------------------------------------------


def test_a_centers_error_message_is_shown_as_text(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from kaic.cli.main import main

    hostile = [by_label(label) for label in ("osc8-link", "csi-clear", "cr", "bidi-rlo")]
    message = "quota exceeded " + " ".join(h.value for h in hostile) + " [/bold]x"
    monkeypatch.setenv("KAIC_CENTER", "https://center.test")
    monkeypatch.setenv("KAIC_TOKEN", "kaic_" + "a" * 40)
    monkeypatch.setattr(sys, "argv", ["kaic", "jobs"])
    monkeypatch.setattr("kaic.cli.interrupt.install", lambda: None)  # pytest keeps its Ctrl-C
    with respx.mock(assert_all_called=True) as mock:
        mock.get(url__startswith="https://center.test/v1/jobs").mock(
            return_value=httpx.Response(
                403,
                json={"error": {"code": "forbidden", "message": message, "request_id": "r1"}},
            )
        )
        with pytest.raises(SystemExit) as exit_:
            main()
    assert exit_.value.code == ExitCode.REJECTED
    err = capsys.readouterr().err
    assert err.startswith("error: quota exceeded") and "[/bold]x" in err, err
    for entry in hostile:
        assert_shown_safely(err, entry)


# -- file names: data push/pull/ls and their warnings ---------------------------------------


def _make_tree(root: Path) -> list[Hostile]:
    """A directory of files named after the corpus (those a file system allows), a FIFO (kaic
    skips it with a warning naming it), returned: the entries used."""
    root.mkdir()
    used = [entry for entry in CORPUS if entry.file_name]
    for entry in used:
        (root / entry.value).write_bytes(entry.label.encode())
    os.mkfifo(root / ("fifo-" + by_label("csi-clear").value))
    return used


@pytest.mark.timeout(300)
def test_file_names_are_shown_as_text(isolated_dirs: Path, tmp_path: Path) -> None:
    src = tmp_path / "src"
    used = _make_tree(src)
    fifo = by_label("csi-clear")

    dry = run_cli("data", "push", str(src), "hostile", "--dry-run")
    pushed = run_cli("data", "push", str(src), "hostile")
    for entry in used:
        assert_shown_safely(dry.stdout, entry)  # "send SRC -> DST" lines
    for res in (dry, pushed):  # the warning that names the skipped FIFO
        assert f"warning: skipping special file {src}/fifo-{fifo.shown}" in res.stderr
        assert_shown_safely(res.stderr, fifo, literal=False)

    listed = run_cli("data", "ls", "hostile")
    long = run_cli("data", "ls", "hostile", "-l")
    terminal = run_on_terminal("data", "ls", "hostile")
    assert terminal.code == 0, terminal.explain()
    pull = run_cli("data", "pull", "hostile", str(tmp_path / "dst"), "--dry-run")
    for output in (listed.stdout, long.stdout, terminal.text, pull.stdout):
        _no_crash(output)
        for entry in used:
            assert_shown_safely(output, entry)
    assert listed.stdout.count("\n") == len(used)  # one line per name

    names = {e["name"] for e in run_cli("data", "ls", "hostile", "--json").json()}  # type: ignore[union-attr]
    assert {entry.value for entry in used} == names  # JSON stays exact


def test_non_utf8_file_names_are_shown_escaped(isolated_dirs: Path, tmp_path: Path) -> None:
    # Local names that are not UTF-8 (a Latin-1 file system, a careless tool).
    src = tmp_path / "raw"
    src.mkdir()
    for raw, _ in RAW_FILE_NAMES:
        with open(os.path.join(os.fsencode(src), raw), "wb") as f:
            f.write(b"x")
    dry = run_cli("data", "push", str(src), "raw", "--dry-run")
    terminal = run_on_terminal("data", "push", str(src), "raw", "--dry-run")
    assert terminal.code == 0, terminal.explain()
    for output in (dry.stdout, terminal.text):
        assert "\ufffd" not in output  # no undecodable byte reached the output raw
        assert "\x1b[2J" not in output
        for _, shown in RAW_FILE_NAMES:
            assert f"/{shown} -> raw/{shown} (1 B)" in output
