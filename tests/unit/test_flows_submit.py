"""`kaic submit` as a flow, in process: plain callables for what it says, a FakeCenter."""

from __future__ import annotations

from pathlib import Path

import pytest

from kaic.flows.submit import SubmitRequest, submit
from kaic.flows.ui import Ui
from kaic.jobspec import SubmitOverrides
from kaic.models import Job
from tests.inprocess import FakeCenter


def _run(center: FakeCenter, request: SubmitRequest) -> tuple[list[str], list[str]]:
    """What the flow said (info) and the order of events the caller saw."""
    said: list[str] = []
    seen: list[str] = []
    session = center.session()

    def submitted(job: Job) -> None:
        seen.append(f"submitted {job.id}")

    def record_output(data: bytes) -> None:
        seen.append(f"log {data.decode().strip()}")

    done = submit(
        lambda: session,
        request,
        Ui(info=said.append, warn=said.append, sleep=lambda _s: None),
        logs={"stdout": record_output, "stderr": record_output},
        on_submitted=submitted,
    )
    seen.append(f"exit {done.exit_code}")
    return said, seen


def test_outputs_are_fetched_only_when_waiting(tmp_path: Path) -> None:
    center = FakeCenter()
    center.serve_jobs(state="PENDING")
    jobfile = tmp_path / "job.yaml"
    jobfile.write_text("run: ./train.sh\noutputs: [{from: runs/out, to: ./out}]\n")
    said, seen = _run(center, SubmitRequest(jobfile, SubmitOverrides()))
    assert seen == ["submitted 42", "exit 0"]
    assert said == [
        "output runs/out is fetched only with --wait or --follow; later: "
        "kaic data pull ~/runs/out ./out"
    ]


def test_the_job_is_announced_before_its_logs_and_its_end() -> None:
    center = FakeCenter()
    center.serve_jobs(state="FAILED", exit_code=5)
    center.logs[("42", "stdout")] = b"hello\n"
    request = SubmitRequest(None, SubmitOverrides(command=["echo", "hello"]), follow=True)
    said, seen = _run(center, request)
    assert seen == ["submitted 42", "log hello", "exit 5"]
    assert said == ["job 42 ended FAILED (exit code 5)"]


def test_a_dry_run_submits_nothing() -> None:
    center = FakeCenter()
    center.on("POST", "/v1/jobs", json={"dry_run": True, "valid": True})
    said, seen = _run(center, SubmitRequest(None, SubmitOverrides(command=["true"]), dry_run=True))
    assert seen == ["exit 0"] and said == []
    (sent,) = center.requests
    assert sent.url.params["dry_run"] == "true"


def test_ctrl_c_while_staging_says_how_to_go_on(monkeypatch: pytest.MonkeyPatch) -> None:
    """Inputs: nothing was submitted, the same command resumes. Outputs: the job has ended, so
    the hint is the pull that fetches the rest — never submitting the job again."""
    import kaic.flows.data
    import kaic.flows.ssh_target
    import kaic.staging.transfer
    from kaic.errors import Interrupted
    from kaic.flows.job_staging import Staged, _sync

    def pressed(*_a: object, **_k: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(kaic.flows.ssh_target, "resolve_target", lambda _s: (None, None))
    monkeypatch.setattr(kaic.staging.transfer, "push", pressed)
    monkeypatch.setattr(kaic.staging.transfer, "pull", pressed)
    item = Staged(src="~/runs/ckpt", dst="./ckpt", local="/tmp/ckpt")
    session = FakeCenter().session()
    with pytest.raises(Interrupted) as pulled:
        _sync(session, Ui(), False, [item])
    assert "`kaic data pull ~/runs/ckpt ./ckpt` fetches the rest" in str(pulled.value.hint)
    with pytest.raises(Interrupted) as pushed:
        _sync(session, Ui(), True, [item])
    assert "nothing was submitted; run the same command again" in str(pushed.value.hint)
    assert kaic.flows.data.RESUME_HINT.startswith("run the same command again to resume")
