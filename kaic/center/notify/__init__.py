"""Job-end notifications (`notify:` of a job): a JSON webhook and/or a short mail through
the center's SMTP relay, sent by a background worker, never by the scheduler.

- `targets.py`: what a center allows (`--notify-allow`, `--smtp-relay`), checked at submit
  and again at each send;
- `message.py`: what is sent (state, exit code, elapsed, GPU-hours), as JSON and as text;
- `outbox.py`: the notifications waiting to be sent, in the database (a restart loses none);
- `sender.py`: one try of one notification (bounded timeouts, no redirects followed, none
  of the center's credentials);
- `worker.py`: `Notifier`, which queues a notification in the transaction that records a
  job's end (`Ledger.on_job_end`) and sends it from a small pool of threads, retrying with
  a doubling backoff a bounded number of times; every failure is one of the job's events.
"""
