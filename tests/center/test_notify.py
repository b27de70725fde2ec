"""Job-end notifications (`notify:`), delivered to real receivers on 127.0.0.1: a webhook's
JSON and a mail through an SMTP relay, with what they say checked; a target that fails or
hangs delays no other job's notification nor the scheduler, and its failures are the job's
events; nothing is lost across a restart; redirects are not followed; what a center will
not send is refused at submit, saying why."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

from kaic.center.notify.sender import USER_AGENT
from tests.helpers import free_port

from .jobs_support import (
    JobsCenter,
    jobs_center,
    make_settings,
    open_center,
    prepare_state,
    wait_for,
)
from .receivers import hung_target, smtp_receiver, webhook_receiver

# The receivers listen on 127.0.0.1, which an open allow-list refuses (the center's own
# machine): these centers allow it by address, as an operator would.
FAST = {
    "notify_backoff": 0.2,
    "notify_tries": 3,
    "notify_timeout": 5.0,
    "notify_allow": ["127.0.0.1"],
}


def messages(center: JobsCenter, job_id: str) -> list[str]:
    return [e["message"] for e in center.events(job_id)]


def event_with(center: JobsCenter, job_id: str, text: str) -> str | None:
    return next((m for m in messages(center, job_id) if text in m), None)


def submit(center: JobsCenter, run: str, notify: dict[str, Any], **spec: Any) -> dict[str, Any]:
    return center.submit(run, notify=notify, **spec)


def test_a_webhook_receives_the_end_as_json(tmp_path: Path) -> None:
    with webhook_receiver() as hook, jobs_center(tmp_path, gpus=1, **FAST) as center:
        job = submit(
            center,
            "sleep 0.2; exit 4",
            {"webhook": f"{hook.url}/kaic?token=s3cret"},
            name="train",
            resources={"gpus": 1},
        )
        wait_for(lambda: hook.received, what="the webhook")
        (got,) = hook.received
        done = center.job(job["id"])
        body = got.body
        assert body["kind"] == "kaic.job.end"
        assert (body["job_id"], body["name"], body["state"]) == (job["id"], "train", "FAILED")
        assert (body["exit_code"], body["attempt"], body["user"]) == (4, 1, "alice")
        assert body["elapsed_seconds"] >= 0.2
        assert body["gpu_hours"] > 0
        ended = datetime.fromisoformat(done["ended_at"].replace("Z", "+00:00"))
        assert datetime.fromisoformat(body["ended_at"]) == ended
        assert got.path == "/kaic?token=s3cret"
        # Nothing of the center's but who it is: no credentials, no cookies.
        lowered = {k.lower(): v for k, v in got.headers.items()}
        assert "authorization" not in lowered and "cookie" not in lowered
        assert lowered["user-agent"] == USER_AGENT
        note = wait_for(lambda: event_with(center, job["id"], "notified"), what="the event")
        # The event names the host, never the path (it may hold a secret).
        assert note == f"notified: webhook to {hook.url}: 200"


def test_a_mail_goes_through_the_smtp_relay(tmp_path: Path) -> None:
    with smtp_receiver() as smtp:
        relay = {"smtp_relay": smtp.relay, "smtp_from": "kaic@center.example.org"}
        with jobs_center(tmp_path, **relay, **FAST) as center:
            job = submit(center, "true", {"email": "alice@lab.example.org"}, name="eval")
            wait_for(lambda: smtp.mails, what="the mail")
            sender, to, mail = smtp.mails[0]
            assert (sender, to) == ("kaic@center.example.org", ["alice@lab.example.org"])
            assert mail["Subject"] == f"kaic job {job['id']} (eval) ended COMPLETED"
            payload = mail.get_payload(decode=True)
            assert isinstance(payload, bytes)
            text = payload.decode()
            assert f"Job {job['id']} (eval) ended COMPLETED." in text
            assert "exit code:  0" in text and "GPU-hours:  0.0000" in text
            assert "elapsed:    0:00:0" in text
            wait_for(
                lambda: event_with(center, job["id"], "notified: mail to alice@lab.example.org"),
                what="the event",
            )


def test_on_fail_only_notifies_failures(tmp_path: Path) -> None:
    with webhook_receiver() as hook, jobs_center(tmp_path, **FAST) as center:
        fine = submit(center, "true", {"on": ["fail"], "webhook": hook.url})
        bad = submit(center, "exit 2", {"on": ["fail"], "webhook": hook.url})
        wait_for(lambda: hook.received, what="the webhook")
        center.wait_done(fine["id"])
        assert [r.body["job_id"] for r in hook.received] == [bad["id"]]
        assert center.app.state.notifier.outbox.count() == 0


def test_a_failing_target_delays_no_one_and_its_failures_are_events(tmp_path: Path) -> None:
    dead = f"http://127.0.0.1:{free_port()}/hook"  # nothing listens: connection refused
    with (
        hung_target() as hung,
        webhook_receiver() as hook,
        jobs_center(tmp_path, **{**FAST, "notify_timeout": 60.0}) as center,
    ):
        stuck = submit(center, "true", {"webhook": hung})
        refused = submit(center, "true", {"webhook": dead})
        center.wait_done(stuck["id"])
        # While the hung target holds its try, another job runs and its end is delivered.
        later = submit(center, "true", {"webhook": hook.url})
        assert center.wait_done(later["id"])["state"] == "COMPLETED"
        wait_for(lambda: hook.received, what="the live target's webhook")
        assert not event_with(center, stuck["id"], "webhook")  # still waiting on its answer
        # The refused one is retried with backoff, then given up; each failure an event.
        gave_up = wait_for(
            lambda: event_with(center, refused["id"], "gave up"), what="giving up", timeout=30
        )
        assert gave_up.endswith("failed: connection refused; gave up after 3 tries")
        failures = [m for m in messages(center, refused["id"]) if "failed" in m]
        assert failures[:2] == [
            f"webhook to {dead.rsplit('/', 1)[0]} failed: connection refused; retrying in 0.2 s",
            f"webhook to {dead.rsplit('/', 1)[0]} failed: connection refused; retrying in 0.4 s",
        ]


def test_the_outbox_survives_a_restart(tmp_path: Path) -> None:
    state_dir = tmp_path / "state"
    prepare_state(state_dir)
    port = free_port()
    settings = make_settings(
        state_dir, notify_backoff=2.0, notify_tries=5, notify_allow=["127.0.0.1"]
    )
    with open_center(settings) as center:
        job = submit(center, "true", {"webhook": f"http://127.0.0.1:{port}/hook"})
        wait_for(lambda: event_with(center, job["id"], "retrying in 2 s"), what="a failure")
    # The target comes up while no center runs; the next center sends what is pending.
    with webhook_receiver(port) as hook, open_center(settings) as center:
        wait_for(lambda: hook.received, what="the webhook after the restart")
        assert hook.received[0].body["job_id"] == job["id"]
        wait_for(lambda: event_with(center, job["id"], "notified"), what="the event")
        assert center.app.state.notifier.outbox.count() == 0


def test_redirects_are_not_followed(tmp_path: Path) -> None:
    with webhook_receiver() as hook, jobs_center(tmp_path, **FAST) as center:
        hook.status = 302
        job = submit(center, "true", {"webhook": f"{hook.url}/hook"})
        wait_for(lambda: event_with(center, job["id"], "gave up"), what="giving up")
        assert {r.path for r in hook.received} == {"/hook"}  # never /elsewhere
        gave_up = event_with(center, job["id"], "gave up")
        assert gave_up is not None and "answered 302 (redirects are not followed)" in gave_up


def test_what_a_center_will_not_send_is_refused_at_submit(tmp_path: Path) -> None:
    with jobs_center(tmp_path, notify_allow=["hooks.example.org", "10.1.0.0/16"]) as center:

        def refusal(notify: dict[str, Any], **spec: Any) -> str:
            response = center.post("/v1/jobs", json={"run": "true", "notify": notify, **spec})
            assert response.status_code == 422, response.text
            return str(response.json()["error"]["message"])

        assert "no SMTP relay is configured" in refusal({"email": "a@b.example.org"})
        assert "only to its allowed hosts, not 'evil.example.com'" in refusal(
            {"webhook": "https://evil.example.com/x"}
        )
        assert "http:// and https://" in refusal({"webhook": "file:///etc/passwd"})
        assert "http:// and https://" in refusal({"webhook": "gopher://hooks.example.org/"})
        assert "needs a webhook or an email" in refusal({"on": ["end"]})
        assert "array's tasks are not notified" in refusal(
            {"webhook": "https://hooks.example.org/x"}, array="0-1"
        )
        for allowed in ("https://a.hooks.example.org/x", "http://10.1.2.3:8080/x"):
            accepted = center.post("/v1/jobs", json={"run": "true", "notify": {"webhook": allowed}})
            assert accepted.status_code == 201, accepted.text
