"""`Notifier`: queues a job's end notifications as the end is recorded and sends them in the
background, so that nothing the scheduler does ever waits on a webhook or a relay.

`job_ended` is a ledger listener (`Ledger.on_job_end`): inside the transaction that records
the end it reads the job back and adds one outbox row per channel — quick, and committed
with the end or not at all. A dispatcher thread hands due rows to a small pool of senders, so
that a target that hangs until its timeout holds up one sender, not the others; a failed try
is tried again after a doubling backoff, at most `notify_tries` times, and each failure and
the giving up are events of the job ("webhook to https://… failed: connection refused;
retrying in 30 s"). The outbox is in the database: a center started again sends what the
last one had not.
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from kaic.center.jobs.store import JobStore
from kaic.center.notify.message import payload
from kaic.center.notify.outbox import Outbox, Pending
from kaic.center.notify.sender import SendFailed, send_mail, send_webhook
from kaic.center.notify.targets import (
    AllowList,
    parse_relay,
    shown,
    webhook_refusal,
)
from kaic.center.settings import CenterSettings

logger = logging.getLogger("kaic.center.notify")

#: notifications sent at once (each waits at most `notify_timeout` per step)
SENDERS = 4
#: how a stored submission without `notify` says so (`JobSubmit.model_dump_json`)
_NO_NOTIFY = '"notify":null'
#: the longest the dispatcher sleeps without being woken (it also wakes when one is due)
IDLE_WAKE = 5.0


class Notifier:
    """The outbox's writer (on job ends) and sender (a thread and a pool); `start`/`stop`
    bracket the app's life."""

    def __init__(self, jobs: JobStore, settings: CenterSettings) -> None:
        self.jobs = jobs
        self.settings = settings
        self.outbox = Outbox(jobs.db)
        self.allowed = AllowList(settings.notify_allow)
        self.relay = parse_relay(settings.smtp_relay) if settings.smtp_relay else None
        self._cond = threading.Condition()
        self._woken = False
        self._stopping = False
        self._sending: set[int] = set()
        self._thread: threading.Thread | None = None
        self._pool: ThreadPoolExecutor | None = None

    # -- the ledger's side ---------------------------------------------------------------

    def job_ended(self, job_id: str) -> None:
        """A job's end is being recorded: queue its notifications (in that transaction)."""
        row = self.jobs.get(job_id)
        if row is None or row.kind == "array" or _NO_NOTIFY in row.spec_json:
            return  # most jobs: known without parsing their submission
        notify = row.spec.notify
        if notify is None or not notify.wants(row.state.value):
            return
        body = payload(row)
        now = time.time()
        if notify.webhook is not None:
            self.outbox.add(job_id, "webhook", notify.webhook, body, now)
        if notify.email is not None:
            self.outbox.add(job_id, "email", notify.email, body, now)
        self.wake()

    # -- life cycle ----------------------------------------------------------------------

    def start(self) -> None:
        self._stopping = False
        self._pool = ThreadPoolExecutor(SENDERS, thread_name_prefix="kaic-notify")
        self._thread = threading.Thread(target=self._run, name="kaic-notifier", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop dispatching. Tries in flight are not waited for (a hung target would hold
        the center's shutdown for its timeout) and record nothing: their rows stay in the
        outbox, like everything still due, for the next center to send (at least once)."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None

    def wake(self) -> None:
        with self._cond:
            self._woken = True
            self._cond.notify_all()

    def _run(self) -> None:
        while True:
            with self._cond:
                if self._stopping:
                    return
                self._woken = False
            try:
                self._dispatch()
                wait = self._until_due()
            except Exception:
                logger.exception("could not read the notification outbox")
                wait = IDLE_WAKE
            with self._cond:
                if not self._woken and not self._stopping:
                    self._cond.wait(timeout=wait)

    def _until_due(self) -> float:
        due = self.outbox.next_due()
        if due is None:
            return IDLE_WAKE
        return min(IDLE_WAKE, max(0.01, due - time.time()))

    def _dispatch(self) -> None:
        assert self._pool is not None
        with self._cond:
            sending = set(self._sending)
        free = SENDERS - len(sending)
        if free <= 0:
            return
        for item in self.outbox.due(time.time(), skip=sending, limit=free):
            with self._cond:
                self._sending.add(item.id)
            self._pool.submit(self._deliver, item)

    # -- one try -------------------------------------------------------------------------

    def _deliver(self, item: Pending) -> None:
        try:
            self._try(item)
        except Exception:
            logger.exception("job %s: notification %s failed unexpectedly", item.job_id, item.id)
        finally:
            with self._cond:
                self._sending.discard(item.id)
            self.wake()

    def _try(self, item: Pending) -> None:
        what = self._what(item)
        try:
            answer = self._send(item)
        except SendFailed as exc:
            if not self._stopping:
                self._failed(item, what, str(exc))
            return
        if self._stopping:  # the database may be closed: the next center sends it again
            return
        with self.jobs.transaction():
            self.outbox.remove(item.id)
            self.jobs.events.add(item.job_id, f"notified: {what}: {answer}")

    def _what(self, item: Pending) -> str:
        if item.channel == "webhook":
            return f"webhook to {shown(item.target)}"
        return f"mail to {item.target}"

    def _send(self, item: Pending) -> str:
        timeout = self.settings.notify_timeout
        if item.channel == "webhook":
            refusal = webhook_refusal(item.target, self.allowed)  # the settings may be new
            if refusal:
                raise SendFailed(refusal)
            return send_webhook(item.target, item.payload, timeout)
        if self.relay is None or not self.settings.smtp_from:
            raise SendFailed("this center has no SMTP relay configured now")
        return send_mail(self.relay, self.settings.smtp_from, item.target, item.payload, timeout)

    def _failed(self, item: Pending, what: str, why: str) -> None:
        tries = item.tries + 1
        with self.jobs.transaction():
            if tries >= self.settings.notify_tries:
                self.outbox.remove(item.id)
                self.jobs.events.add(
                    item.job_id, f"{what} failed: {why}; gave up after {tries} tries"
                )
                return
            delay = self.settings.notify_backoff * 2 ** (tries - 1)
            self.outbox.retry(item.id, tries, time.time() + delay)
            self.jobs.events.add(item.job_id, f"{what} failed: {why}; retrying in {delay:g} s")
